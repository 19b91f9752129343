"""engine.produce without a broker: what it hands aiokafka's producer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from engine.produce import produce_counted


class FakeProducer:
    """Records each batch handed over and whether it was closed to more records then."""

    def __init__(self, partitions: int = 3) -> None:
        cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(partitions)))
        self.client = SimpleNamespace(cluster=cluster)
        self.handed: list[tuple[str, int, bool, int]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1024, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> Any:
        self.handed.append((topic, partition, batch._closed, batch.record_count()))
        return object()

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> Any:
        raise AssertionError("every record here has a key")


async def test_batches_are_closed_before_the_producer_gets_them() -> None:
    # A closed batch goes out at once; an open one waits out the producer's linger
    # (KAFKA_PRODUCER_LINGER_MS), which is meant for records sent one at a time.
    producer = FakeProducer()
    records = [("t", f"k{i % 7}".encode(), b"v" * 100) for i in range(40)]
    futures = await produce_counted(cast(AIOKafkaProducer, producer), records)
    assert producer.handed, "nothing was produced"
    assert all(closed for _, _, closed, _ in producer.handed)
    assert sum(count for _, count in futures) == len(records)
    assert len(producer.handed) > 3  # 4 KB of records in 1 KB batches: some were full
