"""A profile's recent records on journey-steps, delivery-events and dead-letter, read on request.

Every one of these topics is keyed by profile id with Kafka's murmur2 partitioner, so a
profile's records sit on one partition per topic: the read seeks that partition to `since`
and stops at the end offset it found on starting, after `max_scanned` records or `timeout`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.kafka import reader
from engine.streaming.clients import topic_partitions
from schemas.partitioning import partition_of
from schemas.settings import Settings

MAX_SCANNED = 500_000  # records read per topic at most
KEPT = 200  # the latest records of the profile kept per topic


@dataclass(slots=True)
class ProfileRecords:
    """The profile's records per topic, oldest first; `truncated` names topics not read whole."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)


def partition_for(profile_id: str, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives a profile's records."""
    return partition_of(profile_id.encode(), partitions)


async def read_profile_records(
    settings: Settings,
    profile_id: str,
    since: datetime,
    *,
    timeout: float = 10.0,
    max_scanned: int = MAX_SCANNED,
) -> ProfileRecords:
    """Read the profile's records timestamped at or after `since` (bounded, see the module)."""
    topics = {
        settings.topic_journey_steps: "steps",
        settings.topic_delivery_events: "deliveries",
        settings.topic_dead_letter: "dead_letters",
    }
    found = ProfileRecords()
    # No group, no commits; records deleted by retention meanwhile: go on from the first.
    consumer = reader(settings, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            for topic, slot in topics.items():
                kept, whole = await _read_one(consumer, topic, profile_id, since, max_scanned)
                getattr(found, slot).extend(kept)
                if not whole:
                    found.truncated.append(topic)
    except TimeoutError:
        found.truncated.extend(t for t in topics if t not in found.truncated)
    finally:
        await consumer.stop()
    return found


async def _read_one(
    consumer: AIOKafkaConsumer, topic: str, profile_id: str, since: datetime, max_scanned: int
) -> tuple[list[dict[str, Any]], bool]:
    """The profile's records of one topic, and whether the range was read whole."""
    partitions = await topic_partitions(consumer, topic)
    if not partitions:
        return [], True
    tp = TopicPartition(topic, partition_for(profile_id, len(partitions)))
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    at = (await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)}))[tp]
    start = end if at is None else at.offset
    start = max(start, end - max_scanned)
    consumer.seek(tp, start)
    key = profile_id.encode()
    kept: deque[dict[str, Any]] = deque(maxlen=KEPT)
    position = start
    while position < end:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
        for record in batch.get(tp, ()):
            if record.offset >= end:
                break
            if record.key == key:
                try:
                    value = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    kept.append(value)
        position = await consumer.position(tp)
    whole = at is None or at.offset >= end - max_scanned
    return list(kept), whole
