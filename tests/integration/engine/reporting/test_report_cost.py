"""`journeyctl report` counts billable messages by category per journey, and prices them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from engine.streaming.topics import TopicSpec, ensure_topics
from tests.integration.engine.reporting.test_report import T0, _produce
from tests.support.kafka import ROOT, Stack

pytestmark = pytest.mark.integration

PRICES = """\
currency: EUR
prices:
  marketing: {"34": 0.0509, "*": 0.06}
  utility: {"34": 0.0166}
"""


def delivered(
    journey: str, profile: str, status: str, category: str, billable: bool, country: str
) -> tuple[str, bytes]:
    record: dict[str, Any] = {
        "message_id": f"{journey}:1:{profile}:send:1",
        "wamid": f"wamid.{profile}",
        "journey_id": journey,
        "journey_version": 1,
        "activity_id": "send",
        "profile_id": profile,
        "channel": "whatsapp",
        "status": status,
        "occurred_at": T0.isoformat(),
        "pricing": {
            "billable": billable,
            "pricing_model": "PMP",
            "category": category,
            "type": "regular" if billable else "free_customer_service",
        },
        "country_code": country,
    }
    return profile, orjson.dumps(record)


DELIVERIES = [
    delivered("promo", "p-1", "sent", "marketing", True, "34"),
    delivered("promo", "p-1", "delivered", "marketing", True, "34"),  # the same message
    delivered("promo", "p-2", "sent", "marketing", True, "44"),  # priced by "*"
    delivered("promo", "p-3", "sent", "service", False, "34"),
    delivered("orders", "p-4", "sent", "utility", True, "34"),
    delivered("orders", "p-5", "sent", "utility", True, "1"),  # no price for +1
]


@pytest_asyncio.fixture(scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[Stack]:
    stack = Stack(kafka_bootstrap, uuid.uuid4().hex[:10])
    settings = stack.settings
    await ensure_topics(
        settings,
        [
            TopicSpec(settings.topic_delivery_events, stack.partitions),
            TopicSpec(settings.topic_journey_steps, stack.partitions),
        ],
    )
    ms = int(time.time() * 1000)
    await _produce(kafka_bootstrap, settings.topic_delivery_events, DELIVERIES, ms)
    yield stack


def report(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", "--from-beginning", *args],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_billable_messages_by_category_and_their_cost(stack: Stack, tmp_path: Path) -> None:
    plain = report(stack, "--format", "json")
    assert plain.returncode == 0, plain.stderr
    billing = orjson.loads(plain.stdout)["billing"]
    assert billing == {
        "orders": {"billable": {"utility": 2}, "free": {}},
        "promo": {"billable": {"marketing": 2}, "free": {"service": 1}},
    }
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    priced = report(stack, "--format", "json", "--prices", str(prices))
    assert priced.returncode == 0, priced.stderr
    billing = orjson.loads(priced.stdout)["billing"]
    assert billing["promo"]["cost"] == {"marketing": "0.1109"}
    assert billing["orders"]["cost"] == {"utility": "0.0166"}
    assert billing["orders"]["unpriced"] == {"utility": 1}
    assert billing["promo"]["currency"] == "EUR"

    table = report(stack, "--prices", str(prices))
    assert table.returncode == 0, table.stderr
    assert "Billable messages and cost (EUR)" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "marketing" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == [
        "promo",
        "marketing",
        "2",
        "0",
        "0.1109",
        "0",
    ]

    prices.write_text("prices: {marketing: {'+34': 1}}\n")
    bad = report(stack, "--prices", str(prices))
    assert bad.returncode == 1 and "prices.marketing.+34" in bad.stderr
