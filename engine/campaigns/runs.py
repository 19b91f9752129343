"""The `campaign-runs` topic: follow it (every worker), read it to its end and publish to it
(the CLI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.campaigns.planning import RunRegistry, encode
from engine.streaming.clients import acknowledged_producer, assign_all, reader
from schemas.campaign import (
    CampaignRun,
)
from schemas.settings import Settings

log = structlog.get_logger(__name__)


async def _read_until_caught_up(
    consumer: AIOKafkaConsumer, apply: Callable[[bytes | None, bytes | None], None]
) -> None:
    tps = list(consumer.assignment())
    end = await consumer.end_offsets(tps)
    for tp, offset in end.items():
        while await consumer.position(tp) < offset:
            for records in (await consumer.getmany(timeout_ms=500, max_records=2000)).values():
                for record in records:
                    apply(record.key, record.value)


def _runs_consumer(settings: Settings) -> AIOKafkaConsumer:
    return reader(settings)


async def _assign_existing(
    consumer: AIOKafkaConsumer, topic: str, wait_seconds: float
) -> list[TopicPartition]:
    """Assign every partition of the topic once it exists (never creating it).

    Asking for one topic's metadata creates it where the broker auto-creates topics, with
    the broker's defaults: not compacted. Listing all topics creates nothing.
    """
    deadline = time.monotonic() + wait_seconds
    while topic not in await consumer.topics():
        if time.monotonic() >= deadline:
            return []
        await asyncio.sleep(0.5)
    return await assign_all(consumer, topic, wait_seconds=wait_seconds)


class RunsFollower:
    """Keeps a RunRegistry in step with `campaign-runs` (every partition, no group)."""

    def __init__(self, settings: Settings, registry: RunRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = _runs_consumer(self._settings)
        await consumer.start()
        try:
            topic = self._settings.topic_campaign_runs
            tps = await _assign_existing(consumer, topic, wait_seconds=60)
            if not tps:
                raise RuntimeError(f"topic {topic!r} does not exist; create the engine's topics")
            await consumer.seek_to_beginning(*tps)
            await _read_until_caught_up(consumer, self._registry.apply_record)
            self.ready.set()
            log.info("campaign runs loaded", topic=topic, runs=len(self._registry.runs))
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        self._registry.apply_record(record.key, record.value)
        finally:
            await consumer.stop()


async def read_runs(settings: Settings, timeout: float = 15.0) -> RunRegistry:
    """Read `campaign-runs` to its end (for the CLI)."""
    registry = RunRegistry()
    consumer = _runs_consumer(settings)
    await consumer.start()
    try:
        tps = await _assign_existing(consumer, settings.topic_campaign_runs, wait_seconds=0)
        if tps:
            await consumer.seek_to_beginning(*tps)
            await asyncio.wait_for(_read_until_caught_up(consumer, registry.apply_record), timeout)
        return registry
    finally:
        await consumer.stop()


async def publish_run(
    settings: Settings, run: CampaignRun, ticks: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Publish a run record, then its profiles' ticks (keyed by profile: murmur2 partitions)."""
    producer = acknowledged_producer(settings)
    await producer.start()
    try:
        await (await producer.send(settings.topic_campaign_runs, encode(run), key=run.key.encode()))
        futures = [
            await producer.send(settings.topic_timers, value, key=pid.encode())
            for pid, value in ticks
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
