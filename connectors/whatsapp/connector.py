"""The WhatsApp connector: a faust agent turning `whatsapp-requests` into calls and DeliveryEvents.

The engine's wiring calls `register(app, ...)`; this module never imports the engine.

How one request is committed (crash-sensitive; read before changing the order):

  Step 1. Look the message id up in the `whatsapp-accepted` table (message id -> wamid,
          changelog-backed). Found: the message was accepted before; re-emit the same
          `accepted` DeliveryEvent and never call the API again. Found a "sending"
          marker instead: a crash hid the outcome of a call (see step 0).
  Step 2. Policy (connectors.whatsapp.policy): skipped -> a `skipped` DeliveryEvent.
          Then what Meta said (connectors.whatsapp.gate): template status, marketing
          opt-out and hold, messaging limit; skipped, or held until it may go. A held
          request lets the next batches start (acks stay in order, so a crash re-reads
          from it and step 1 answers those after it). When a rebalance begins while it
          waits, it is written again to its partition and acked, as faust waits for
          every event under way before it hands partitions over.
  Step 3. Store a "sending" marker for the message id and wait until the broker has it;
          then call the API inside the pacing limits; retry retriable answers with
          capped exponential backoff and jitter, up to WHATSAPP_MAX_RETRIES. A call
          whose request went out but got no answer (read timeout, closed connection)
          is settled as step 0 settles a crash's, before any retry (LostAnswers).
  Step 4. Accepted: replace the marker with the wamid and wait until the broker has the
          changelog record, right after Meta's answer and before anything else. Failed:
          drop the marker (a failed request is evaluated again if it comes back).
  Step 5. Emit the final DeliveryEvent (accepted, failed or skipped) keyed by profile id.
  Step 6. After the whole batch: wait until the broker has every DeliveryEvent, then ack
          the batch's offsets, after the batch before it; faust commits acked offsets
          every commit interval. Two batches may be under way at once (BATCHES_AHEAD); a
          message id also in the batch before waits until that batch is done with it.

  Step 0, before steps 1-6 of a batch: requests whose message id has a "sending" marker
          (the worker died between step 3 and step 4) are looked up in Meta's status
          webhooks on delivery-events (connectors.whatsapp.indoubt). A status with a wamid
          means Meta took the message: it is stored as accepted and step 1 re-emits it.
          No status within WHATSAPP_IN_DOUBT_SECONDS of the marker: the call never
          reached Meta, and the request goes through steps 2-6 again.

A crash after step 4 costs nothing: the request comes back (its offset was not committed),
step 1 finds it and re-emits `accepted` (DeliveryEvent consumers dedupe by message id and
status). A crash between steps 3 and 4 costs a wait of up to WHATSAPP_IN_DOUBT_SECONDS for
the messages in flight, not a second message. What remains is a message Meta took whose
first status webhook reaches delivery-events more than WHATSAPP_IN_DOUBT_SECONDS after its
marker: it is sent twice. The Cloud API has no idempotency key to close that completely.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
import structlog
from aiokafka.errors import KafkaError
from mode import Service
from prometheus_client import Counter
from pydantic import ValidationError

from connectors.whatsapp.client import (
    MARKETING_LIMITED,
    MARKETING_OPTED_OUT,
    PAIR_RATE_LIMITED,
    CloudApiClient,
    SendOutcome,
)
from connectors.whatsapp.controls import (
    MARKETING_HOLD,
    Controls,
    ControlsFollower,
    Record,
    hold_record,
    optout_record,
)
from connectors.whatsapp.events import (
    delivery_event,
    failed_error,
    skipped_error,
)
from connectors.whatsapp.gate import HoldAbandoned, SendGate
from connectors.whatsapp.indoubt import Evidence, LostAnswers, find_statuses
from connectors.whatsapp.pacing import Pacer, partition_share
from connectors.whatsapp.policy import check_send
from connectors.whatsapp.records import RecordWriter
from connectors.whatsapp.shell import StreamShell
from schemas.common import mask_phone, record_json
from schemas.deadletter import dead_letter_record
from schemas.messages import (
    DeliveryEvent,
    DeliveryStatus,
    SendRequest,
)
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.connector")

COMPONENT = "whatsapp-connector"
ACCEPTED_TABLE = "whatsapp-accepted"
# Batches under way at once: the next one's parsing and markers overlap the calls of the one
# before, which wait for their pacing slots; acks stay in batch order.
BATCHES_AHEAD = 2
# A message id is only ever re-requested within minutes of the first request (a crash and
# a restart); a month of memory is plenty and keeps the changelog from growing forever.
ACCEPTED_RETENTION_MS = 30 * 24 * 3600 * 1000

# Set per batch: called by a request that starts waiting (held by the gate, or backing off
# after 131056), so the next batches need not wait for it. Acks stay in batch order.
_ON_HOLD: contextvars.ContextVar[Callable[[], None]] = contextvars.ContextVar(
    "whatsapp_on_hold", default=lambda: None
)

DEAD_LETTERS = Counter(
    "whatsapp_connector_dead_letters_total",
    "Send requests the connector could not process, sent to the dead-letter topic",
    ["error_type"],
)
OUTCOMES = Counter(
    "whatsapp_connector_outcomes_total",
    "Final outcomes of send requests (accepted, failed, skipped, duplicate)",
    ["status"],
)
# One child per status, looked up once rather than per request.
_OUTCOME = {
    status: OUTCOMES.labels(status=status)
    for status in ("accepted", "failed", "skipped", "duplicate")
}
IN_DOUBT = Counter(
    "whatsapp_connector_in_doubt_total",
    "Requests found with a sending marker after a crash, by what the status webhooks showed",
    ["resolution"],
)

StatusFinder = Callable[[Mapping[str, datetime], float], Awaitable[dict[str, Evidence]]]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


def right_sized(value: bytes) -> bytes:
    """A copy of `value` that holds only its own bytes.

    orjson (3.12 on) returns bytes that keep its whole write buffer, 4 KiB however short
    the JSON; a value the table keeps for its life is copied, or every accepted message
    would hold 4 KiB of memory (the connector grew 4.4 KiB per message drained).
    """
    return memoryview(value).tobytes()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits between half and all of base*2^n."""

    base: float = 0.25
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record came from: kept in dead letters so operators can find it."""

    topic: str | None
    partition: int
    offset: int | None
    key: bytes | None


@dataclass(frozen=True, slots=True)
class _Item:
    request: SendRequest
    origin: Origin
    raw: bytes
    event: faust.EventT[Any]


class WhatsAppConnector:
    """Consumes SendRequests, calls the Cloud API within the pacing limits, emits DeliveryEvents."""

    def __init__(
        self,
        app: faust.App,
        *,
        shell: StreamShell,
        requests_topic: faust.TopicT,
        delivery_topic: faust.TopicT,
        dead_letter_topic: faust.TopicT,
        settings: Settings,
        client: CloudApiClient | None = None,
        pacer: Pacer | None = None,
        backoff: Backoff | None = None,
        batch_size: int | None = None,
        batch_within: float = 0.05,
        clock: Callable[[], datetime] = utcnow,
        status_finder: StatusFinder | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.app = app
        self.shell = shell
        self.settings = settings
        self.requests_topic = requests_topic
        self.delivery_topic = delivery_topic
        self.dead_letter_topic = dead_letter_topic
        self.client = client or CloudApiClient(settings)
        self.pacer = pacer or Pacer(
            rate_per_second=settings.whatsapp_max_rate(),
            max_in_flight=settings.in_flight_limit(),
        )
        if settings.whatsapp_number_cap_per_second is not None:
            # Sent after each rebalance, while the new partitions are still paused.
            app.on_partitions_assigned.connect(self._pace_to_share)
        self.backoff = backoff or Backoff()
        self.max_retries = settings.whatsapp_max_retries
        # About a second of traffic per batch: big enough that the pause between batches is
        # small next to the batch, small enough that a batch commits often.
        self.batch_size = batch_size or max(
            settings.in_flight_limit(), min(1000, int(settings.whatsapp_max_rate()))
        )
        self.batch_within = batch_within
        self.clock = clock
        self.status_finder = status_finder or self._find_statuses
        self.lost_answers = LostAnswers(self.status_finder, settings.whatsapp_in_doubt_seconds)
        self.accepted = app.Table(
            ACCEPTED_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=requests_topic.partitions or settings.topic_partitions,
            extra_topic_configs={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(ACCEPTED_RETENTION_MS),
            },
            help="WhatsApp message id -> wamid of every message Meta accepted, or a marker "
            "of a call under way",
        )
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._batch: list[faust.EventT[Any]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        # Batches under way at once (see _start_batch), the acks' order, and who handles
        # which message id right now.
        self._slots = asyncio.Semaphore(BATCHES_AHEAD)
        self._active = 0
        self._last_acked: asyncio.Future[None] | None = None
        self._intake_lock = asyncio.Lock()
        self._claims: dict[str, asyncio.Future[None]] = {}
        self._writer = RecordWriter(shell.producer, settings.kafka_producer_linger_ms / 1000)
        self.controls = controls or Controls(
            window_seconds=settings.whatsapp_messaging_window_seconds
        )
        self.follower = ControlsFollower(settings, self.controls)
        self.gate = SendGate(
            self.controls, settings, self._write_control, clock, ready=self.follower.ready
        )

    # -- the agent

    async def _pace_to_share(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """WHATSAPP_NUMBER_CAP_PER_SECOND: pace at this worker's share of the cap.

        faust's on_partitions_assigned signal: `args[0]` is the worker's whole assignment."""
        cap = self.settings.whatsapp_number_cap_per_second
        if cap is None or not args:
            return
        assigned: set[Any] = args[0]
        topic = self.requests_topic.get_topic_name()
        owned = sum(1 for tp in assigned if tp.topic == topic)
        partitions = (
            self.app.consumer.topic_partitions(topic)
            or self.requests_topic.partitions
            or self.settings.topic_partitions
        )
        rate = partition_share(cap, owned, partitions)
        if rate is not None:
            self.pacer.set_rate(rate)
        log.info(
            "whatsapp.pacing_share",
            cap_per_second=cap,
            partitions_owned=owned,
            partitions=partitions,
            rate_per_second=rate,
        )

    async def process(self, stream: faust.Stream[Any]) -> None:
        # Acks are ours, after the batch is done (step 6). faust's stream.take_events() is
        # not used: it acks a batch even when handling it raised (its generator's finally),
        # so a Kafka error in the middle of a batch would lose the rest of it.
        manual = cast(Any, stream).noack()  # faust's Stream stub lacks noack()
        loop = asyncio.get_running_loop()
        async for event in manual.events():
            self._batch.append(event)
            if len(self._batch) >= self.batch_size:
                await self._start_batch(manual)
            elif self._flush_timer is None:
                self._flush_timer = loop.call_later(
                    self.batch_within, lambda: self._background(self._start_batch(manual))
                )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_batch(self, stream: Any) -> None:
        """Take the records read so far as a batch and start it; wait only for a free slot.

        Up to BATCHES_AHEAD batches are under way at once: the next batch is parsed and its
        markers written while the calls of the one before wait for their pacing slots, so
        the number's cap is used without a pause between batches. Batches are acked in the
        order they were taken.
        """
        if not self._batch:
            return
        await self._slots.acquire()
        # The timer is dropped only now: while this waits, no other timer is started.
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        # Taken after the wait, so whatever arrived meanwhile goes with it.
        batch, self._batch = self._batch, []
        if not batch:
            self._slots.release()
            return
        previous = self._last_acked
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last_acked = acked
        self._active += 1
        self._idle.clear()
        self._background(self._run_batch(stream, batch, previous, acked))

    async def _run_batch(
        self,
        stream: Any,
        batch: list[faust.EventT[Any]],
        previous: asyncio.Future[None] | None,
        acked: asyncio.Future[None],
    ) -> None:
        """Handle one batch (again, until it goes through), then ack it after the one before."""
        released = False

        def release_slot() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()

        _ON_HOLD.set(release_slot)
        try:
            attempt = 0
            while True:
                try:
                    await self.handle_batch(batch)
                    break
                except Exception:
                    # Kafka (or the status lookup) failed; requests' own errors were
                    # dead-lettered. The same batch again: the table makes that safe.
                    delay = min(30.0, 0.5 * 2**attempt)
                    log.exception("whatsapp.batch_failed", attempt=attempt, retry_in=delay)
                    await asyncio.sleep(delay)
                    attempt += 1
            if previous is not None:
                await previous
            for event in batch:
                await stream.ack(event)
        finally:
            if not acked.done():
                acked.set_result(None)
            release_slot()
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def handle_batch(self, events: Sequence[faust.EventT[Any]]) -> None:
        started = time.monotonic()
        pending: list[Awaitable[Any]] = []
        groups: dict[str, list[_Item]] = {}
        loop = asyncio.get_running_loop()
        # One batch at a time through the intake, so a batch's claims are made before the
        # next batch looks for crash markers: a marker of a message another batch of this
        # worker is sending is not in doubt.
        async with self._intake_lock:
            for event in events:
                item = await self._parse(event, pending)
                if item is not None:
                    groups.setdefault(item.request.message_id, []).append(item)
            await self._settle_in_doubt(groups)
            claims = {}
            for message_id in groups:
                claims[message_id] = (self._claims.get(message_id), loop.create_future())
                self._claims[message_id] = claims[message_id][1]
        try:
            # The same message id twice in one batch: handle the copies one after the
            # other, so the second finds the first in the table instead of calling Meta
            # again. A copy in an earlier batch still under way: wait for that batch.
            results = await asyncio.gather(
                *(
                    self._handle_group(group, pending, claims[message_id][0])
                    for message_id, group in groups.items()
                )
            )
            # Step 6: every DeliveryEvent and dead letter is on the broker before the acks.
            await asyncio.gather(*pending)
        finally:
            for message_id, (_, mine) in claims.items():
                mine.set_result(None)
                if self._claims.get(message_id) is mine:
                    del self._claims[message_id]
        counts: dict[str, int] = {}
        for statuses in results:
            for status in statuses:
                counts[status] = counts.get(status, 0) + 1
        log.info(
            "whatsapp.batch",
            size=len(events),
            seconds=round(time.monotonic() - started, 3),
            **counts,
        )

    async def _settle_in_doubt(self, groups: Mapping[str, list[_Item]]) -> None:
        """Step 0: for markers a crash left, store what Meta's status webhooks show."""
        markers: dict[str, datetime] = {}
        for message_id in groups:
            if message_id in self._claims:
                continue  # this worker's own marker: an earlier batch is sending it now
            marker = _marker(self.accepted.data.get(message_id.encode()))
            if marker is not None:
                markers[message_id] = marker
        if not markers:
            return
        log.warning("whatsapp.in_doubt", messages=len(markers))
        found = await self.status_finder(markers, self.settings.whatsapp_in_doubt_seconds)
        writes = []
        for message_id, evidence in found.items():
            key = message_id.encode()
            stored = orjson.dumps(
                {
                    "wamid": evidence.wamid,
                    "at": evidence.occurred_at or self.clock().isoformat(),
                    "by": evidence.status,
                }
            )
            first = groups[message_id][0]
            self.shell.set_current_event(first.event)
            writes.append(self._store(first.origin.partition, key, stored))
        await asyncio.gather(*writes)
        IN_DOUBT.labels(resolution="taken_by_meta").inc(len(found))
        IN_DOUBT.labels(resolution="sent_again").inc(len(markers) - len(found))

    async def _find_statuses(
        self, markers: Mapping[str, datetime], grace_seconds: float
    ) -> dict[str, Evidence]:
        topic, partitions = self.delivery_topic.get_topic_name(), self.shell.topic_partitions
        return await find_statuses(self.settings, topic, markers, grace_seconds, partitions)

    async def _parse(self, event: faust.EventT[Any], pending: list[Awaitable[Any]]) -> _Item | None:
        message = event.message
        origin = Origin(message.topic, message.partition, message.offset, _as_bytes(event.key))
        raw = _as_bytes(event.value) or b""
        try:
            request = SendRequest.model_validate_json(raw)
        except ValidationError as exc:
            reason = f"invalid SendRequest: {_first_error(exc)}"
            await self._dead_letter(reason, "ValidationError", origin, raw, pending)
            return None
        return _Item(request, origin, raw, event)

    async def _dead_letter(
        self,
        reason: str,
        error_type: str,
        origin: Origin,
        raw: bytes,
        pending: list[Awaitable[Any]],
    ) -> None:
        log.warning(
            "whatsapp.dead_letter",
            reason=reason,
            partition=origin.partition,
            offset=origin.offset,
        )
        DEAD_LETTERS.labels(error_type=error_type).inc()
        record = dead_letter_record(
            reason=reason,
            error_type=error_type,
            component=COMPONENT,
            key=origin.key,
            value=raw,
            source_topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            now=self.clock(),
        )
        pending.append(
            await self.dead_letter_topic.send(
                key=origin.key,
                value=record,
                key_serializer="raw",
                value_serializer="raw",
                force=True,
            )
        )

    async def _handle_group(
        self,
        group: list[_Item],
        pending: list[Awaitable[Any]],
        earlier: asyncio.Future[None] | None = None,
    ) -> list[str]:
        if earlier is not None:
            await earlier
        statuses = []
        for item in group:
            # The table's RocksDB store writes to the database of the current event's
            # partition; this task's copy of the context is this request's.
            self.shell.set_current_event(item.event)
            try:
                statuses.append(await self.handle(item.request, item.origin.partition, pending))
            except KafkaError:
                # Not this request's fault: crash, restart, and process the batch again.
                raise
            except Exception as exc:
                # A request that breaks the connector must not stop the stream: dead-letter it.
                log.exception("whatsapp.unexpected_error", message_id=item.request.message_id)
                reason = f"unexpected error: {exc!r}"
                await self._dead_letter(reason, type(exc).__name__, item.origin, item.raw, pending)
                statuses.append("dead_letter")
        return statuses

    async def handle(
        self, request: SendRequest, partition: int, pending: list[Awaitable[Any]]
    ) -> str:
        """Steps 1 to 5 for one request; returns the final status (or 'duplicate')."""
        table_key = request.message_id.encode()
        # Step 1: accepted before (before a crash, or an earlier copy of this request).
        # The store itself, as _store writes it: the table's own get() goes through faust's
        # sensors and raises (and catches) a KeyError for every message not seen before.
        stored = self.accepted.data.get(table_key)
        seen = orjson.loads(stored) if stored is not None else None
        if isinstance(seen, dict) and "wamid" in seen:
            event = delivery_event(
                request,
                DeliveryStatus.ACCEPTED,
                wamid=seen["wamid"],
                occurred_at=datetime.fromisoformat(seen["at"]),
            )
            log.debug(
                "whatsapp.already_accepted", message_id=request.message_id, wamid=seen["wamid"]
            )
            await self._emit(event, pending)
            _OUTCOME["duplicate"].inc()
            return "duplicate"

        # Step 2: policy, then what Meta said.
        reason, title = check_send(request, now=self.clock()), None
        if reason is None:
            try:
                verdict = await self.gate.check(
                    request, _ON_HOLD.get(), lambda: self._owns(partition)
                )
            except HoldAbandoned:
                # A rebalance began while it waited, and faust waits for every event under
                # way to be acked: put the request back on its partition, then let it be acked.
                topic = self.requests_topic.get_topic_name()
                body = request.model_dump_json().encode()
                await self._writer.write(topic, key=request.profile_id.encode(), value=body)
                log.info("whatsapp.hold_requeued", message_id=request.message_id)
                return "requeued"
            reason, title = verdict if verdict is not None else (None, None)
        if reason is not None:
            log.info(
                "whatsapp.skipped",
                message_id=request.message_id,
                reason=reason.value,
                to=mask_phone(request.to),
            )
            event = delivery_event(
                request,
                DeliveryStatus.SKIPPED,
                occurred_at=self.clock(),
                error=skipped_error(reason, title),
            )
            await self._emit(event, pending)
            _OUTCOME["skipped"].inc()
            return "skipped"

        # Step 3: the marker, on the broker before the call; then the call, with retries.
        marker = orjson.dumps({"sending_at": self.clock().isoformat()})
        await self._store(partition, table_key, marker)
        outcome = await self.send_with_retries(request)
        now = self.clock()
        if outcome.accepted:
            assert outcome.wamid is not None
            # Step 4: remember it before anything else, and wait for the broker to have it.
            stored = orjson.dumps({"wamid": outcome.wamid, "at": now.isoformat()})
            await self._store(partition, table_key, stored)
            event = delivery_event(
                request, DeliveryStatus.ACCEPTED, wamid=outcome.wamid, occurred_at=now
            )
            status = "accepted"
        else:
            # Meta refused it (or never answered): no marker, so a copy is evaluated again.
            pending.append(asyncio.ensure_future(self._store(partition, table_key, None)))
            event = delivery_event(
                request, DeliveryStatus.FAILED, occurred_at=now, error=failed_error(outcome)
            )
            status = "failed"
            if outcome.code == MARKETING_LIMITED:
                await self._write_control(hold_record(request.profile_id, now + MARKETING_HOLD))
            elif outcome.code == MARKETING_OPTED_OUT:
                await self._write_control(optout_record(request.profile_id, True, now))
        # Step 5.
        await self._emit(event, pending)
        _OUTCOME[status].inc()
        return status

    async def send_with_retries(self, request: SendRequest) -> SendOutcome:
        number = self.client.phone_number_id(request)
        attempt = 0
        while True:
            async with self.pacer.slot(number):
                called_at = self.clock()
                outcome = await self.client.send(request)
            if outcome.in_doubt:  # no answer, yet Meta may have it: its statuses decide
                evidence = await self.lost_answers.settle(request.message_id, called_at)
                if evidence is not None:
                    return SendOutcome(True, wamid=evidence.wamid)
            if outcome.accepted or not outcome.retriable:
                return outcome
            if outcome.rate_limited:
                self.pacer.rate_limited(number)
            if attempt >= self.max_retries:
                log.warning(
                    "whatsapp.retries_exhausted",
                    message_id=request.message_id,
                    attempts=attempt + 1,
                    code=outcome.code,
                )
                return outcome
            delay = self.backoff.delay(attempt)
            if outcome.code == PAIR_RATE_LIMITED:
                # Too many messages to this one user: wait for them, not for the number.
                _ON_HOLD.get()()
                delay = max(delay, self.settings.whatsapp_pair_backoff_seconds)
            await asyncio.sleep(delay)
            attempt += 1

    def _owns(self, partition: int) -> bool:
        """Whether this worker still has `partition` and no rebalance is under way (faust
        suspends its flow control while partitions are revoked)."""
        topic = self.requests_topic.get_topic_name()
        try:
            if not self.app.flow_control.is_active():
                return False
            assigned = self.app.consumer.assignment()
        except Exception:  # no consumer (not started, or a test without one): keep going
            return True
        return any(tp.topic == topic and tp.partition == partition for tp in assigned)

    async def _write_control(self, record: Record) -> None:
        """Apply a control record here at once and write it for the other workers."""
        key, value = record
        self.controls.apply(key, value)
        await self._writer.write(self.settings.topic_whatsapp_controls, key=key, value=value)

    def _store(self, partition: int, key: bytes, value: bytes | None) -> Awaitable[None]:
        """Write `key` to the table now (None: delete it); await the result for the broker
        to have the changelog record."""
        if value is None:
            self.accepted.data.pop(key, None)
        else:
            self.accepted.data[key] = right_sized(value)
        return self._write_changelog(partition, key, value)

    async def _write_changelog(self, partition: int, key: bytes, value: bytes | None) -> None:
        topic = self.accepted.changelog_topic.get_topic_name()
        written = await self._writer.write(topic, key=key, value=value, partition=partition)
        self.shell.set_persisted_offset(self.accepted, written.topic_partition, written.offset)

    async def _emit(self, event: DeliveryEvent, pending: list[Awaitable[Any]]) -> None:
        # Partitioned by key (murmur2) as faust's send would: co-partitioned with the engine.
        pending.append(
            self._writer.write(
                self.delivery_topic.get_topic_name(),
                key=event.profile_id.encode(),
                value=record_json(event),
            )
        )

    # -- lifecycle

    async def aclose(self) -> None:
        """Let the batch in progress finish (bounded by the call timeout), then close the client."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), self.settings.whatsapp_timeout_seconds)
        except TimeoutError:
            log.warning("whatsapp.close_with_batch_in_progress")
        await self.client.aclose()


def _marker(stored: bytes | None) -> datetime | None:
    """When the call of a "sending" marker was about to be made; None for anything else."""
    if stored is None:
        return None
    seen = orjson.loads(stored)
    if isinstance(seen, dict) and "wamid" not in seen and "sending_at" in seen:
        return datetime.fromisoformat(seen["sending_at"])
    return None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "<record>"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def register(connector: WhatsAppConnector) -> WhatsAppConnector:
    """Add the connector's agent and its start/stop hooks to its app; the connector's
    `shell` is what it needs of faust's and aiokafka's internals (shell.py)."""
    app, requests_topic = connector.app, connector.requests_topic

    async def whatsapp_connector(stream: faust.StreamT[Any]) -> None:
        # Agents get a faust.Stream; StreamT, its declared type, lacks take_events.
        await connector.process(cast(faust.Stream[Any], stream))

    app.agent(requests_topic, name="whatsapp-connector")(whatsapp_connector)

    class WhatsAppClientCloser(Service):
        """Follows whatsapp-controls while the app runs; closes the HTTP client at the end."""

        async def on_start(self) -> None:
            connector.follower.start()

        async def on_stop(self) -> None:
            await connector.follower.stop()
            await connector.aclose()

    app.service(WhatsAppClientCloser)
    return connector
