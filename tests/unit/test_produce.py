"""engine.produce without a broker: what it hands aiokafka's producer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from engine.produce import murmur2, produce_counted


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


@given(st.binary(max_size=64))
def test_murmur2_is_kafkas_as_aiokafka_computes_it(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@pytest.mark.parametrize(
    ("key", "java"),
    [  # Kafka's UtilsTest.testMurmur2: what the Java client computes (as a signed int)
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_gives_the_java_clients_values(key: str, java: int) -> None:
    assert murmur2(key.encode()) == java & 0xFFFFFFFF
