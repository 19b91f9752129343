"""connectors.whatsapp.records: coalesced writes land where send() puts them, in order,
and each writer learns its own record's offset."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import TopicPartition

from connectors.whatsapp.records import RecordWriter

pytestmark = pytest.mark.integration


async def _topics(bootstrap: str, *names: str, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def _read(
    bootstrap: str, topic: str, count: int
) -> list[tuple[int, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of the first `count` records, by partition and offset."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[tuple[int, int, bytes | None, bytes]] = []
    try:
        async with asyncio.timeout(60):
            while len(out) < count:
                for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                    for r in batch:
                        assert r.value is not None
                        out.append((tp.partition, r.offset, r.key, r.value))
    finally:
        await consumer.stop()
    return sorted(out)


async def test_writes_land_where_send_puts_them_in_order_with_their_offsets(
    kafka_bootstrap: str,
) -> None:
    keyed, placed, sent = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("keyed", "placed", "sent"))
    await _topics(kafka_bootstrap, keyed, placed, sent)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.partitions_for(keyed)
        await producer.partitions_for(placed)
        writer = RecordWriter(lambda: producer)
        # Written in one loop turn, as many finished calls are: keyed (partition by murmur2)
        # and placed (an explicit partition, as the changelog's records are).
        keyed_futures = [
            writer.write(keyed, key=f"p-{i % 37}".encode(), value=f"{i}".encode())
            for i in range(600)
        ]
        placed_futures = [
            writer.write(placed, key=f"m-{i}".encode(), value=f"{i}".encode(), partition=i % 3)
            for i in range(300)
        ]
        # And some in later turns, while the first flush may still be going.
        later = []
        for i in range(600, 700):
            later.append(writer.write(keyed, key=f"p-{i % 37}".encode(), value=f"{i}".encode()))
            if i % 10 == 0:
                await asyncio.sleep(0)
        written = await asyncio.gather(*keyed_futures, *later, *placed_futures)
        for i in range(700):
            await producer.send(sent, f"{i}".encode(), key=f"p-{i % 37}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    got_keyed = await _read(kafka_bootstrap, keyed, 700)
    got_sent = await _read(kafka_bootstrap, sent, 700)
    # Same partition per key as send(), and within a partition the order of the writes.
    where = {value: partition for partition, _, _, value in got_keyed}
    assert where == {value: partition for partition, _, _, value in got_sent}
    for partition in range(4):
        values = [int(v) for p, _, _, v in got_keyed if p == partition]
        assert values == sorted(values)
    # Each writer's future names its own record.
    by_place = {(p, o): v for p, o, _, v in got_keyed}
    for i, w in enumerate(written[:700]):
        assert w.topic_partition.topic == keyed
        assert by_place[(w.topic_partition.partition, w.offset)] == f"{i}".encode()
    got_placed = await _read(kafka_bootstrap, placed, 300)
    placed_at = {(p, o): (k, v) for p, o, k, v in got_placed}
    for i, w in enumerate(written[700:]):
        assert w.topic_partition == TopicPartition(placed, i % 3)
        assert placed_at[(i % 3, w.offset)] == (f"m-{i}".encode(), f"{i}".encode())


async def test_unknown_topic_metadata_and_oversized_records(kafka_bootstrap: str) -> None:
    fresh = f"fresh-{uuid.uuid4().hex[:8]}"
    await _topics(kafka_bootstrap, fresh, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        writer = RecordWriter(lambda: producer)
        # The producer has no metadata for `fresh` yet: these go through send().
        first = writer.write(fresh, key=b"k", value=b"first")
        nokey = writer.write(fresh, key=None, value=b"no key")
        too_big = writer.write(fresh, key=b"k", value=b"x" * (2 * 1024 * 1024))
        ok = await first
        assert ok.topic_partition.topic == fresh
        await nokey
        with pytest.raises(MessageSizeTooLargeError):
            await too_big
        # Once the metadata is there, batches; an oversized record fails alone.
        await producer.partitions_for(fresh)
        big = writer.write(fresh, key=b"k", value=b"y" * (2 * 1024 * 1024))
        after = writer.write(fresh, key=b"k", value=b"after")
        with pytest.raises(MessageSizeTooLargeError):
            await big
        done = await after
        assert done.topic_partition == ok.topic_partition and done.offset > ok.offset
    finally:
        await producer.stop()
    got = await _read(kafka_bootstrap, fresh, 3)
    assert sorted(v for _, _, _, v in got) == [b"after", b"first", b"no key"]
