"""engine.streaming.produce: records land on the partition aiokafka's send() would choose, all of them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.streaming.produce import produce_batched

pytestmark = pytest.mark.integration


async def test_batched_records_land_where_send_puts_them(kafka_bootstrap: str) -> None:
    batched, sent = f"batched-{uuid.uuid4().hex[:8]}", f"sent-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(t, 5, 1) for t in (batched, sent)])
    await admin.close()
    # Values big enough that one partition's records fill several batches.
    records = [(f"p-{i % 997}".encode(), f"{i}:".encode() + b"x" * 300) for i in range(3000)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.client.force_metadata_update()
        await producer.partitions_for(batched)
        futures = await produce_batched(
            producer,
            [(batched, k, v) for k, v in records] + [(batched, None, b"no key")],
        )
        for future in futures:
            await future
        assert len(futures) < len(records) // 10  # whole batches, not one future a record
        for k, v in records:
            await producer.send(sent, v, key=k)
        await producer.flush()
    finally:
        await producer.stop()

    async def read(topic: str, count: int) -> dict[bytes, tuple[int, bytes | None]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        out: dict[bytes, tuple[int, bytes | None]] = {}
        try:
            while len(out) < count:
                for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                    for r in batch:
                        assert r.value is not None
                        out[r.value] = (tp.partition, r.key)
        finally:
            await consumer.stop()
        return out

    got, want = await read(batched, len(records) + 1), await read(sent, len(records))
    assert len(got) == len(records) + 1 and b"no key" in got
    del got[b"no key"]
    assert got == want


async def test_a_metadata_refresh_keeps_the_topics_batches_were_sent_to(
    kafka_bootstrap: str,
) -> None:
    """aiokafka refreshes only the topics its client tracks and forgets every other one; a
    batch queued for a forgotten topic waits for a leader nobody asks for (the three-broker
    cluster test's stall: the worker's flush waited on journey-steps for ever)."""
    known, later = f"known-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(known, 2, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # While its client tracks no topic, a refresh fetches every topic's metadata.
        await producer.client.force_metadata_update()
        assert producer.client.cluster.partitions_for_topic(known) == {0, 1}
        for future in await produce_batched(producer, [(known, b"p-1", b"one")], [0]):
            await future
        await admin.create_topics([NewTopic(later, 2, 1)])
        # A topic the producer did not know yet: send() tracks it and refreshes the
        # metadata, as faust's producer does for a changelog created after it started.
        await producer.send_and_wait(later, b"x", key=b"k")
        await producer.client.force_metadata_update()
        assert producer.client.cluster.partitions_for_topic(known) == {0, 1}
        for future in await produce_batched(producer, [(known, b"p-2", b"two")], [1]):
            assert (await asyncio.wait_for(future, 10)).partition == 1
    finally:
        await producer.stop()
        await admin.close()
