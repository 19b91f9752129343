"""faust's aiokafka consumer with the fixes the engine relies on: a seek after a rebalance
that loses no record, and a short fetch wait once the tables have recovered.

These reach into faust's and aiokafka's private internals; engine/streaming/guard.py
checks the installed versions when imported.
"""

from __future__ import annotations

from typing import Any, cast

from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

import engine.streaming.guard  # noqa: F401  (the version guard)
from engine.streaming.drain import drain_messages

RECOVERY_FETCH_MAX_WAIT_MS = 1500  # faust's own fetch wait, kept while tables recover


class ShortFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, with the fetch wait of `KAFKA_FETCH_MAX_WAIT_MS`.

    faust fixes the worker consumer's `fetch_max_wait_ms` at 1,500 ms. aiokafka keeps one
    fetch in flight per broker and leaves out of it every partition whose fetched records
    the worker has not taken yet, so a fetch sent while the busy partitions are still
    buffered asks only for idle ones (timers, campaign runs) and the broker holds it for
    the whole wait, while records pile up on the busy partitions: a standing lag. The
    short wait is for steady processing only: from a new assignment until its changelog
    recovery ends, the fetch waits faust's own 1,500 ms (`SeekingConsumer`), the setting
    faust's recovery is built and tested with (a short wait there can stall the
    recovery). `KAFKA_FETCH_MIN_BYTES` (16 KB) lets the broker gather records for up to
    that wait, so a steady stream costs a fetch per batch rather than per few records;
    recovery fetches with 1 byte.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = cast(EngineTransport, transport).fetch_max_wait_ms
        consumer._fetch_min_bytes = cast(EngineTransport, transport).fetch_min_bytes
        return consumer


class SeekingConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, with a seek after a rebalance that loses no record.

    After a rebalance faust resumes the stream partitions while records already flow,
    then seeks to the committed offsets, then empties every stream buffer
    (`flow_control.resume()`) and resumes the flow (faust/tables/recovery.py,
    `on_recovery_completed` and `_resume_streams`). Records fetched during that seek
    reach a buffer and are emptied out unprocessed, while the fetch position is past
    them: a partition without a committed offset is not seeked at all, and the seek sets
    the read offset back to the committed one, so the next record looks like a gap.
    A read offset left over from before the rebalance drops records the same way.
    faust acks a gap (`Consumer._add_gap`) and the next commit passes the records nobody
    processed. This seek stops the flow first (the caller resumes it once the buffers
    are empty), then seeks every stream partition, the uncommitted ones to the beginning,
    as `consumer_auto_offset_reset="earliest"` would after a fresh assignment.
    """

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ShortFetchThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await drain_messages(self, fetcher)  # without faust's four tasks per record

    def _set_fetch_wait(self, ms: int, min_bytes: int) -> None:
        """The broker wait and byte count of the next fetches (aiokafka reads them for each
        request)."""
        fetcher = getattr(getattr(self._thread, "_consumer", None), "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = ms
            fetcher._fetch_min_bytes = min_bytes

    async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        # Recovery reads the changelogs with faust's own wait, answered as soon as any record
        # is there (a small changelog would otherwise wait the whole 1.5 s per fetch);
        # perform_seek, the last step of every recovery, puts the steady settings back.
        self._set_fetch_wait(RECOVERY_FETCH_MAX_WAIT_MS, 1)
        # The fetch loop records the offset of the record it was delivering when the
        # revocation stopped it, after the revocation forgot the partition's read offset;
        # faust then silently drops every record below that offset in the next generation.
        for tp in assigned:
            self._read_offset.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        self.stop_flow()
        await super().perform_seek()
        transport = cast(EngineTransport, self.transport)
        self._set_fetch_wait(transport.fetch_max_wait_ms, transport.fetch_min_bytes)
        # aiokafka's seek_to_committed skips a partition whose committed offset is None or 0.
        uncommitted = [
            TopicPartition(tp.topic, tp.partition)
            for tp in self.assignment()
            if not self._read_offset.get(tp)
            and not self._is_changelog_tp(tp)
            and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if uncommitted and self.app.conf.consumer_auto_offset_reset == "earliest":
            # Looked up, then seeked: seek_to_beginning would leave the position unset
            # while it waits, and faust's livelock check asserts on an unset position.
            for tp, offset in (await self.earliest_offsets(*uncommitted)).items():
                await self._seek(tp, offset)
                self._read_offset[tp] = None


class EngineTransport(faust_aiokafka.Transport):
    """The aiokafka transport with `SeekingConsumer` and its fetch wait."""

    Consumer = SeekingConsumer
    fetch_max_wait_ms = RECOVERY_FETCH_MAX_WAIT_MS  # create_app sets KAFKA_FETCH_MAX_WAIT_MS
    fetch_min_bytes = 1  # create_app sets KAFKA_FETCH_MIN_BYTES (1: as during recovery)
