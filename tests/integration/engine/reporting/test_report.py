"""`journeyctl report` on the real broker: known records in, exact figures out, HTML in Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from engine.core.loader import parse_journey
from engine.streaming.registry import next_deployment, publish_deployments
from engine.streaming.topics import TopicSpec, ensure_topics
from tests.support.kafka import ROOT, Stack

pytestmark = pytest.mark.integration

ARTIFACTS = ROOT / "artifacts"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PROMO = """
id: promo
name: Spring promo
entry: {event: promo.eligible}
start: ab
activities:
  ab:
    type: split
    paths:
      - {name: discount, weight: 50, next: send-discount}
      - {name: shipping, weight: 50, next: send-shipping}
  send-discount: {type: whatsapp, template: promo_discount, language: es, next: wait-order}
  send-shipping: {type: whatsapp, template: promo_shipping, language: es, next: wait-order}
  wait-order: {type: wait_for_event, event: order.placed, timeout: 2d, next: done, on_timeout: done}
  done: {type: end}
"""


def delivery(
    journey: str,
    version: int,
    activity: str,
    profile: str,
    status: str,
    seconds: float,
    **error: Any,
) -> tuple[str, bytes]:
    record = {
        "message_id": f"{journey}:{version}:{profile}:{activity}:1",
        "wamid": None,
        "journey_id": journey,
        "journey_version": version,
        "activity_id": activity,
        "profile_id": profile,
        "channel": "whatsapp",
        "template": None,
        "language": "es",
        "status": status,
        "error": {"title": status, "retriable": False, **error} if error else None,
        "occurred_at": (T0 + timedelta(seconds=seconds)).isoformat(),
    }
    return profile, orjson.dumps(record)


def promo(profile: str, status: str, seconds: float, **error: Any) -> tuple[str, bytes]:
    activity = "send-discount" if profile in ("p-1", "p-2", "p-3", "p-4") else "send-shipping"
    return delivery("promo", 1, activity, profile, status, seconds, **error)


def step(
    kind: str, profile: str, activity: str, *, journey: str = "promo", **fields: Any
) -> tuple[str, bytes]:
    record = {
        "kind": kind,
        "journey_id": journey,
        "journey_version": 1,
        "instance_id": f"{journey}:1:{profile}:1",
        "profile_id": profile,
        "activity_id": activity,
        "occurred_at": T0.isoformat(),
        **fields,
    }
    return profile, orjson.dumps(record)


def activity(profile: str, activity_id: str, type_: str, outcome: str) -> tuple[str, bytes]:
    return step("activity", profile, activity_id, activity_type=type_, outcome=outcome)


PROFILES = [f"p-{n}" for n in range(1, 7)]
DELIVERIES = [
    promo("p-1", "accepted", 0),
    promo("p-1", "sent", 1),
    promo("p-1", "delivered", 3),
    promo("p-1", "read", 20),
    promo("p-2", "sent", 2),  # Meta's webhook beat the connector's `accepted`
    promo("p-2", "accepted", 0),
    promo("p-2", "delivered", 5),
    promo("p-2", "delivered", 5),  # repeated after a crash
    promo("p-2", "read", 65),
    promo("p-3", "accepted", 0),
    promo("p-3", "failed", 1, code=131026),
    promo("p-4", "skipped", 0, reason="no_consent"),
    promo("p-5", "accepted", 0),
    promo("p-5", "sent", 1),
    promo("p-5", "delivered", 2),
    promo("p-6", "accepted", 0),
    promo("p-6", "sent", 1),
    promo("p-6", "delivered", 4),
    promo("p-6", "read", 10),
    delivery("legacy", 2, "send", "p-7", "accepted", 0),
    delivery("legacy", 2, "send", "p-7", "sent", 1),
    delivery("legacy", 2, "send", "p-7", "delivered", 2),
    delivery("legacy", 2, "send", "p-7", "read", 8),
    delivery("legacy", 2, "send", "p-8", "accepted", 0),
    delivery("legacy", 2, "send", "p-8", "failed", 1, code=130429),
    delivery("whatsapp-keywords", 0, "stop", "p-9", "accepted", 0),
    delivery("whatsapp-keywords", 0, "stop", "p-9", "sent", 1),
    delivery("whatsapp-keywords", 0, "stop", "p-9", "delivered", 2),
]
STEPS = [
    *(step("entered", p, "ab") for p in PROFILES),
    step("entered", "p-1", "ab"),  # repeated after a crash
    *(activity(p, "ab", "split", "discount") for p in PROFILES[:4]),
    *(activity(p, "ab", "split", "shipping") for p in PROFILES[4:]),
    *(activity(p, "send-discount", "whatsapp", "sent") for p in PROFILES[:3]),
    activity("p-4", "send-discount", "whatsapp", "no_consent"),
    *(activity(p, "send-shipping", "whatsapp", "sent") for p in PROFILES[4:]),
    *(activity(p, "wait-order", "wait_for_event", "event") for p in ("p-1", "p-6")),
    *(activity(p, "wait-order", "wait_for_event", "timeout") for p in ("p-2", "p-3", "p-5")),
    *(activity(p, "done", "end", "completed") for p in ("p-1", "p-2", "p-3", "p-5", "p-6")),
    *(step("exited", p, "done", reason="completed") for p in ("p-1", "p-2", "p-3", "p-5", "p-6")),
    step("exited", "p-4", "wait-order", reason="exit_event"),
]
# Written half an hour earlier (Kafka timestamps), to check --since and --until.
OLD_DELIVERIES = [
    delivery("old-news", 1, "send", "p-10", "accepted", 0),
    delivery("old-news", 1, "send", "p-10", "sent", 1),
]
OLD_STEPS = [step("entered", "p-10", "send", journey="old-news")]


async def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], ms: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode(), timestamp_ms=ms)
    finally:
        await producer.stop()


@pytest_asyncio.fixture(scope="module")
async def stack(kafka_bootstrap: str) -> AsyncIterator[Stack]:
    """Topics of this module holding the records above, and promo v1 deployed."""
    stack = Stack(kafka_bootstrap, uuid.uuid4().hex[:10])
    settings = stack.settings
    await ensure_topics(
        settings,
        [
            TopicSpec(settings.topic_delivery_events, stack.partitions),
            TopicSpec(settings.topic_journey_steps, stack.partitions),
            TopicSpec(settings.topic_journey_definitions, 1, compacted=True),
        ],
    )
    deployment = next_deployment(parse_journey(PROMO), None, source="test")
    assert deployment is not None
    await publish_deployments(settings, [deployment])
    now_ms = int(time.time() * 1000)
    old_ms, new_ms = now_ms - 30 * 60_000, now_ms - 60_000
    await _produce(kafka_bootstrap, settings.topic_delivery_events, OLD_DELIVERIES, old_ms)
    await _produce(kafka_bootstrap, settings.topic_journey_steps, OLD_STEPS, old_ms)
    await _produce(kafka_bootstrap, settings.topic_delivery_events, DELIVERIES, new_ms)
    await _produce(kafka_bootstrap, settings.topic_journey_steps, STEPS, new_ms)
    yield stack


def journeyctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "report", *args],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def report_json(stack: Stack, *args: str) -> dict[str, Any]:
    out = journeyctl(stack, "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = orjson.loads(out.stdout)
    return data


def by_key(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{j['journey_id']}@{j['version']}": j for j in data["journeys"]}


def activities(journey: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["activity_id"]: a for a in journey["activities"]}


def test_json_report_has_the_exact_figures(stack: Stack) -> None:
    data = report_json(stack, "--from-beginning")
    journeys = by_key(data)
    assert sorted(journeys) == ["legacy@2", "old-news@1", "promo@1", "whatsapp-keywords@0"]
    assert data["records"] == {
        "delivery_events": 30,
        "step_events": 36,
        "duplicate_delivery_events": 1,
        "duplicate_step_events": 1,
        "unreadable": 0,
    }
    promo = journeys["promo@1"]
    assert promo["funnel"] == {"entered": 6, "sent": 4, "delivered": 4, "read": 3, "converted": 2}
    assert (promo["completed"], promo["exited"]) == (5, {"completed": 5, "exit_event": 1})
    steps = activities(promo)
    assert steps["ab"]["outcomes"] == {"discount": 4, "shipping": 2}
    assert (steps["wait-order"]["converted"], steps["wait-order"]["timed_out"]) == (2, 3)
    discount = steps["send-discount"]
    assert [discount[k] for k in ("messages", "accepted", "sent", "delivered", "read")] == [
        4,
        3,
        2,
        2,
        2,
    ]
    assert (discount["failed"], discount["skipped"]) == ({"131026": 1}, {"no_consent": 1})
    assert discount["outcomes"] == {"no_consent": 1, "sent": 3}
    assert discount["time_to_deliver"] == {"count": 2, "median_seconds": 4.0, "p90_seconds": 4.8}
    assert discount["time_to_read"] == {"count": 2, "median_seconds": 42.5, "p90_seconds": 60.5}
    shipping = steps["send-shipping"]
    assert shipping["time_to_deliver"] == {"count": 2, "median_seconds": 3.0, "p90_seconds": 3.8}
    assert shipping["time_to_read"] == {"count": 1, "median_seconds": 10.0, "p90_seconds": 10.0}
    legacy = activities(journeys["legacy@2"])["send"]
    assert (legacy["sent"], legacy["read"], legacy["failed"]) == (1, 1, {"130429": 1})
    keywords = journeys["whatsapp-keywords@0"]["funnel"]
    assert keywords == {"entered": 0, "sent": 1, "delivered": 1, "read": 0, "converted": 0}


def test_since_and_until_select_records_by_their_kafka_time(stack: Stack) -> None:
    recent = report_json(stack, "--since", "10m")
    assert sorted(by_key(recent)) == ["legacy@2", "promo@1", "whatsapp-keywords@0"]
    assert recent["records"]["delivery_events"] == 28
    assert by_key(recent)["promo@1"]["funnel"]["entered"] == 6
    older = report_json(stack, "--until", "10m")
    assert list(by_key(older)) == ["old-news@1"]
    assert by_key(older)["old-news@1"]["funnel"] == {
        "entered": 1,
        "sent": 1,
        "delivered": 0,
        "read": 0,
        "converted": 0,
    }
    only_promo = report_json(stack, "--journey", "promo")
    assert list(by_key(only_promo)) == ["promo@1"]


def test_table_report(stack: Stack) -> None:
    out = journeyctl(stack)
    assert out.returncode == 0, out.stderr
    assert "promo v1" in out.stdout
    assert "entered 6 → sent 4 → delivered 4 → read 3 → converted 2" in out.stdout
    row = next(line for line in out.stdout.splitlines() if "send-discount" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == [
        "send-discount",
        "whatsapp",
        "4",
        "no_consent: 1, sent: 3",
        "2",
        "2",
        "2",
        "131026: 1",
        "no_consent: 1",
        "4.0s",
        "4.8s",
        "42.5s",
        "60.5s",
    ]


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def _section(dom: str, section_id: str) -> str:
    start = dom.index(f'<section class="journey" id="{section_id}"')
    return dom[start : dom.index("</section>", start)]


def _funnel(section: str) -> dict[str, int]:
    pairs = re.findall(r'data-stage="(\w+)" data-value="(\d+)"', section)
    return {stage: int(value) for stage, value in pairs}


def _node_counts(section: str) -> dict[str, str]:
    nodes = re.findall(
        r'<g class="node" data-activity="([\w-]+)".*?(?:class="count"[^>]*>([\d,]+)</tspan>|</g>)',
        section,
    )
    return {activity: count for activity, count in nodes}


def test_html_report_renders_in_chromium(stack: Stack, tmp_path: Path) -> None:
    # Never skipped: `make test` installs Debian's chromium (deploy/browser/install).
    assert shutil.which("chromium"), "chromium is missing: run deploy/browser/install"
    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "report.html"
    out = journeyctl(stack, "--format", "html", "--output", str(page))
    assert out.returncode == 0, out.stderr
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html

    dumped = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    promo = _section(dumped.stdout, "promo-v1")
    assert "Spring promo (promo) · v1" in promo
    assert _funnel(promo) == {"entered": 6, "sent": 4, "delivered": 4, "read": 3, "converted": 2}
    assert _node_counts(promo) == {
        "entry": "6",
        "ab": "6",
        "send-discount": "4",
        "send-shipping": "2",
        "wait-order": "5",
        "done": "5",
    }
    legacy = _section(dumped.stdout, "legacy-v2")
    assert _funnel(legacy) == {"entered": 0, "sent": 1, "delivered": 1, "read": 1, "converted": 0}
    assert 'class="node"' not in legacy and "funnel only" in legacy

    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = _chromium(
        f"--screenshot={shot}",
        "--window-size=1300,2000",
        "--hide-scrollbars",
        page.as_uri(),
        profile=tmp_path / "shot",
    )
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000


def test_unreachable_kafka_is_exit_code_2(stack: Stack) -> None:
    nowhere = Stack("127.0.0.1:1", stack.unique)
    out = journeyctl(nowhere)
    assert out.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in out.stderr
