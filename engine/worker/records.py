"""Record handling: each record read is decoded, checked and run through the pure
interpreter against the profile's latest state; a bad one becomes a dead letter with its
reason, and a failed one leaves the state it started from as it was."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
import structlog
from pydantic import ValidationError

from engine.core.admission import (
    InvalidEvent,
    check_event_time,
    delivery_to_event,
    parse_profile_event,
)
from engine.core.interpreter import (
    Effects,
    ProcessResult,
    apply_event,
    new_profile_state,
)
from engine.observability import (
    DEAD_LETTERS,
    EVENTS_PROCESSED,
    EVENTS_REPARTITIONED,
    SENDS_REQUESTED,
)
from engine.worker.base import RuntimeBase
from engine.worker.batch import Pending
from engine.worker.codec import state_from_bytes, state_record
from schemas.common import record_json
from schemas.deadletter import dead_letter_record
from schemas.events import ProfileEvent
from schemas.messages import DeliveryEvent
from schemas.state import ProfileState

log = structlog.get_logger(__name__)


class BadRecord(Exception):
    """A record that cannot be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_profile_event(value: bytes | None) -> ProfileEvent:
    """Validate a record's value as a profile event (`parse_profile_event`); raise
    BadRecord saying why not."""
    try:
        return parse_profile_event(value)
    except InvalidEvent as exc:
        raise BadRecord(exc.reason) from None


# prometheus_client's labels() takes a lock and builds a key per call: once per record here.
@functools.cache
def _processed(source: str, outcome: str) -> Any:
    return EVENTS_PROCESSED.labels(source=source, outcome=outcome)


@functools.lru_cache(maxsize=1024)
def _sends_requested(journey_id: str) -> Any:
    return SENDS_REQUESTED.labels(journey_id=journey_id)


@dataclass(frozen=True, slots=True)
class Before:
    """A shared state as it was before the record being processed (`EngineRuntime._lookup`)."""

    held: dict[str, tuple[faust.EventT[bytes], ProfileState]]
    profile_id: str
    event: faust.EventT[bytes]
    raw: bytes


class RecordHandlers(RuntimeBase):
    """The handlers of profile events and delivery events, and what all handlers share."""

    def _guarded(
        self,
        source: str,
        event: faust.EventT[bytes],
        key: bytes | None,
        value: bytes | None,
        run: Callable[[], ProcessResult | None],
        pending: Pending,
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
        pending: Pending,
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

    def _lookup(self, profile_id: str, pending: Pending) -> ProfileState | None:
        """The profile's latest state: this batch's, a batch being flushed, or the table's.

        The interpreter changes a state in place. One read from the table is this record's
        alone, but one held in memory is shared with the records before it, so its bytes
        are kept first: a record that fails halfway puts it back (`_restore`) instead of
        leaving half its changes for the next record, or the flush, to store."""
        for held in (pending.states, self._in_flight):
            entry = held.get(profile_id)
            if entry is not None:
                if held is self._in_flight:
                    self._handed.add(profile_id)
                self._before = Before(held, profile_id, entry[0], state_record(entry[1])[0])
                return entry[1]
        # The store itself, as flush writes it: the table's own get() adds sensor calls and
        # a KeyError per new profile. A RocksDB store reads the current event's partition.
        # A state this worker committed is usually still decoded (engine/worker/decoded.py).
        raw = self.profiles.data.get(profile_id.encode())
        return self._decoded.take(profile_id, raw) if raw else None

    def _restore(self) -> None:
        """Put back the shared state a failed record started from (see `_lookup`)."""
        before, self._before = self._before, None
        if before is not None:
            before.held[before.profile_id] = (before.event, state_from_bytes(before.raw))

    def _state_for(self, profile_id: str, pending: Pending) -> ProfileState:
        return self._lookup(profile_id, pending) or new_profile_state(profile_id)

    def _on_profile_event(
        self,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        now: datetime,
        pending: Pending,
        *,
        hopped: bool = False,
    ) -> ProcessResult | None:
        """A profile event: checked, then applied to its profile's state.

        One on another partition than its key's murmur2 one (a client with another
        partitioner) is not applied here: it is produced, as it is, to the repartition
        topic on its key's partition, and applied when read from there (`hopped`). That
        record is an effect of this batch, so it is acknowledged by Kafka before this
        record's offset is committed (flush step 2): a crash in between reads this record
        and moves it again, and the second copy is dropped by its event id. A profile's
        records that all arrive on one partition keep their order through the hop."""
        event = decode_profile_event(value)
        if not key:
            raise BadRecord("record has no key: profile events are keyed by profile id")
        if key.decode("utf-8", "replace") != event.profile_id:
            raise BadRecord("record key does not match profile_id")
        if self._partition_of(key) != partition:
            if hopped:
                raise BadRecord("record is on the wrong partition of the repartition topic")
            pending.effects.append((self.topics.profile_events_repartition, key, value or b""))
            EVENTS_REPARTITIONED.inc()
            return None
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

    def _on_delivery(
        self, key: bytes | None, value: bytes | None, now: datetime, pending: Pending
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

    def _collect(self, result: ProcessResult, event: faust.EventT[bytes], pending: Pending) -> None:
        effects: Effects = result.effects
        topics = self.topics
        for send in effects.sends:
            key = send.profile_id.encode()
            pending.effects.append((topics.whatsapp_requests, key, record_json(send)))
            _sends_requested(send.journey_id).inc()
            pending.send_started.append(time.monotonic())
        for delivery in effects.deliveries:
            pending.effects.append(
                (
                    topics.delivery_events,
                    delivery.profile_id.encode(),
                    record_json(delivery),
                )
            )
        for step in effects.steps:
            pending.effects.append(
                (
                    topics.journey_steps,
                    step.profile_id.encode(),
                    record_json(step),
                )
            )
        for call in effects.http_calls:
            pending.effects.append(
                (topics.http_requests, call.profile_id.encode(), orjson.dumps(asdict(call)))
            )
        if result.changed:
            pending.states[result.state.profile_id] = (event, result.state)
