"""`journeyctl simulate --from-topic` on the real broker: a bounded replay from a time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.streaming.topics import ensure_topics
from tests.support.builders import profile_event
from tests.support.kafka import Stack, produce
from tests.unit import ANA

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]


def simulate(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPIC_")}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "simulate", *args],
        env={**env, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def carts(prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            f"{prefix}-{i}",
            profile_event(
                f"{prefix}-{i}-cart",
                "cart.abandoned",
                f"{prefix}-{i}",
                attributes=ANA,
                data={"cart_total": 30 + i},
                occurred_at="2026-03-02T10:00:00Z",
            ),
        )
        for i in range(count)
    ]


async def test_simulate_reads_the_topic_from_since_up_to_the_limit(
    kafka_bootstrap: str, unique: str
) -> None:
    stack = Stack(kafka_bootstrap, unique)
    await ensure_topics(stack.settings)
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    await produce(kafka_bootstrap, topic, carts("old", 3))
    # `--since` has whole seconds: start the second after the old records, then write more.
    since = int(time.time()) + 1
    await asyncio.sleep(since - time.time() + 0.05)
    await produce(kafka_bootstrap, topic, carts("new", 4))
    moment = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")
    journey = "examples/journeys/cart-recovery.yaml"

    done = simulate(stack, journey, "--from-topic", "--since", moment, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert sorted(p["profile_id"] for p in report["profiles"]) == [f"new-{i}" for i in range(4)]
    assert report["summary"]["messages"] == {"send-es": 4}
    assert report["summary"]["exits"] == {"completed": 4}
    message = report["profiles"][0]["messages"][0]
    assert message["at"] == "2026-03-02T11:00:00Z" and message["body"][0] == "Ana"

    limited = simulate(stack, journey, "--from-topic", "--limit", "2", "--format", "json")
    assert limited.returncode == 0, limited.stderr
    assert orjson.loads(limited.stdout)["events"] == 2

    table = simulate(stack, journey, "--from-topic", "--since", moment, "--compare", journey)
    assert table.returncode == 0, table.stderr
    assert "0 profile(s) would be treated differently" in table.stdout
    assert "+34600111222" not in table.stdout  # phones are masked


def test_simulate_without_a_broker_exits_2(unique: str) -> None:
    stack = Stack("127.0.0.1:1", unique)
    done = simulate(stack, "examples/journeys/welcome.yaml", "--from-topic")
    assert done.returncode == 2
    assert "cannot reach Kafka" in done.stderr
