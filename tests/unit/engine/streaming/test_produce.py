"""engine.streaming.produce without a broker: what it hands aiokafka's producer."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from engine.streaming import produce
from engine.streaming.produce import key_hash, produce_counted


class FakeProducer:
    """Records each batch handed over and whether it was closed to more records then."""

    def __init__(self, partitions: int = 3) -> None:
        cluster = SimpleNamespace(partitions_for_topic=lambda topic: set(range(partitions)))
        self.tracked: set[str] = set()
        self.client = SimpleNamespace(cluster=cluster, add_topic=self._add_topic)
        self.handed: list[tuple[str, int, bool, int]] = []

    def _add_topic(self, topic: str) -> asyncio.Future[bool]:
        # As aiokafka's client: track the topic; the future is its metadata refresh.
        self.tracked.add(topic)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done

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
    # Tracked by the client, so a metadata refresh keeps the topic (see produce.py).
    assert producer.tracked == {"t"}


def test_key_hash_is_the_positive_murmur2_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(produce, "KEY_HASHES_MAX", 4)
    hashes: dict[bytes, int] = {}
    for i in range(10):
        key = f"p-{i}".encode()
        assert key_hash(key, hashes) == aiokafka_murmur2(key) & 0x7FFFFFFF
        assert hashes[key] == aiokafka_murmur2(key) & 0x7FFFFFFF
        assert len(hashes) <= 4
    # A remembered hash is answered from the cache: a planted value proves it is used.
    hashes[b"planted"] = 7
    assert key_hash(b"planted", hashes) == 7


async def test_a_shared_cache_places_records_by_their_hash() -> None:
    producer = FakeProducer(partitions=3)
    hashes = {b"k": 5}  # 5 % 3: partition 2, whatever murmur2 says
    await produce_counted(cast(AIOKafkaProducer, producer), [("t", b"k", b"v")], hashes=hashes)
    assert [(topic, partition) for topic, partition, _, _ in producer.handed] == [("t", 2)]
    await produce_counted(cast(AIOKafkaProducer, producer), [("t", b"new", b"v")], hashes=hashes)
    assert hashes[b"new"] == aiokafka_murmur2(b"new") & 0x7FFFFFFF
    assert producer.handed[-1][1] == hashes[b"new"] % 3
