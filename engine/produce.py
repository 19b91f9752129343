"""Producing a batch's effects as whole record batches, one per topic partition.

`AIOKafkaProducer.send()` costs tens of microseconds per record (a coroutine, a future,
a partitioner call and an accumulator lookup each), and the engine produces about ten
records per event. Here the records are grouped per topic and partition first and
appended to `BatchBuilder`s, which `send_batch()` hands to the accumulator whole: one
future per batch instead of one per record.

Partitions are chosen as aiokafka's default partitioner does (murmur2 of the key, as
Kafka's Java client), so a record lands where `send()` would have put it and where the
engine's own partition check expects it. Records without a key, or for a topic whose
metadata the producer does not have yet, go through `send()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def produce_batched(
    producer: AIOKafkaProducer, records: Iterable[tuple[str, bytes | None, bytes | None]]
) -> list[Any]:
    """Queue every (topic, key, value); return the futures that resolve once Kafka has them."""
    cluster = producer.client.cluster
    counts: dict[str, int | None] = {}
    builders: dict[tuple[str, int], Any] = {}
    futures: list[Any] = []
    for topic, key, value in records:
        count = counts.get(topic, -1)
        if count == -1:
            found = cluster.partitions_for_topic(topic)
            count = counts[topic] = len(found) if found else None
        if key is None or count is None:
            futures.append(await producer.send(topic, value, key=key))
            continue
        where = (topic, partition_for(key, count))
        builder = builders.get(where)
        if builder is None:
            builder = builders[where] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:
            # Full: send it and start the next one for this partition.
            futures.append(await producer.send_batch(builder, topic, partition=where[1]))
            builder = builders[where] = producer.create_batch()
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes is over the batch size")
    for (topic, partition), builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures
