"""The benchmarks' and reliability tests' journeys are examples/journeys/cart-recovery.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import engine_bench, latency_bench
from engine.core.loader import parse_journey
from tests.support import journeys
from tests.support.journeys import example


def test_the_bench_journey_is_the_example_with_its_wait_and_without_the_order_wait() -> None:
    original = example("cart-recovery")
    journey = parse_journey(engine_bench.journey("1s"), "<bench>")

    assert journey.id == "bench-cart"
    assert journey.start == "wait"
    assert journey.activities["wait"].duration.total_seconds() == 1  # type: ignore[union-attr]
    assert journey.entry.condition == original["entry"]["condition"]
    for send in ("send-es", "send-en"):
        sent = journey.activities[send]
        assert sent.template == original["activities"][send]["template"]  # type: ignore[union-attr]
        assert sent.next == "done"  # type: ignore[union-attr]
    assert journey.quiet_hours is None
    assert "wait-order" not in journey.activities


def test_the_latency_journey_sends_at_once() -> None:
    journey = parse_journey(latency_bench.JOURNEY, "<bench>")

    assert journey.id == "bench-now"
    assert journey.start == "pick-language"
    assert not any(a.type == "wait" for a in journey.activities.values())


def test_a_change_to_the_example_reaches_its_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = example("cart-recovery")
    changed["activities"]["send-es"]["template"] = "cart_reminder_v2"
    (tmp_path / "cart-recovery.yaml").write_text(yaml.safe_dump(changed))
    monkeypatch.setattr(journeys, "EXAMPLES", tmp_path)

    variant = yaml.safe_load(journeys.cart_recovery("x", wait="2s"))

    assert variant["activities"]["send-es"]["template"] == "cart_reminder_v2"
