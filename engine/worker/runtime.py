"""The streaming shell: one faust agent drives the pure interpreter per profile.

The agent reads three co-partitioned topics keyed by profile id (profile events,
timer ticks, delivery events), keeps each profile's state in one changelog-backed
table, and turns the interpreter's effects into records on the output topics.
Timer ticks are `{"profile_id", "due"}` (the clock) or `{"profile_id", "audience"}` (a
profile's share of an audience run or a campaign run; see engine/campaigns/audience.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
import orjson
import structlog
from faust.streams import _current_event
from pydantic import ValidationError

from engine.campaigns.audience import AUDIENCE_TICKS, AudienceRuns
from engine.core.catalog import JourneyCatalog
from engine.core.interpreter import (
    Effects,
    ProcessResult,
    apply_audience,
    apply_event,
    apply_timers,
    check_event_time,
    delivery_to_event,
    ends_without_timer,
    new_profile_state,
)
from engine.core.timers import TimerIndex
from engine.observability import (
    BATCH_SIZE,
    DEAD_LETTERS,
    EVENT_TO_SEND,
    EVENTS_PROCESSED,
    INSTANCES_LIVE,
    SENDS_REQUESTED,
    TIMER_LAG,
    TIMERS_PENDING,
)
from engine.streaming.produce import key_hash, murmur2, produce_batched, produce_counted
from engine.streaming.registry import DefinitionsFollower
from schemas.campaign import AudienceTick
from schemas.common import json_bytes
from schemas.deadletter import dead_letter_record
from schemas.deployment import JourneyDeployment
from schemas.events import MAX_EVENT_BYTES, ProfileEvent
from schemas.messages import DeliveryEvent
from schemas.settings import Settings
from schemas.state import ProfileState

log = structlog.get_logger(__name__)

# A batch is flushed at this many records, or at this many changed profiles: a due tick
# is one record that can fire DUE_TICK_MAX profiles. The profiles bound what a kill
# between a batch's effects and its changelog makes the restart publish again (fewer
# than BATCH_MAX + DUE_TICK_MAX profiles' step records; docs/RELIABILITY.md).
BATCH_MAX = 500


@dataclass(frozen=True, slots=True)
class EngineTopics:
    """The faust topics the engine reads and writes; built once by the wiring."""

    profile_events: faust.TopicT
    timers: faust.TopicT
    delivery_events: faust.TopicT
    whatsapp_requests: faust.TopicT
    journey_steps: faust.TopicT
    dead_letter: faust.TopicT
    profile_phones: faust.TopicT
    http_requests: faust.TopicT


class FlushFailed(Exception):
    """A batch could not be committed; the worker is stopping (see EngineRuntime.flush)."""


class BadRecord(Exception):
    """A record that cannot be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid profile event: " + "; ".join(parts)


_STATE_AT = b',"state":'


def state_to_bytes(state: ProfileState) -> bytes:
    """`{"due": <epoch or null>, "state": {...}}`: `due` sits beside the state so a rebuild
    of the timer index needs no model parse. The state's JSON comes straight from
    pydantic's serializer (as `model_dump(mode="json", exclude_defaults=True)` would give
    it), spliced in rather than dumped again through a dict."""
    return state_record(state)[0]


def state_record(state: ProfileState) -> tuple[bytes, float | None]:
    """`state_to_bytes(state)` and the due time in it (epoch seconds, None: nothing waits)."""
    due = state.next_due()
    at = due.timestamp() if due else None
    body = state.__pydantic_serializer__.to_json(state, exclude_defaults=True)
    return b'{"due":' + orjson.dumps(at) + _STATE_AT + body + b"}", at


def state_from_bytes(raw: bytes) -> ProfileState:
    at = raw.find(_STATE_AT)
    if at > 0 and raw.startswith(b'{"due":') and raw.endswith(b"}"):
        # As state_to_bytes writes it (and orjson did before): parse the state's JSON alone.
        return ProfileState.model_validate_json(raw[at + len(_STATE_AT) : -1])
    return ProfileState.model_validate(orjson.loads(raw)["state"])


def due_from_bytes(raw: bytes) -> float | None:
    due = orjson.loads(raw).get("due")
    return float(due) if due is not None else None


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


# prometheus_client's labels() takes a lock and builds a key per call: once per record here.
@functools.cache
def _processed(source: str, outcome: str) -> Any:
    return EVENTS_PROCESSED.labels(source=source, outcome=outcome)


@functools.lru_cache(maxsize=1024)
def _sends_requested(journey_id: str) -> Any:
    return SENDS_REQUESTED.labels(journey_id=journey_id)


@dataclass(slots=True)
class _Pending:
    """One batch's outputs: records to produce first, then states to commit."""

    effects: list[tuple[faust.TopicT, bytes, bytes]] = field(default_factory=list)
    states: dict[str, tuple[faust.EventT[bytes], ProfileState]] = field(default_factory=dict)
    send_started: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Before:
    """A shared state as it was before the record being processed (`EngineRuntime._lookup`)."""

    held: dict[str, tuple[faust.EventT[bytes], ProfileState]]
    profile_id: str
    event: faust.EventT[bytes]
    raw: bytes


class EngineRuntime:
    """Wires the interpreter into faust: agent, table, timers and definitions."""

    def __init__(self, app: faust.App, topics: EngineTopics, settings: Settings) -> None:
        self.app = app
        self.topics = topics
        self.settings = settings
        self.catalog = JourneyCatalog()
        self.timers = TimerIndex()
        self.definitions = DefinitionsFollower(settings, self._apply_deployment)
        self.partitions = settings.topic_partitions
        self._key_hashes: dict[bytes, int] = {}  # murmur2 of recent profile ids (key_hash)
        self.profiles = app.Table(
            "profiles",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
        )
        self.profiles.on_recover(self._rebuild_timer_index)
        self._batch: list[faust.EventT[bytes]] = []
        self._pending = _Pending()
        self._in_flight: dict[str, tuple[faust.EventT[bytes], ProfileState]] = {}
        # What the record being processed changes in place when its state is shared (this
        # batch's, or a flushing batch's): where the state sits, and its bytes before.
        self._before: _Before | None = None
        self._flush_lock = asyncio.Lock()
        self._failed: Exception | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._source_topics = app.topic(
            topics.profile_events.get_topic_name(),
            topics.timers.get_topic_name(),
            topics.delivery_events.get_topic_name(),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        runs_topic = app.topic(  # compacted, one partition: every worker reads all of it
            settings.topic_campaign_runs,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=1,
        )
        self.audience = AudienceRuns(
            app,
            settings=settings,
            catalog=self.catalog,
            profiles=self.profiles,
            timers_topic=topics.timers,
            runs_topic=runs_topic,
            definitions_ready=self.definitions.ready,
            owned_partitions=self._owned_partitions,
            partition_of=self._scanned_partition_of,
            on_run_cancelled=self._run_cancelled,
        )
        app.agent(self._source_topics, name="journey-engine")(self._agent)
        app.task(self._follow_definitions)
        app.timer(settings.timer_scan_interval_seconds)(self._fire_timers)
        app.timer(60.0)(self._refresh_gauges)

    # --- definitions --------------------------------------------------------------

    def _apply_deployment(self, deployment: JourneyDeployment) -> None:
        was = self.catalog.status(deployment.journey_id)
        self.catalog.apply(deployment)
        if was != "archived" and self.catalog.status(deployment.journey_id) == "archived":
            self._wake_instances_of(deployment.journey_id, "journey archived")

    def _run_cancelled(self, journey_id: str, run_id: str) -> None:
        self._wake_instances_of(journey_id, f"campaign run {run_id} cancelled")

    def _wake_instances_of(self, journey_id: str, why: str) -> None:
        """Tick every owned profile with an instance of a journey, so what must end ends now."""
        needle = f'"journey_id":"{journey_id}"'.encode()
        now = time.time()
        woken = 0
        for key, raw in self.profiles.items():
            if raw is not None and needle in raw:
                self.timers.schedule(key.decode(), now)
                woken += 1
        log.info(f"{why}: ending its live instances", journey_id=journey_id, profiles=woken)

    async def _follow_definitions(self) -> None:
        await self.definitions.run()

    # --- the agent -----------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        # Acks are ours: a record is acked only once its batch is durable (process_batch).
        # faust's own stream.take_events() is not used: it can drop or repeat a record
        # at a batch boundary.
        await self.definitions.ready.wait()
        await self.audience.ready.wait()
        manual = cast(Any, stream).noack()  # faust's StreamT stub lacks noack()
        loop = asyncio.get_running_loop()
        async for event in manual.events():
            self._process_record(event, datetime.now(UTC), self._pending)
            self._batch.append(event)
            if self._batch_full():
                await self.flush(manual)
            elif self._flush_timer is None:
                self._flush_timer = loop.call_later(
                    self.settings.engine_batch_window_ms / 1000,
                    lambda: self._background(self.flush(manual)),
                )

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
        self._batch, self._pending = [], _Pending()
        self._in_flight = pending.states
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
            _current_event.set(weakref.ref(event))
            self.profiles.data[key] = raw
            changelog.append((changelog_topic, key, raw))
            partitions.append(event.message.partition)
        _current_event.set(None)
        if changelog:
            sent = await produce_counted(producer, changelog, partitions)
            await asyncio.gather(*(future for future, _ in sent))
            for future, count in sent:
                # What faust's _on_changelog_sent does: RocksDB remembers how far the
                # changelog is already in the local database.
                meta = future.result()
                cast(Any, self.profiles.data).set_persisted_offset(
                    meta.topic_partition, meta.offset + count - 1
                )
        self._in_flight = {}
        # Step 4
        for key, _, _, due_at in snapshot:
            self.timers.schedule(key.decode(), due_at)
        TIMERS_PENDING.set(len(self.timers))
        # Step 5
        for event in batch:
            await stream.ack(event)

    def _producer(self) -> Any:
        """aiokafka's producer under faust's (started with the app)."""
        return cast(Any, self.app.producer)._ensure_producer()

    def _process_record(self, event: faust.EventT[bytes], now: datetime, pending: _Pending) -> None:
        message = event.message
        topic = message.topic
        key: bytes | None = message.key
        value: bytes | None = message.value
        run: Callable[[], ProcessResult | None]
        if topic == self.topics.timers.get_topic_name():
            if value and value.startswith(DUE_TICK_PREFIX):
                self._on_due_tick(event, value, now, pending)
                return
            source, run = "timer", lambda: self._on_timer(key, value, now, pending)
        elif topic == self.topics.delivery_events.get_topic_name():
            source, run = "delivery", lambda: self._on_delivery(key, value, now, pending)
        else:
            source = "event"
            run = lambda: self._on_profile_event(key, value, message.partition, now, pending)  # noqa: E731
        self._guarded(source, event, key, value, run, pending)

    def _guarded(
        self,
        source: str,
        event: faust.EventT[bytes],
        key: bytes | None,
        value: bytes | None,
        run: Callable[[], ProcessResult | None],
        pending: _Pending,
    ) -> None:
        """Run one record's handler; a bad record or a bug dead-letters (key, value)."""
        message = event.message
        self._before = None
        try:
            result = run()
        except BadRecord as bad:
            self._restore()
            DEAD_LETTERS.labels(reason=bad.reason.split(":")[0][:60]).inc()
            _processed(source, "dead_letter").inc()
            log.warning(
                "record dead-lettered",
                topic=message.topic,
                offset=message.offset,
                reason=bad.reason,
            )
            self._dead_letter(pending, message, key, value, bad.reason, "invalid_record")
            return
        except Exception as exc:  # a bug must not stop the stream: keep the record, say why
            self._restore()
            log.exception("record failed", topic=message.topic, offset=message.offset)
            _processed(source, "error").inc()
            self._dead_letter(
                pending, message, key, value, f"processing error: {exc!r}"[:500], type(exc).__name__
            )
            return
        if result is None:
            _processed(source, "ignored").inc()
            return
        _processed(source, "duplicate" if result.duplicate else "ok").inc()
        self._collect(result, event, pending)

    def _dead_letter(
        self,
        pending: _Pending,
        message: Any,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error_type: str,
    ) -> None:
        """`key` and `value`: the record's, or for one profile of a due tick, that profile's
        own tick."""
        record = dead_letter_record(
            reason=reason,
            error_type=error_type,
            component="engine",
            key=key,
            value=value,
            now=datetime.now(UTC),
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        pending.effects.append((self.topics.dead_letter, key or b"", record))

    def _lookup(self, profile_id: str, pending: _Pending) -> ProfileState | None:
        """The profile's latest state: this batch's, a batch being flushed, or the table's.

        The interpreter changes a state in place. One read from the table is this record's
        alone, but one held in memory is shared with the records before it, so its bytes
        are kept first: a record that fails halfway puts it back (`_restore`) instead of
        leaving half its changes for the next record, or the flush, to store."""
        for held in (pending.states, self._in_flight):
            entry = held.get(profile_id)
            if entry is not None:
                self._before = _Before(held, profile_id, entry[0], state_record(entry[1])[0])
                return entry[1]
        # The store itself, as flush writes it: the table's own get() adds sensor calls and
        # a KeyError per new profile. A RocksDB store reads the current event's partition.
        raw = self.profiles.data.get(profile_id.encode())
        return state_from_bytes(raw) if raw else None

    def _restore(self) -> None:
        """Put back the shared state a failed record started from (see `_lookup`)."""
        before, self._before = self._before, None
        if before is not None:
            before.held[before.profile_id] = (before.event, state_from_bytes(before.raw))

    def _state_for(self, profile_id: str, pending: _Pending) -> ProfileState:
        return self._lookup(profile_id, pending) or new_profile_state(profile_id)

    def _on_profile_event(
        self,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        now: datetime,
        pending: _Pending,
    ) -> ProcessResult | None:
        if not value:
            raise BadRecord("empty record value")
        if len(value) > MAX_EVENT_BYTES:
            raise BadRecord(f"event too large: {len(value)} bytes (limit {MAX_EVENT_BYTES})")
        try:
            event = ProfileEvent.model_validate_json(value)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise BadRecord("malformed JSON") from None
            raise BadRecord(_validation_reason(exc)) from None
        if not key:
            raise BadRecord("record has no key: profile events are keyed by profile id")
        if key.decode("utf-8", "replace") != event.profile_id:
            raise BadRecord("record key does not match profile_id")
        if self._partition_of(key) != partition:
            raise BadRecord(
                "record is on the wrong partition for its key: produce with the murmur2 "
                "partitioner (Kafka's Java default; librdkafka: partitioner=murmur2_random)"
            )
        reason = check_event_time(
            event,
            now,
            max_age=timedelta(days=self.settings.max_event_age_days),
            max_future=timedelta(seconds=self.settings.max_event_future_seconds),
        )
        if reason:
            raise BadRecord(reason)
        state = self._state_for(event.profile_id, pending)
        old_phone = state.attributes.get("phone")
        result = apply_event(
            state, event, self.catalog, now, dedupe_window=self.settings.dedupe_window
        )
        new_phone = result.state.attributes.get("phone")
        if new_phone and new_phone != old_phone:
            pending.effects.append(
                (
                    self.topics.profile_phones,
                    str(new_phone).encode(),
                    orjson.dumps({"profile_id": event.profile_id}),
                )
            )
        return result

    def _on_due_tick(
        self, event: faust.EventT[bytes], value: bytes, now: datetime, pending: _Pending
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
        pending: _Pending,
    ) -> ProcessResult | None:
        if self._partition_of(key) != partition:
            # Its state lives in another partition's table: this worker may not own it.
            raise BadRecord("due tick names a profile of another partition")
        return self._fire(profile_id, due_at, now, pending)

    def _on_timer(
        self, key: bytes | None, value: bytes | None, now: datetime, pending: _Pending
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
        self, profile_id: str, due_at: float | None, now: datetime, pending: _Pending
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
        self, profile_id: str, raw: Any, now: datetime, pending: _Pending
    ) -> ProcessResult:
        """One profile's share of an audience run: admit it if it qualifies now."""
        try:
            tick = AudienceTick.model_validate(raw)
        except ValidationError as exc:
            reason = _validation_reason(exc).replace("profile event", "audience tick", 1)
            raise BadRecord(reason) from None
        state = self._state_for(profile_id, pending)
        result = apply_audience(state, tick, self.catalog, now)
        outcome = "declined" if result.declined is not None else "admitted"
        AUDIENCE_TICKS.labels(journey_id=tick.journey_id, outcome=outcome).inc()
        return result

    def _on_delivery(
        self, key: bytes | None, value: bytes | None, now: datetime, pending: _Pending
    ) -> ProcessResult | None:
        if not value:
            return None
        # Most delivery events concern no journey (no entry on them, nobody waits for them,
        # no exit on them): those are dropped on their status alone, before the model is
        # validated and the profile's state read. The engine reads every delivery event.
        try:
            raw = orjson.loads(value)
            status = raw.get("status")
        except (orjson.JSONDecodeError, AttributeError):
            return None  # not the engine's to judge: the connector owns this topic's records
        if isinstance(status, str) and not self.catalog.listens_to(f"whatsapp.{status}"):
            return None
        try:
            delivery = DeliveryEvent.model_validate(raw)  # the JSON already parsed above
        except ValidationError:
            return None  # not the engine's to judge: the connector owns this topic's records
        event = delivery_to_event(delivery)
        found = self._lookup(delivery.profile_id, pending)
        if found is None and not self.catalog.entries_for(event.type):
            return None
        state = found or new_profile_state(delivery.profile_id)
        if (
            not self.catalog.entries_for(event.type)
            and not any(
                inst.waiting == "event" and inst.wait_event == event.type
                for inst in state.instances.values()
            )
            and not self._exit_types_for(state, event.type)
        ):
            return None  # nobody listens: skip the state write
        return apply_event(
            state, event, self.catalog, now, dedupe_window=self.settings.dedupe_window
        )

    def _exit_types_for(self, state: ProfileState, event_type: str) -> bool:
        for inst in state.instances.values():
            journey = self.catalog.get(inst.journey_id, inst.version)
            if journey and any(c.event == event_type for c in journey.definition.exit_on):
                return True
        return False

    def _collect(
        self, result: ProcessResult, event: faust.EventT[bytes], pending: _Pending
    ) -> None:
        effects: Effects = result.effects
        topics = self.topics
        for send in effects.sends:
            key = send.profile_id.encode()
            pending.effects.append((topics.whatsapp_requests, key, json_bytes(send)))
            _sends_requested(send.journey_id).inc()
            pending.send_started.append(time.monotonic())
        for delivery in effects.deliveries:
            pending.effects.append(
                (
                    topics.delivery_events,
                    delivery.profile_id.encode(),
                    json_bytes(delivery),
                )
            )
        for step in effects.steps:
            pending.effects.append(
                (
                    topics.journey_steps,
                    step.profile_id.encode(),
                    json_bytes(step),
                )
            )
        for call in effects.http_calls:
            pending.effects.append(
                (topics.http_requests, call.profile_id.encode(), orjson.dumps(asdict(call)))
            )
        if result.changed:
            pending.states[result.state.profile_id] = (event, result.state)

    # --- timers --------------------------------------------------------------------

    async def _refresh_gauges(self) -> None:
        self._refresh_instance_gauge()

    def _partition_of(self, key: bytes) -> int:
        """A profile id's partition, remembered for the records about it that follow."""
        return key_hash(key, self._key_hashes) % self.partitions

    def _scanned_partition_of(self, key: bytes) -> int:
        """As `_partition_of`, for passes over the whole table: not remembered, so a pass
        does not push the profiles in use out of the cache."""
        return int(murmur2(key) & 0x7FFFFFFF) % self.partitions

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

        A full pass over the local table (orjson only, about 3 µs a profile), so it runs
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

    def _owned_partitions(self) -> set[int]:
        name = self.topics.profile_events.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

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
