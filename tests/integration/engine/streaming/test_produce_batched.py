"""engine.streaming.produce: records land on the partition aiokafka's send() would choose, all of them."""

from __future__ import annotations

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
