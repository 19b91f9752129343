"""Ticks: the timer index is scanned and what is due is ticked through Kafka, one record
per partition, so a profile's timers fire on the worker that owns it, in order with its
events; a profile's share of an audience run arrives as an audience tick."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from datetime import datetime
from typing import Any

import faust
import orjson
import structlog
from pydantic import ValidationError

from engine.core.admission import validation_reason
from engine.core.interpreter import (
    ProcessResult,
    apply_audience,
    apply_timers,
    ends_without_timer,
)
from engine.observability import AUDIENCE_TICKS, INSTANCES_LIVE, TIMER_LAG, TIMERS_PENDING
from engine.streaming.produce import produce_batched
from engine.worker.batch import Pending
from engine.worker.codec import due_from_bytes
from engine.worker.records import BadRecord, RecordHandlers
from schemas.campaign import AudienceTick

log = structlog.get_logger(__name__)

# A scan's tick: `{"due": [[profile_id, due], ...]}` for profiles of the record's partition.
DUE_TICK_PREFIX = b'{"due":['
DUE_TICK_MAX = 500  # profiles per tick record (about 20 KB)
DUE_TICK_KEY = b"due"


def _is_due_item(item: Any) -> bool:
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and bool(item[0])
        and isinstance(item[1], int | float)
    )


def _raise_bad_due_tick() -> ProcessResult | None:
    raise BadRecord('due tick is not {"due": [[profile_id, due], ...]}')


def _raise_bad_due_entry() -> ProcessResult | None:
    raise BadRecord("due tick entry is not [profile_id, due]")


class DueTicks(RecordHandlers):
    """The clock's ticks (due ticks and single-profile timer ticks) and audience ticks."""

    def _on_due_tick(
        self, event: faust.EventT[bytes], value: bytes, now: datetime, pending: Pending
    ) -> None:
        """A scan's tick for the due profiles of one partition: each fired as its own tick."""
        message = event.message
        try:
            profiles = orjson.loads(value)["due"]
            if not isinstance(profiles, list):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._guarded("timer", event, message.key, value, _raise_bad_due_tick, pending)
            return
        for item in profiles:
            single = orjson.dumps(item)  # what a dead letter keeps of this profile
            if not _is_due_item(item):
                self._guarded("timer", event, None, single, _raise_bad_due_entry, pending)
                continue
            profile_id, due_at = item
            key = profile_id.encode()
            fire = functools.partial(
                self._on_due_profile,
                profile_id,
                key,
                float(due_at),
                message.partition,
                now,
                pending,
            )
            self._guarded("timer", event, key, single, fire, pending)

    def _on_due_profile(
        self,
        profile_id: str,
        key: bytes,
        due_at: float,
        partition: int,
        now: datetime,
        pending: Pending,
    ) -> ProcessResult | None:
        if self._partition_of(key) != partition:
            # Its state lives in another partition's table: this worker may not own it.
            raise BadRecord("due tick names a profile of another partition")
        return self._fire(profile_id, due_at, now, pending)

    def _on_timer(
        self, key: bytes | None, value: bytes | None, now: datetime, pending: Pending
    ) -> ProcessResult | None:
        """A tick for one profile: an audience tick, or a timer tick of the earlier format."""
        if not key:
            raise BadRecord("timer tick without a key")
        profile_id = key.decode()
        tick: Any = None
        if value:
            try:
                tick = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise BadRecord("timer tick is not JSON") from None
        if isinstance(tick, dict) and "audience" in tick:
            return self._on_audience(profile_id, tick["audience"], now, pending)
        due_at: float | None = None
        if isinstance(tick, dict):
            try:
                due_at = float(tick["due"])
            except (ValueError, KeyError, TypeError):
                pass
        return self._fire(profile_id, due_at, now, pending)

    def _fire(
        self, profile_id: str, due_at: float | None, now: datetime, pending: Pending
    ) -> ProcessResult | None:
        """Fire what is due now for one profile (a tick never fires a step twice)."""
        state = self._lookup(profile_id, pending)
        if state is None:
            return None  # no such profile: nothing to fire
        due = state.next_due()
        if due is None:
            return None  # already handled: a tick never fires a step twice
        if due > now and not ends_without_timer(state, self.catalog):
            self.timers.schedule(profile_id, due.timestamp())  # early tick: keep it indexed
            return None
        if due_at is not None:
            TIMER_LAG.observe(max(0.0, now.timestamp() - due_at))
        return apply_timers(state, self.catalog, now)

    def _on_audience(
        self, profile_id: str, raw: Any, now: datetime, pending: Pending
    ) -> ProcessResult:
        """One profile's share of an audience run: admit it if it qualifies now."""
        try:
            tick = AudienceTick.model_validate(raw)
        except ValidationError as exc:
            reason = validation_reason(exc, "audience tick")
            raise BadRecord(reason) from None
        state = self._state_for(profile_id, pending)
        result = apply_audience(state, tick, self.catalog, now)
        outcome = "declined" if result.declined is not None else "admitted"
        AUDIENCE_TICKS.labels(journey_id=tick.journey_id, outcome=outcome).inc()
        return result

    async def _rebuild_timer_index(self) -> None:
        """After a rebalance: index the timers of the partitions this worker now owns."""
        owned = self._owned_partitions()
        self.timers.clear()
        count = 0
        for key, raw in self.profiles.items():
            if raw is None or self._scanned_partition_of(key) not in owned:
                continue
            due = due_from_bytes(raw)
            if due is not None:
                self.timers.schedule(key.decode(), due)
                count += 1
        TIMERS_PENDING.set(len(self.timers))
        self._refresh_instance_gauge(owned)
        self.audience.on_recovered()
        log.info("timer index rebuilt", timers=count, partitions=sorted(owned))

    def _refresh_instance_gauge(self, owned: set[int] | None = None) -> None:
        """Count live instances by journey and activity from the stored states.

        A full pass over the local table (orjson only, no model parse), so it runs
        after rebalances and once a minute, not per event.
        """
        if owned is None:
            owned = self._owned_partitions()
        counts: Counter[tuple[str, str]] = Counter()
        for key, raw in self.profiles.items():
            if raw is None or self._scanned_partition_of(key) not in owned:
                continue
            for inst in orjson.loads(raw)["state"].get("instances", {}).values():
                counts[(inst["journey_id"], inst["activity_id"])] += 1
        INSTANCES_LIVE.clear()
        for (journey_id, activity_id), n in counts.items():
            INSTANCES_LIVE.labels(journey_id=journey_id, activity_id=activity_id).set(n)

    async def _fire_timers(self) -> None:
        """Send a tick for every profile due now; the agent does the rest in order."""
        if not self.definitions.ready.is_set():
            return
        due = self.timers.pop_due(time.time())
        if not due:
            return
        # One tick record per partition (up to DUE_TICK_MAX profiles each), on the timers
        # partition of the same number as its profiles' events and table: the worker that
        # owns them reads it, in order with their events. A record per profile cost the
        # engine a produce and a consume of its own for every timer.
        topic = self.topics.timers.get_topic_name()
        by_partition: dict[int, list[list[Any]]] = {}
        for pid, at in due:
            by_partition.setdefault(self._partition_of(pid.encode()), []).append([pid, at])
        records: list[tuple[str, bytes | None, bytes | None]] = []
        partitions: list[int | None] = []
        for partition, items in by_partition.items():
            for first in range(0, len(items), DUE_TICK_MAX):
                chunk = items[first : first + DUE_TICK_MAX]
                records.append((topic, DUE_TICK_KEY, orjson.dumps({"due": chunk})))
                partitions.append(partition)
        try:
            producer = self._producer()
            futures = await produce_batched(producer, records, partitions)
            await asyncio.gather(*futures)
        except Exception:
            # Not ticked: back into the index, so the next scan tries them again (a tick
            # sent twice fires nothing twice).
            for profile_id, due_at in due:
                self.timers.schedule(profile_id, due_at)
            raise
