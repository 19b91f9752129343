"""Profile events through the real broker: orjson values, profile-id keys, stable partitions."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from engine.streaming.topics import TopicSpec, ensure_topics
from schemas import ProfileEvent
from schemas.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4


def event(i: int, profile: str) -> ProfileEvent:
    return ProfileEvent.model_validate(
        {
            "event_id": f"evt-{i}",
            "type": "cart.abandoned",
            "profile_id": profile,
            "occurred_at": "2026-11-24T10:00:00Z",
            "data": {"cart_total": 10 + i},
        }
    )


async def test_profile_events_round_trip_and_keep_their_partition(
    kafka_bootstrap: str, unique: str
) -> None:
    topic = f"profile-events-{unique}"
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    created = await ensure_topics(settings, [TopicSpec(topic, PARTITIONS)])
    assert created == [topic]
    assert await ensure_topics(settings, [TopicSpec(topic, PARTITIONS)]) == []  # idempotent

    profiles = [f"p-{n}" for n in range(20)]
    sent = [event(i, profiles[i % len(profiles)]) for i in range(200)]
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, orjson.dumps(e.model_dump(mode="json")), key=e.profile_id.encode()
            )
            for e in sent
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()

    partition_of = defaultdict(set)
    for e, md in zip(sent, metadata, strict=True):
        partition_of[e.profile_id].add(md.partition)
    # One profile, one partition, and the same one Java clients and faust compute.
    for profile, parts in partition_of.items():
        assert parts == {(murmur2(profile.encode()) & 0x7FFFFFFF) % PARTITIONS}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[int, str, ProfileEvent]] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        assert r.key is not None and r.value is not None
                        received.append(
                            (
                                tp.partition,
                                r.key.decode(),
                                ProfileEvent.model_validate_json(r.value),
                            )
                        )
    finally:
        await consumer.stop()

    assert sorted(e.event_id for _, _, e in received) == sorted(e.event_id for e in sent)
    for partition, key, e in received:
        assert key == e.profile_id
        assert partition in partition_of[e.profile_id]
    # Per profile, events arrive in the order they were produced.
    by_profile: dict[str, list[int]] = defaultdict(list)
    for _, _, e in received:
        by_profile[e.profile_id].append(int(e.event_id.split("-")[1]))
    assert all(ids == sorted(ids) for ids in by_profile.values())
