"""How fast `journeyctl report` folds delivery events: in memory (run) and from Kafka (run_kafka).

`python -m bench.report_bench [N] [--kafka HOST:PORT]`; N defaults to 1,000,000.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from engine.reporting.aggregate import ReportBuilder
from engine.reporting.reader import read_report
from schemas.messages import DeliveryEvent
from schemas.settings import Settings

_BASE = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
_PYDANTIC_SAMPLE = 50_000


_TEMPLATE = (
    '{"message_id":"%(journey)s:%(version)d:%(profile)s:%(activity)s:%(message)d",'
    '"wamid":"wamid.%(message)012d","journey_id":"%(journey)s","journey_version":%(version)d,'
    '"activity_id":"%(activity)s","profile_id":"%(profile)s","channel":"whatsapp",'
    '"template":"cart_reminder","language":"es","status":"%(status)s","error":%(error)s,'
    '"occurred_at":"%(at)s"}'
)


def _event(message: int, status: str, at: datetime, error: dict[str, Any] | None) -> bytes:
    # A format string, not orjson.dumps: orjson's over-allocated buffers would make a million
    # stored values take gigabytes, and the benchmark would measure the allocator.
    values = {
        "journey": f"journey-{message % 5}",
        "version": 1 + message % 2,
        "activity": f"send-{message % 3}",
        "profile": f"p-{message % 100_000}",
        "message": message,
        "status": status,
        "error": orjson.dumps(error).decode(),
        "at": at.isoformat().replace("+00:00", "Z"),
    }
    return (_TEMPLATE % values).encode()


def _lifecycle(message: int, rng: random.Random) -> list[bytes]:
    """One message's records: mostly accepted → sent → delivered → read, some failed or skipped."""
    start = _BASE + timedelta(seconds=message // 10)
    roll = rng.random()
    if roll < 0.03:
        reason = {"code": None, "title": "capped", "retriable": False, "reason": "frequency_capped"}
        return [_event(message, "skipped", start, reason)]
    accepted = _event(message, "accepted", start, None)
    if roll < 0.07:
        failure = {"code": 131026, "title": "undeliverable", "retriable": False}
        return [accepted, _event(message, "failed", start + timedelta(seconds=2), failure)]
    sent = _event(message, "sent", start + timedelta(seconds=1), None)
    # Meta's `sent` webhook can beat the connector's `accepted` record.
    records = [sent, accepted] if roll < 0.17 else [accepted, sent]
    delivered_at = start + timedelta(seconds=2 + rng.random() * 8)
    records.append(_event(message, "delivered", delivered_at, None))
    if rng.random() < 0.7:
        read_at = delivered_at + timedelta(seconds=rng.random() * 600)
        records.append(_event(message, "read", read_at, None))
    return records


def synthetic_deliveries(n: int, seed: int = 8) -> list[bytes]:
    """n delivery-events values, about 1% of them repeated records (as after a crash)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    message = 0
    while len(out) < n:
        out.extend(_lifecycle(message, rng))
        if rng.random() < 0.04:
            out.append(out[-1])
        message += 1
    return out[:n]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run(n: int) -> dict[str, Any]:
    """Time ReportBuilder over n synthetic delivery events, beside parse-only and pydantic."""
    events = synthetic_deliveries(n)
    started = time.perf_counter()
    for raw in events:
        orjson.loads(raw)
    parse_only = time.perf_counter() - started

    started = time.perf_counter()
    for raw in events[:_PYDANTIC_SAMPLE]:
        DeliveryEvent.model_validate_json(raw)
    pydantic_each = (time.perf_counter() - started) / min(n, _PYDANTIC_SAMPLE)

    builder = ReportBuilder()
    add = builder.add_delivery
    started = time.perf_counter()
    for raw in events:
        add(raw)
    report = builder.result()
    seconds = time.perf_counter() - started
    return {
        "benchmark": "report aggregation (in memory)",
        "events": n,
        "messages": sum(a.messages for j in report.journeys for a in j.activities),
        "seconds": round(seconds, 3),
        "events_per_second": round(n / seconds),
        "baseline_orjson_loads_only_seconds": round(parse_only, 3),
        "baseline_pydantic_seconds_extrapolated": round(pydantic_each * n, 3),
        "duplicates_recognised": report.records.duplicate_delivery_events,
        "peak_rss_mib": round(_peak_rss_mib()),
    }


async def _produce(bootstrap: str, topic: str, events: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 8, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i, raw in enumerate(events):
            pending.append(await producer.send(topic, raw, key=b"p-%d" % (i % 100_000)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _delete(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def run_kafka(bootstrap: str, n: int) -> dict[str, Any]:
    """Produce n synthetic delivery events to a fresh topic, then time read_report over it."""
    topic = f"bench-delivery-events-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_delivery_events=topic,
        topic_journey_steps=f"{topic}-no-steps",
    )
    produce_seconds = await _produce(bootstrap, topic, synthetic_deliveries(n))
    try:
        started = time.perf_counter()
        report = await read_report(settings, None, None, timeout=600)
        seconds = time.perf_counter() - started
    finally:
        await _delete(bootstrap, topic)
    assert report.records.delivery_events == n, report.records
    return {
        "benchmark": "journeyctl report from Kafka (8 partitions)",
        "events": n,
        "produce_seconds": round(produce_seconds, 1),
        "seconds": round(seconds, 3),
        "events_per_second": round(n / seconds),
        "seconds_per_million_extrapolated": round(seconds * 1_000_000 / n, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("events", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="also time the read from this broker")
    options = parser.parse_args()
    print(orjson.dumps(run(options.events), option=orjson.OPT_INDENT_2).decode())
    if options.kafka:
        result = asyncio.run(run_kafka(options.kafka, options.events))
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
