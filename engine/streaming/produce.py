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

Every topic written here is added to the producer client's tracked topics (`add_topic`,
as `send()` does for a topic it does not know yet). aiokafka refreshes the metadata of
the tracked topics only and forgets every other one; while it tracks none, a refresh
fetches all of them, so `send_batch()` can write to a topic its client does not track.
Once another topic is tracked (faust's producer sends to a changelog created after it
started), the next refresh forgot that topic, and a batch queued for it waited for a
leader the producer never asked for again: a worker's flush waited for ever.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.partitioning import murmur2

KEY_HASHES_MAX = 65_536


def key_hash(key: bytes, hashes: dict[bytes, int]) -> int:
    """The partitioner's hash of `key` (murmur2, positive), remembered in `hashes`.

    murmur2 is pure Python and slow; the engine hashes each profile id for its partition
    check, its timer tick and every record it writes for it, so a bounded cache shared by
    those answers most of them. Emptied when full: it only saves work."""
    hash_ = hashes.get(key)
    if hash_ is None:
        if len(hashes) >= KEY_HASHES_MAX:
            hashes.clear()
        hash_ = hashes[key] = int(murmur2(key) & 0x7FFFFFFF)
    return hash_


async def produce_batched(
    producer: AIOKafkaProducer,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    partitions: Iterable[int | None] | None = None,
    hashes: dict[bytes, int] | None = None,
) -> list[Any]:
    """Queue every (topic, key, value); return the futures that resolve once Kafka has them.

    `partitions`, when given, names each record's partition (None: by its key); `hashes`
    is a key-hash cache (`key_hash`) to use and fill."""
    sent = await produce_counted(producer, records, partitions, hashes)
    return [future for future, _ in sent]


async def produce_counted(
    producer: AIOKafkaProducer,
    records: Iterable[tuple[str, bytes | None, bytes | None]],
    partitions: Iterable[int | None] | None = None,
    hashes: dict[bytes, int] | None = None,
) -> list[tuple[Any, int]]:
    """As `produce_batched`, with the number of records behind each future: a batch's
    future resolves to its first record's metadata, its last is that offset + count - 1."""
    cluster = producer.client.cluster
    counts: dict[str, int | None] = {}
    # A batch keys most of its records by a few profile ids (steps, send request, tick).
    hashed: dict[bytes, int] = {} if hashes is None else hashes
    builders: dict[tuple[str, int], list[Any]] = {}  # [builder, records in it]
    futures: list[tuple[Any, int]] = []
    chosen = iter(partitions) if partitions is not None else None
    tracked: set[str] = set()
    for topic, key, value in records:
        if topic not in tracked:
            tracked.add(topic)
            # Kept in every metadata refresh (see above). Awaited: a refresh still under
            # way when the batch is built can leave its send request's batch queued.
            await producer.client.add_topic(topic)
        partition = next(chosen) if chosen is not None else None
        if partition is None:
            count = counts.get(topic, -1)
            if count == -1:
                found = cluster.partitions_for_topic(topic)
                count = counts[topic] = len(found) if found else None
            if key is None or count is None:
                futures.append((await producer.send(topic, value, key=key), 1))
                continue
            partition = key_hash(key, hashed) % count
        where = (topic, partition)
        entry = builders.get(where)
        if entry is None:
            entry = builders[where] = [producer.create_batch(), 0]
        if entry[0].append(key=key, value=value, timestamp=None) is None:
            # Full: send it and start the next one for this partition.
            entry[0].close()
            futures.append(
                (await producer.send_batch(entry[0], topic, partition=partition), entry[1])
            )
            entry = builders[where] = [producer.create_batch(), 0]
            if entry[0].append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes is over the batch size")
        entry[1] += 1
    for (topic, partition), (builder, count) in builders.items():
        # Closed: a batch is complete, so the producer's linger must not hold it back.
        builder.close()
        futures.append((await producer.send_batch(builder, topic, partition=partition), count))
    return futures
