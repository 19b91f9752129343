"""Kafka clients built from Settings, and the compacted-topic follower: one of each for the
engine and the connectors.

They live here because connectors never import the engine (DESIGN.md principle 7) while the
engine may import connectors. Only aiokafka's public API is used; what needs its insides
stays in engine/streaming (behind the version guard) or reaches connectors through
StreamShell (connectors/whatsapp/shell.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.settings import Settings

Apply = Callable[[bytes | None, bytes | None], None]


def reader(settings: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer in no group that commits nothing: it reads the partitions it is assigned
    (or `topics`). `options` override aiokafka's other settings."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        **options,
        **settings.aiokafka_security(),
    )


def acknowledged_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer whose every record is acknowledged by all in-sync replicas, with no
    duplicates from its own retries; `options` override aiokafka's other settings."""
    config: dict[str, Any] = {"linger_ms": 5, "max_batch_size": 256 * 1024, **options}
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        **config,
        **settings.aiokafka_security(),
    )


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **settings.aiokafka_security()
    )


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partitions of `topic`, sorted; [] while it does not exist.

    All topics are described (a request naming one topic creates it where the broker
    auto-creates topics, with the broker's defaults: not compacted).
    """
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and not entry["error_code"]:
            return sorted(p["partition"] for p in entry["partitions"])
    return []


class CompactedFollower:
    """Reads a compacted topic from its beginning, every partition, no group, and hands each
    record's key and value to `apply`, in each partition's order.

    `caught_up` is set once every partition has been read to the end it had when reading
    began (at once for an empty topic); `follow` then keeps applying new records.
    `apply` must not raise for a bad record: it logs and skips it (keys masked).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        apply: Apply,
        *,
        poll_ms: int = 500,
        max_records: int = 2000,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.apply = apply
        self.poll_ms = poll_ms
        self.max_records = max_records
        self.caught_up = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}

    async def start(self, wait_seconds: float = 0.0) -> bool:
        """Assign the topic's partitions from their beginning once it exists (waiting up
        to `wait_seconds`, never creating it); False if it did not appear."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not (partitions := await partitions_of(self.settings, self.topic)):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.5)
        consumer = reader(self.settings)
        await consumer.start()
        self._consumer = consumer
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._ends = await consumer.end_offsets(tps)
        return True

    async def run(self, wait_seconds: float, on_caught_up: Callable[[], None]) -> None:
        """start (RuntimeError if the topic does not appear), catch up, call `on_caught_up`,
        follow until cancelled; the consumer is stopped on the way out."""
        try:
            if not await self.start(wait_seconds):
                raise RuntimeError(f"topic {self.topic!r} does not exist; create the topics first")
            await self.catch_up()
            on_caught_up()
            await self.follow()
        finally:
            await self.stop()

    async def catch_up(self) -> None:
        """Apply records until every partition reaches its end; sets `caught_up`."""
        while not await self._at_ends():
            await self._poll()
        self.caught_up.set()

    async def follow(self) -> None:
        """Catch up, then apply new records as they come, until cancelled."""
        await self.catch_up()
        while True:
            await self._poll()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _at_ends(self) -> bool:
        assert self._consumer is not None, "start() first"
        for tp, end in self._ends.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    async def _poll(self) -> None:
        assert self._consumer is not None, "start() first"
        batches = await self._consumer.getmany(
            timeout_ms=self.poll_ms, max_records=self.max_records
        )
        for records in batches.values():
            for record in records:
                self.apply(record.key, record.value)
