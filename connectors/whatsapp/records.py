"""The connector's Kafka writes, gathered for a linger and sent as whole record batches.

`AIOKafkaProducer.send()` costs tens of microseconds per record (a coroutine, a future
from `get_event_loop()`, the partitioner and an accumulator lookup), and the connector
writes three records per message (its "sending" marker, the wamid, the DeliveryEvent).
Here the records written within one linger (KAFKA_PRODUCER_LINGER_MS, the time `send()`
would have held them in the producer's accumulator anyway) are grouped per topic
partition and handed to the producer as one closed batch each; each writer gets its own
future, which resolves when the broker has the record, exactly as with `send()`.

Partitions are chosen as `send()` would choose them (the producer's partitioner: murmur2
of the key, as Kafka's Java client), so DeliveryEvents stay co-partitioned with the
engine. Records without a key or a partition, or for a topic whose metadata the producer
does not have yet, go through `send()`. Each topic a group goes to is added to the
producer client's tracked topics first, as `send()` would: aiokafka's metadata refresh
forgets untracked topics, and a batch queued for one would wait for ever for its leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from schemas.partitioning import partition_of


@dataclass(frozen=True, slots=True)
class Written:
    """Where the broker put a record."""

    topic_partition: TopicPartition
    offset: int


_Pending = tuple[str, int | None, bytes | None, bytes | None, "asyncio.Future[Written]"]


class RecordWriter:
    """Coalesces the records written within `linger` seconds into a batch per topic partition.

    Batches leave in the order their records were written, one flush after the other, so
    two records for one partition reach the broker in the order of their `write()` calls.
    """

    def __init__(self, producer: Callable[[], AIOKafkaProducer], linger: float = 0.005) -> None:
        self._producer = producer
        self._linger = linger
        self._queue: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None

    def write(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> asyncio.Future[Written]:
        """Queue one record; the future resolves once the broker has it (or with the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Written] = loop.create_future()
        self._queue.append((topic, partition, key, value, future))
        if self._flusher is None and self._timer is None:
            self._timer = loop.call_later(self._linger, self._start)
        return future

    def _start(self) -> None:
        self._timer = None
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_all(), name="whatsapp-record-writer"
            )

    async def _flush_all(self) -> None:
        queued: list[_Pending] = []
        error: BaseException = asyncio.CancelledError()
        try:
            # Records written while a flush waited for room in the producer go in the next one.
            while self._queue:
                queued, self._queue = self._queue, []
                await self._flush(queued)
                queued = []  # handed to the producer: their futures resolve from its own
        except Exception as exc:  # the writers of what is left get the error
            error = exc
        finally:
            # Only after a failure or a cancellation is anything left unresolved: its
            # writers get the error instead of waiting forever.
            self._flusher = None
            left, self._queue = self._queue, []
            _fail(queued + left, error)

    async def _flush(self, queued: list[_Pending]) -> None:
        producer = self._producer()
        cluster = producer.client.cluster
        counts: dict[str, int | None] = {}
        groups: dict[tuple[str, int], list[_Pending]] = {}
        for record in queued:
            topic, partition, key = record[0], record[1], record[2]
            if partition is None:
                if topic not in counts:
                    found = cluster.partitions_for_topic(topic)
                    counts[topic] = len(found) if found else None
                count = counts[topic]
                if key is None or count is None:
                    await self._send_one(producer, record)
                    continue
                partition = partition_of(key, count)
            groups.setdefault((topic, partition), []).append(record)
        for (topic, partition), records in groups.items():
            await self._send_group(producer, topic, partition, records)

    async def _send_one(self, producer: AIOKafkaProducer, record: _Pending) -> None:
        topic, partition, key, value, future = record
        try:
            sent = await producer.send(topic, value, key=key, partition=partition)
        except Exception as exc:
            _fail([record], exc)
            return

        def done(result: asyncio.Future[Any]) -> None:
            if future.done():
                return
            if result.cancelled() or result.exception() is not None:
                _fail([record], result.exception() or asyncio.CancelledError())
                return
            meta = result.result()
            future.set_result(Written(TopicPartition(meta.topic, meta.partition), meta.offset))

        sent.add_done_callback(done)

    async def _send_group(
        self, producer: AIOKafkaProducer, topic: str, partition: int, records: list[_Pending]
    ) -> None:
        await producer.client.add_topic(topic)  # kept in every metadata refresh (see the top)
        start = 0
        while start < len(records):
            builder = producer.create_batch()
            end = start
            while end < len(records):
                _, _, key, value, _ = records[end]
                if builder.append(key=key, value=value, timestamp=None) is None:
                    break
                end += 1
            if end == start:
                size = len(records[start][3] or b"")
                _fail(
                    records[start : start + 1], ValueError(f"a record of {size} bytes is too big")
                )
                start += 1
                continue
            # Closed: the batch is complete, so the producer's linger must not hold it back.
            builder.close()
            part = records[start:end]
            try:
                sent = await producer.send_batch(builder, topic, partition=partition)
            except Exception as exc:
                _fail(part, exc)
            else:
                sent.add_done_callback(_resolver(part))
            start = end


def _resolver(records: list[_Pending]) -> Callable[[asyncio.Future[Any]], None]:
    def done(result: asyncio.Future[Any]) -> None:
        if result.cancelled():
            _fail(records, asyncio.CancelledError())
            return
        error = result.exception()
        if error is not None:
            _fail(records, error)
            return
        meta = result.result()  # the batch's first record
        tp = TopicPartition(meta.topic, meta.partition)
        for i, record in enumerate(records):
            future = record[4]
            if not future.done():
                future.set_result(Written(tp, meta.offset + i))

    return done


def _fail(records: list[_Pending], error: BaseException) -> None:
    for record in records:
        future = record[4]
        if future.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(error)
