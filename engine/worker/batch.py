"""The batch and its commit: records taken by the agent are committed together by `flush`,
whose docstring is the commit protocol (effects, then states, then timers, then acks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import faust
import structlog

from engine.observability import BATCH_SIZE, EVENT_TO_SEND, TIMERS_PENDING
from engine.streaming.internals import set_current_event, set_persisted_offset
from engine.streaming.produce import produce_batched, produce_counted
from engine.worker.base import RuntimeBase
from engine.worker.codec import state_record
from schemas.state import ProfileState

log = structlog.get_logger(__name__)


# A batch is flushed at this many records, or at this many changed profiles: a due tick
# is one record that can fire DUE_TICK_MAX profiles. The profiles bound what a kill
# between a batch's effects and its changelog makes the restart publish again (fewer
# than BATCH_MAX + DUE_TICK_MAX profiles' step records; docs/RELIABILITY.md).
BATCH_MAX = 500


class FlushFailed(Exception):
    """A batch could not be committed; the worker is stopping (see EngineRuntime.flush)."""


@dataclass(slots=True)
class Pending:
    """One batch's outputs: records to produce first, then states to commit."""

    effects: list[tuple[faust.TopicT, bytes, bytes]] = field(default_factory=list)
    states: dict[str, tuple[faust.EventT[bytes], ProfileState]] = field(default_factory=dict)
    send_started: list[float] = field(default_factory=list)


class BatchCommit(RuntimeBase):
    """Batching and the commit protocol of the runtime (`flush`)."""

    def _batch_full(self) -> bool:
        return len(self._batch) >= BATCH_MAX or len(self._pending.states) >= BATCH_MAX

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, stream: faust.StreamT[bytes]) -> None:
        """Commit the records taken so far. Crash-sensitive; the steps are the protocol.

        Before this, each record was decoded (a bad one became a dead-letter effect) and
        run through the pure interpreter against the profile's latest state: the batch's
        own copy, else a batch still being flushed, else the table.

        Step 1: take the batch and its outputs, and serialize its states as it left them;
                new records start a new batch (and may change the same state objects).
        Step 2: produce every effect (send requests, delivery skips, step events, dead
                letters, phone index) and wait until Kafka acknowledges all of them.
        Step 3: write each changed profile state to the table and its changelog, under the
                partition of the record that changed it, and wait until Kafka has them.
        Step 4: re-index the timers of changed profiles.
        Step 5: ack the batch's records; faust commits acked offsets every commit interval.

        A crash before step 2 ends loses nothing: the records are read again. A crash
        between steps 2 and 3 re-emits the same effects on re-read, with the same
        deterministic message ids, which the connector refuses to send twice. A crash
        after the changelog flush but before the offset commit re-reads events whose
        ids the stored state already lists, so they are skipped as duplicates.

        A flush that fails (Kafka gave up on a record after the producer's own retries)
        stops the worker, and no later batch is committed meanwhile: later batches were
        interpreted against the failed batch's states, and storing those would mark its
        events as seen although their effects may never have been produced. The restart
        reads every uncommitted record again.
        """
        async with self._flush_lock:
            if self._failed is not None:
                raise FlushFailed("an earlier batch failed to commit") from self._failed
            try:
                await self._flush_locked(stream)
            except Exception as exc:
                self._failed = exc
                log.exception("batch commit failed: stopping the worker")
                await self.app.crash(exc)
                raise

    async def _flush_locked(self, stream: faust.StreamT[bytes]) -> None:
        """Steps 1 to 5 of `flush`, under its lock."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        # Step 1
        batch, pending = self._batch, self._pending
        if not batch:
            return
        self._batch, self._pending = [], Pending()
        self._in_flight = pending.states
        self._handed = set()
        # The states as this batch left them, serialized now, before the first wait: while
        # this flush waits for Kafka the agent goes on, and a record of the next batch for
        # one of these profiles starts from (and changes) the same state object. Stored
        # later, that state would already hold the next batch's records, and a crash before
        # that batch's effects are produced would re-read them as duplicates and lose them.
        snapshot = [
            (profile_id.encode(), event, *state_record(state))
            for profile_id, (event, state) in pending.states.items()
        ]
        BATCH_SIZE.observe(len(batch))
        # Step 2
        # aiokafka's producer directly, whole batches per partition: faust's Topic.send
        # wraps each record in codecs, sensors and callbacks, and aiokafka's send() costs
        # a coroutine and a future per record (bench/profile_report.py, engine/streaming/produce.py).
        producer = self._producer()
        futures = await produce_batched(
            producer,
            [(topic.get_topic_name(), key, value) for topic, key, value in pending.effects],
            hashes=self._key_hashes,
        )
        if futures:
            await asyncio.gather(*futures)
        acked = time.monotonic()
        for started in pending.send_started:
            EVENT_TO_SEND.observe(acked - started)
        # Step 3
        # Produced like the effects, not through faust's send_changelog: its buffer
        # sends one record at a time and filled up ("producer buffer full") at
        # 1,000 events/s, holding every batch behind it.
        changelog: list[tuple[str, bytes | None, bytes | None]] = []
        partitions: list[int | None] = []
        changelog_topic = self.profiles.changelog_topic.get_topic_name()
        for key, event, raw, _ in snapshot:
            # The RocksDB store picks its per-partition database from the current event.
            set_current_event(event)
            self.profiles.data[key] = raw
            changelog.append((changelog_topic, key, raw))
            partitions.append(event.message.partition)
        set_current_event(None)
        if changelog:
            sent = await produce_counted(producer, changelog, partitions)
            await asyncio.gather(*(future for future, _ in sent))
            for future, count in sent:
                # What faust's _on_changelog_sent does: RocksDB remembers how far the
                # changelog is already in the local database.
                meta = future.result()
                set_persisted_offset(self.profiles, meta.topic_partition, meta.offset + count - 1)
        self._in_flight = {}
        # The committed states no record of a later batch was handed meanwhile are exactly
        # their stored bytes: kept decoded for the records that read them next.
        for key, _, raw, _ in snapshot:
            profile_id = key.decode()
            if profile_id not in self._handed:
                self._decoded.keep(profile_id, raw, pending.states[profile_id][1])
        # Step 4
        for key, _, _, due_at in snapshot:
            self.timers.schedule(key.decode(), due_at)
        TIMERS_PENDING.set(len(self.timers))
        # Step 5
        for event in batch:
            await stream.ack(event)
