"""The WhatsApp connector: a faust agent turning `whatsapp-requests` into calls and DeliveryEvents.

The engine's wiring calls `register(app, ...)`; this module never imports the engine.

How one request is committed (crash-sensitive; read before changing the order):

  Step 1. Look the message id up in the `whatsapp-accepted` table (message id -> wamid,
          changelog-backed). Found: the message was accepted before; re-emit the same
          `accepted` DeliveryEvent and never call the API again.
  Step 2. Policy (connectors.whatsapp.policy): skipped -> a `skipped` DeliveryEvent.
  Step 3. Call the API inside the pacing limits; retry retriable answers with capped
          exponential backoff and jitter, up to WHATSAPP_MAX_RETRIES.
  Step 4. Accepted: write the table entry and wait until the broker has the changelog
          record, right after Meta's answer and before anything else.
  Step 5. Emit the final DeliveryEvent (accepted, failed or skipped) keyed by profile id.
  Step 6. After the whole batch: wait until the broker has every DeliveryEvent, then ack
          the batch's offsets; faust commits acked offsets every commit interval.

A crash after step 4 costs nothing: the request comes back (its offset was not committed),
step 1 finds it and re-emits `accepted` (DeliveryEvent consumers dedupe by message id and
status). The one remaining window is from the moment the request leaves for Meta to the
changelog ack of step 4: a crash inside it sends that message again after the restart.
Only calls in flight at the instant of the crash are exposed, so at most
WHATSAPP_MAX_IN_FLIGHT messages, in practice rate x (Meta's round trip + a few ms).
Closing it completely would need an idempotency key on Meta's side, which the Cloud API
does not offer; a "sending" marker written before the call would only turn a possible
duplicate into a possible loss. Failed and skipped outcomes are not remembered: a
re-delivered request is evaluated again, which calls Meta again only for failures.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
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

from connectors.whatsapp.client import CloudApiClient, SendOutcome
from connectors.whatsapp.pacing import Pacer
from connectors.whatsapp.policy import check_send, mask_phone
from schemas.deadletter import dead_letter_record
from schemas.messages import (
    DeliveryError,
    DeliveryEvent,
    DeliveryStatus,
    SendRequest,
    SkipReason,
)
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.connector")

COMPONENT = "whatsapp-connector"
ACCEPTED_TABLE = "whatsapp-accepted"
# A message id is only ever re-requested within minutes of the first request (a crash and
# a restart); a month of memory is plenty and keeps the changelog from growing forever.
ACCEPTED_RETENTION_MS = 30 * 24 * 3600 * 1000

SKIP_TITLES: dict[SkipReason, str] = {
    SkipReason.NO_CONSENT: "no WhatsApp opt-in for this profile",
    SkipReason.OPTED_OUT: "the profile opted out of WhatsApp",
    SkipReason.FREQUENCY_CAPPED: "frequency cap reached",
    SkipReason.QUIET_HOURS: "inside quiet hours",
    SkipReason.INVALID_PHONE: "no valid E.164 phone number",
    SkipReason.TEMPLATE_ERROR: "the request has no template (or no text) to send",
    SkipReason.OUTSIDE_WINDOW: "free-form text outside the 24-hour customer-service window",
}

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


def delivery_event(
    request: SendRequest,
    status: DeliveryStatus,
    *,
    occurred_at: datetime,
    wamid: str | None = None,
    error: DeliveryError | None = None,
) -> DeliveryEvent:
    return DeliveryEvent(
        message_id=request.message_id,
        wamid=wamid,
        journey_id=request.journey_id,
        journey_version=request.journey_version,
        activity_id=request.activity_id,
        profile_id=request.profile_id,
        template=request.template,
        language=request.language,
        status=status,
        error=error,
        occurred_at=occurred_at,
    )


def failed_error(outcome: SendOutcome) -> DeliveryError:
    return DeliveryError(
        code=outcome.code, title=outcome.title or "send failed", retriable=outcome.retriable
    )


def skipped_error(reason: SkipReason) -> DeliveryError:
    return DeliveryError(title=SKIP_TITLES[reason], reason=reason)


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


class WhatsAppConnector:
    """Consumes SendRequests, calls the Cloud API within the pacing limits, emits DeliveryEvents."""

    def __init__(
        self,
        app: faust.App,
        *,
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
    ) -> None:
        self.app = app
        self.settings = settings
        self.requests_topic = requests_topic
        self.delivery_topic = delivery_topic
        self.dead_letter_topic = dead_letter_topic
        self.client = client or CloudApiClient(settings)
        self.pacer = pacer or Pacer(
            rate_per_second=settings.whatsapp_rate_per_second,
            max_in_flight=settings.whatsapp_max_in_flight,
        )
        self.backoff = backoff or Backoff()
        self.max_retries = settings.whatsapp_max_retries
        # About a second of traffic per batch: big enough that the pause between batches is
        # small next to the batch, small enough that a batch commits often.
        self.batch_size = batch_size or max(
            settings.whatsapp_max_in_flight, min(1000, int(settings.whatsapp_rate_per_second))
        )
        self.batch_within = batch_within
        self.clock = clock
        self.accepted = app.Table(
            ACCEPTED_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=requests_topic.partitions or settings.topic_partitions,
            extra_topic_configs={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(ACCEPTED_RETENTION_MS),
            },
            help="WhatsApp message id -> wamid of every message Meta accepted",
        )
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # -- the agent

    async def process(self, stream: faust.Stream[Any]) -> None:
        async for events in stream.take_events(self.batch_size, within=self.batch_within):
            self._idle.clear()
            try:
                await self.handle_batch(events)
            finally:
                self._idle.set()

    async def handle_batch(self, events: Sequence[faust.EventT[Any]]) -> None:
        started = time.monotonic()
        pending: list[Awaitable[Any]] = []
        groups: dict[str, list[_Item]] = {}
        for event in events:
            item = await self._parse(event, pending)
            if item is not None:
                groups.setdefault(item.request.message_id, []).append(item)
        # The same message id twice in one batch: handle the copies one after the other,
        # so the second finds the first in the table instead of calling Meta again.
        results = await asyncio.gather(
            *(self._handle_group(group, pending) for group in groups.values())
        )
        # Step 6: every DeliveryEvent and dead letter is on the broker before offsets are acked.
        await asyncio.gather(*pending)
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
        return _Item(request, origin, raw)

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

    async def _handle_group(self, group: list[_Item], pending: list[Awaitable[Any]]) -> list[str]:
        statuses = []
        for item in group:
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
        stored = self.accepted.get(table_key)
        if stored is not None:
            seen = orjson.loads(stored)
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
            OUTCOMES.labels(status="duplicate").inc()
            return "duplicate"

        # Step 2: policy.
        reason = check_send(request, now=self.clock())
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
                error=skipped_error(reason),
            )
            await self._emit(event, pending)
            OUTCOMES.labels(status="skipped").inc()
            return "skipped"

        # Step 3: call, with retries.
        outcome = await self.send_with_retries(request)
        now = self.clock()
        if outcome.accepted:
            assert outcome.wamid is not None
            # Step 4: remember it before anything else, and wait for the broker to have it.
            stored = orjson.dumps({"wamid": outcome.wamid, "at": now.isoformat()})
            self.accepted.data[table_key] = stored
            await self.accepted.send_changelog(partition, table_key, stored)
            event = delivery_event(
                request, DeliveryStatus.ACCEPTED, wamid=outcome.wamid, occurred_at=now
            )
            status = "accepted"
        else:
            event = delivery_event(
                request, DeliveryStatus.FAILED, occurred_at=now, error=failed_error(outcome)
            )
            status = "failed"
        # Step 5.
        await self._emit(event, pending)
        OUTCOMES.labels(status=status).inc()
        return status

    async def send_with_retries(self, request: SendRequest) -> SendOutcome:
        number = self.client.phone_number_id(request)
        attempt = 0
        while True:
            async with self.pacer.slot(number):
                outcome = await self.client.send(request)
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
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    async def _emit(self, event: DeliveryEvent, pending: list[Awaitable[Any]]) -> None:
        pending.append(
            await self.delivery_topic.send(
                key=event.profile_id.encode(),
                value=event.model_dump_json().encode(),
                key_serializer="raw",
                value_serializer="raw",
                force=True,
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


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "<record>"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def register(
    app: faust.App,
    *,
    requests_topic: faust.TopicT,
    delivery_topic: faust.TopicT,
    dead_letter_topic: faust.TopicT,
    settings: Settings,
    **options: Any,
) -> WhatsAppConnector:
    """Add the WhatsApp connector's agent, table and shutdown hook to `app`.

    `options` are passed to WhatsAppConnector (client, pacer, backoff, batch_size, ...).
    """
    connector = WhatsAppConnector(
        app,
        requests_topic=requests_topic,
        delivery_topic=delivery_topic,
        dead_letter_topic=dead_letter_topic,
        settings=settings,
        **options,
    )

    async def whatsapp_connector(stream: faust.StreamT[Any]) -> None:
        # Agents get a faust.Stream; StreamT, its declared type, lacks take_events.
        await connector.process(cast(faust.Stream[Any], stream))

    app.agent(requests_topic, name="whatsapp-connector")(whatsapp_connector)

    class WhatsAppClientCloser(Service):
        """Closes the connector's HTTP client when the app stops."""

        async def on_stop(self) -> None:
            await connector.aclose()

    app.service(WhatsAppClientCloser)
    return connector
