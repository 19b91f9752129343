"""The WhatsApp webhook receiver: Meta's signed callbacks in, DeliveryEvents and ProfileEvents out.

Runs as its own process (`run_webhook`); `build_webhook_app` gives the aiohttp app for tests.

Statuses (sent, delivered, read, failed) become DeliveryEvents on delivery-events, keyed by
profile id. The journey step is found from `biz_opaque_callback_data`, which the client
sets on every send; when it is missing or incomplete, from a bounded map wamid -> step that
the receiver builds by following the `accepted` DeliveryEvents on delivery-events. A status
of a wamid neither knows (after a short grace, as the `accepted` event may still be on its
way) goes to the dead-letter topic; Meta still gets a 200, or it would retry for days.
Replays (the same wamid and status again) are not re-emitted; the memory of what was
seen is bounded, and older replays fall to the consumers' own dedupe by (message_id, status).

Inbound messages become `whatsapp.inbound` ProfileEvents (event_id `wa-inbound:<wamid>`) on
profile-events, keyed by the profile id that `profile-phones` (a compacted topic, key E.164
phone, value {"profile_id": ...}, written by the engine) gives for the sender's phone. The
receiver reads that topic to its end before it serves and keeps following it. A phone it
does not know is its own profile id: the E.164 phone, so a stranger's first message still
reaches the engine, under a profile the engine can merge later.

Keywords: the whole message, trimmed, case- and accent-insensitive, punctuation around it
ignored ("stop", "Stop.", "BAJA", "báJa"), against WHATSAPP_OPT_OUT_WORDS / _OPT_IN_WORDS /
_HELP_WORDS. Opt-out and opt-in also publish a `profile.updated` ProfileEvent with
`whatsapp_consent`; all three ask the connector for the configured reply as free-form text
(message id `wa-reply:<wamid>`, so a replayed webhook never replies twice). The reply is
allowed inside the 24-hour window whatever the consent (see connectors.whatsapp.policy):
the confirmation of a STOP is what Meta's policy expects.

Account webhooks (template status, quality and category, user_preferences, the
messaging-limit tier) and 131049/131050 in failed statuses become records on
whatsapp-controls (connectors.whatsapp.account_webhooks); statuses carry Meta's `pricing`
into their DeliveryEvents.

Every record of one webhook is on the broker before Meta gets its 200; when Kafka fails the
answer is 503 and Meta delivers the webhook again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import orjson
import phonenumbers
import structlog
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from connectors.kafka import CompactedFollower, acknowledged_producer, partitions_of, reader
from connectors.whatsapp import account_webhooks
from connectors.whatsapp.client import RETRIABLE_CODES
from connectors.whatsapp.policy import Keyword, keyword_rules
from connectors.whatsapp.signature import verify
from schemas.common import mask_phone, normalize_e164
from schemas.deadletter import dead_letter_record
from schemas.events import ConsentStatus, ProfileAttributes, ProfileEvent
from schemas.messages import DeliveryError, DeliveryEvent, DeliveryStatus, Pricing, SendRequest
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.webhook")

COMPONENT = "whatsapp-webhook"
PATH = "/webhooks/whatsapp"
KEYWORD_JOURNEY = "whatsapp-keywords"
STATUSES = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
}
CONSENT_AFTER: dict[Keyword, ConsentStatus] = {
    Keyword.OPT_OUT: "opted_out",
    Keyword.OPT_IN: "opted_in",
}

WEBHOOKS = Counter(
    "whatsapp_webhooks_total",
    "Webhook POSTs by answer (ok, unsigned, bad_json, too_large, dead_letter, kafka_error)",
    ["result"],
)
WEBHOOK_RECORDS = Counter(
    "whatsapp_webhook_records_total",
    "Statuses and inbound messages by what the receiver did (unknown_wamid: dead-lettered)",
    ["kind", "result"],
)

K = TypeVar("K")
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """A dict that forgets its least recently used entries beyond `capacity`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)


@dataclass(frozen=True, slots=True)
class StepRef:
    """Which journey step a wamid belongs to: enough to build a DeliveryEvent."""

    message_id: str
    journey_id: str
    journey_version: int
    activity_id: str
    profile_id: str
    template: str | None = None
    language: str | None = None

    @classmethod
    def from_callback_data(cls, raw: object) -> StepRef | None:
        if not isinstance(raw, str) or not raw:
            return None
        try:
            data = orjson.loads(raw)
            return cls(
                message_id=str(data["message_id"]),
                journey_id=str(data["journey_id"]),
                journey_version=int(data["journey_version"]),
                activity_id=str(data["activity_id"]),
                profile_id=str(data["profile_id"]),
                template=data.get("template"),
                language=data.get("language"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None  # not ours, or trimmed to fit 512 chars: fall back to the wamid map


class PhoneDirectory:
    """E.164 phone -> profile id, as the compacted `profile-phones` topic says."""

    def __init__(self) -> None:
        self._profiles: dict[str, str] = {}
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._profiles)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        phone = to_e164(key.decode("utf-8", "replace"))
        if value is None:  # a tombstone: the profile no longer has this phone
            self._profiles.pop(phone, None)
            return
        try:
            profile_id = orjson.loads(value)["profile_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("whatsapp_webhook.bad_phone_record", phone=mask_phone(phone))
            return
        if isinstance(profile_id, str) and profile_id:
            self._profiles[phone] = profile_id

    def profile_for(self, phone: str) -> str:
        """The profile id of this phone; an unknown phone is its own profile id."""
        return self._profiles.get(phone, phone)


def to_e164(raw: str) -> str:
    """Meta's wa_id ('34600111222') as E.164; a number phonenumbers rejects keeps its digits."""
    candidate = raw if raw.startswith("+") else "+" + raw
    try:
        return normalize_e164(candidate)
    except ValueError:
        return candidate


def _timestamp(raw: object, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(raw)), UTC)
    except (TypeError, ValueError, OverflowError):
        return fallback


def utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookReceiver:
    """The receiver's state and handlers; `build_webhook_app` wires it into aiohttp."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        *,
        clock: Callable[[], datetime] = utcnow,
        wamid_capacity: int = 200_000,
        seen_capacity: int = 200_000,
        unknown_wamid_grace: float = 2.0,
        delivery_lookback: timedelta = timedelta(hours=1),
    ) -> None:
        self.settings = settings
        self.producer = producer
        self.clock = clock
        self.phones = PhoneDirectory()
        self.steps: BoundedMap[str, StepRef] = BoundedMap(wamid_capacity)
        self.seen: BoundedMap[tuple[str, str], bool] = BoundedMap(seen_capacity)
        self.unknown_wamid_grace = unknown_wamid_grace
        self.delivery_lookback = delivery_lookback
        self.keywords, self.replies = keyword_rules(settings)
        secret = settings.whatsapp_app_secret
        self._app_secret = secret.get_secret_value() if secret is not None else ""
        verify_token = settings.whatsapp_verify_token
        self._verify_token = verify_token.get_secret_value() if verify_token is not None else ""
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[AIOKafkaConsumer] = []
        self._phones: CompactedFollower | None = None

    # -- HTTP handlers

    async def handle_verify(self, request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo hub.challenge when the verify token matches."""
        query = request.query
        token = query.get("hub.verify_token", "")
        if (
            query.get("hub.mode") == "subscribe"
            and self._verify_token
            and hmac.compare_digest(token.encode(), self._verify_token.encode())
        ):
            return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")
        log.warning("whatsapp_webhook.verification_refused", mode=query.get("hub.mode"))
        return web.Response(status=403, text="verification failed")

    async def handle_health(self, request: web.Request) -> web.Response:
        ready = self.phones.loaded.is_set() and all(not t.done() for t in self._tasks)
        body = {"status": "ok" if ready else "starting", "phones": len(self.phones)}
        return web.json_response(body, status=200 if ready else 503)

    async def handle_post(self, request: web.Request) -> web.Response:
        limit = self.settings.webhook_max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            WEBHOOKS.labels(result="too_large").inc()
            return web.Response(status=413, text="body too large")
        try:
            body = await request.read()  # the app's client_max_size caps this too
        except web.HTTPRequestEntityTooLarge:
            WEBHOOKS.labels(result="too_large").inc()
            return web.Response(status=413, text="body too large")
        if not self._app_secret:
            log.error("whatsapp_webhook.no_app_secret", action="set WHATSAPP_APP_SECRET")
            WEBHOOKS.labels(result="unsigned").inc()
            return web.Response(status=401, text="signature cannot be checked")
        if not verify(self._app_secret, body, request.headers.get("X-Hub-Signature-256")):
            WEBHOOKS.labels(result="unsigned").inc()
            log.warning("whatsapp_webhook.bad_signature", bytes=len(body))
            return web.Response(status=401, text="bad signature")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            WEBHOOKS.labels(result="bad_json").inc()
            return web.Response(status=400, text="body is not JSON")
        if not isinstance(payload, dict):
            WEBHOOKS.labels(result="bad_json").inc()
            return web.Response(status=400, text="body is not a JSON object")
        try:
            try:
                await self.process(payload)
            except KafkaError:
                raise
            except Exception as exc:
                # A payload this receiver cannot handle: keep it for operators, and answer
                # 200, as Meta would deliver the same payload again and again.
                log.exception("whatsapp_webhook.unprocessable")
                WEBHOOKS.labels(result="dead_letter").inc()
                record = dead_letter_record(
                    reason=f"unprocessable webhook: {exc!r}",
                    error_type=type(exc).__name__,
                    component=COMPONENT,
                    key=None,
                    value=body,
                    now=self.clock(),
                )
                await (await self.producer.send(self.settings.topic_dead_letter, record))
                return web.Response(text="OK")
        except KafkaError:
            # Kafka is unreachable or refused a record: Meta will deliver this webhook again.
            log.exception("whatsapp_webhook.produce_failed")
            WEBHOOKS.labels(result="kafka_error").inc()
            return web.Response(status=503, text="try again later")
        WEBHOOKS.labels(result="ok").inc()
        return web.Response(text="OK")

    # -- payload processing

    async def process(self, payload: dict[str, Any]) -> None:
        """Produce everything one webhook carries; return once the broker has all of it."""
        pending: list[Awaitable[Any]] = []
        marks: list[tuple[str, str]] = []
        # One grace period per webhook, however many unknown wamids it carries.
        deadline = time.monotonic() + self.unknown_wamid_grace
        for value in _change_values(payload):
            phone_number_id = str((value.get("metadata") or {}).get("phone_number_id") or "")
            for status in value.get("statuses") or ():
                if isinstance(status, dict):
                    await self._status(status, deadline, pending, marks)
            for message in value.get("messages") or ():
                if isinstance(message, dict):
                    await self._inbound(message, phone_number_id, pending, marks)
        now = self.clock()
        for field, value in account_webhooks.changes(payload):
            if field in account_webhooks.FIELDS:
                for key, record in account_webhooks.control_records(
                    field, value, lambda wa_id: self.phones.profile_for(to_e164(wa_id)), now
                ):
                    await self._send(pending, self.settings.topic_whatsapp_controls, key, record)
                WEBHOOK_RECORDS.labels(kind=field, result="ok").inc()
                log.info("whatsapp_webhook.account", field=field)
        await asyncio.gather(*pending)
        # Only what reached the broker counts as seen: a failed webhook is retried whole.
        for mark in marks:
            self.seen.put(mark, True)

    async def _send(
        self, pending: list[Awaitable[Any]], topic: str, key: bytes, value: bytes | None
    ) -> None:
        pending.append(await self.producer.send(topic, value, key=key))

    async def _status(
        self,
        status: dict[str, Any],
        deadline: float,
        pending: list[Awaitable[Any]],
        marks: list[tuple[str, str]],
    ) -> None:
        wamid, name = status.get("id"), status.get("status")
        kind = STATUSES.get(str(name))
        if not isinstance(wamid, str) or kind is None:
            WEBHOOK_RECORDS.labels(kind="status", result="ignored").inc()
            log.info("whatsapp_webhook.status_ignored", status=name)
            return
        mark = (wamid, kind.value)
        if mark in self.seen or mark in marks:
            WEBHOOK_RECORDS.labels(kind="status", result="replay").inc()
            return
        step = StepRef.from_callback_data(status.get("biz_opaque_callback_data"))
        if step is None:
            step = await self._step_for(wamid, deadline)
        now = self.clock()
        if step is None:
            WEBHOOK_RECORDS.labels(kind="status", result="unknown_wamid").inc()
            log.warning("whatsapp_webhook.unknown_wamid", wamid=wamid, status=kind.value)
            record = dead_letter_record(
                reason="unknown wamid",
                error_type="UnknownWamid",
                component=COMPONENT,
                key=wamid.encode(),
                value=orjson.dumps(status),
                now=now,
            )
            await self._send(pending, self.settings.topic_dead_letter, wamid.encode(), record)
            marks.append(mark)
            return
        error = None
        if kind is DeliveryStatus.FAILED:
            first = (status.get("errors") or [{}])[0]
            code = first.get("code") if isinstance(first, dict) else None
            code = code if isinstance(code, int) else None
            title = (first.get("title") if isinstance(first, dict) else None) or "failed"
            error = DeliveryError(code=code, title=str(title), retriable=code in RETRIABLE_CODES)
            for control, flag in account_webhooks.status_error_records(step.profile_id, code, now):
                await self._send(pending, self.settings.topic_whatsapp_controls, control, flag)
        event = DeliveryEvent(
            message_id=step.message_id,
            wamid=wamid,
            journey_id=step.journey_id,
            journey_version=step.journey_version,
            activity_id=step.activity_id,
            profile_id=step.profile_id,
            template=step.template,
            language=step.language,
            status=kind,
            error=error,
            pricing=_pricing(status.get("pricing")),
            country_code=_country_code(status) if "pricing" in status else None,
            occurred_at=_timestamp(status.get("timestamp"), now),
        )
        key = step.profile_id.encode()
        await self._send(
            pending, self.settings.topic_delivery_events, key, event.model_dump_json().encode()
        )
        marks.append(mark)
        WEBHOOK_RECORDS.labels(kind="status", result=kind.value).inc()

    async def _step_for(self, wamid: str, deadline: float) -> StepRef | None:
        """The wamid map's answer, waiting briefly: Meta's `sent` can beat our `accepted`."""
        while True:
            step = self.steps.get(wamid)
            if step is not None or time.monotonic() >= deadline:
                return step
            await asyncio.sleep(0.05)

    async def _inbound(
        self,
        message: dict[str, Any],
        phone_number_id: str,
        pending: list[Awaitable[Any]],
        marks: list[tuple[str, str]],
    ) -> None:
        wamid, sender = message.get("id"), message.get("from")
        if not isinstance(wamid, str) or not isinstance(sender, str):
            WEBHOOK_RECORDS.labels(kind="inbound", result="ignored").inc()
            return
        mark = (wamid, "inbound")
        if mark in self.seen or mark in marks:
            WEBHOOK_RECORDS.labels(kind="inbound", result="replay").inc()
            return
        now = self.clock()
        received_at = _timestamp(message.get("timestamp"), now)
        phone = to_e164(sender)
        profile_id = self.phones.profile_for(phone)
        text = _message_text(message)
        context = message.get("context")
        event = ProfileEvent(
            event_id=f"wa-inbound:{wamid}",
            type="whatsapp.inbound",
            profile_id=profile_id,
            occurred_at=received_at,
            data={
                "text": text,
                "wamid": wamid,
                "context": context.get("id") if isinstance(context, dict) else None,
                "from": phone,
            },
        )
        key = profile_id.encode()
        topic = self.settings.topic_profile_events
        await self._send(pending, topic, key, event.model_dump_json(exclude_none=True).encode())
        keyword = self.keywords.match(text)
        log.info(
            "whatsapp_webhook.inbound",
            sender=mask_phone(phone),
            known=profile_id != phone,
            keyword=keyword.value if keyword else None,
        )
        WEBHOOK_RECORDS.labels(kind="inbound", result=keyword.value if keyword else "message").inc()
        if keyword is not None:
            consent = CONSENT_AFTER.get(keyword)
            if consent is not None:
                update = ProfileEvent(
                    event_id=f"wa-consent:{wamid}",
                    type="profile.updated",
                    profile_id=profile_id,
                    occurred_at=received_at,
                    attributes=ProfileAttributes(whatsapp_consent=consent),
                )
                body = update.model_dump_json(exclude_none=True).encode()
                await self._send(pending, topic, key, body)
            reply = SendRequest(
                message_id=f"wa-reply:{wamid}",
                journey_id=KEYWORD_JOURNEY,
                journey_version=0,
                activity_id=keyword.value,
                profile_id=profile_id,
                kind="text",
                to=phone,
                consent=consent or "unknown",
                text=self.replies[keyword],
                phone_number_id=phone_number_id or None,
                requested_at=now,
                trigger_at=received_at,
            )
            await self._send(
                pending,
                self.settings.topic_whatsapp_requests,
                key,
                reply.model_dump_json().encode(),
            )
        marks.append(mark)

    # -- following Kafka

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        partitions = await partitions_of(self.settings, topic)
        if not partitions:
            raise RuntimeError(f"topic {topic!r} does not exist: create the topics first")
        return [TopicPartition(topic, p) for p in partitions]

    async def start(self) -> None:
        """Load `profile-phones` to its end, then follow it and the `accepted` DeliveryEvents."""
        delivery_tps = await self._partitions(self.settings.topic_delivery_events)
        phones = CompactedFollower(
            self.settings, self.settings.topic_profile_phones, self.phones.apply
        )
        self._phones = phones
        if not await phones.start():
            raise RuntimeError(f"topic {phones.topic!r} does not exist: create the topics first")
        await phones.catch_up()
        self.phones.loaded.set()
        log.info("whatsapp_webhook.phones_loaded", phones=len(self.phones))

        deliveries = reader(self.settings, auto_offset_reset="earliest")
        self._consumers = [deliveries]
        await deliveries.start()
        deliveries.assign(delivery_tps)
        since = int((time.time() - self.delivery_lookback.total_seconds()) * 1000)
        offsets = await deliveries.offsets_for_times(dict.fromkeys(delivery_tps, since))
        for tp in delivery_tps:
            found = offsets.get(tp)
            if found is None:
                await deliveries.seek_to_end(tp)
            else:
                deliveries.seek(tp, found.offset)

        self._tasks = [
            asyncio.create_task(phones.follow(), name="follow-phones"),
            asyncio.create_task(self._follow(deliveries, self._learn_step), name="follow-accepted"),
        ]

    async def _follow(
        self, consumer: AIOKafkaConsumer, apply: Callable[[bytes | None, bytes | None], None]
    ) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for record in records:
                    apply(record.key, record.value)

    def _learn_step(self, key: bytes | None, value: bytes | None) -> None:
        if value is None or b'"accepted"' not in value:  # skip other statuses without parsing
            return
        try:
            event = DeliveryEvent.model_validate_json(value)
        except ValueError:
            return
        if event.status is DeliveryStatus.ACCEPTED and event.wamid:
            self.steps.put(
                event.wamid,
                StepRef(
                    message_id=event.message_id,
                    journey_id=event.journey_id,
                    journey_version=event.journey_version,
                    activity_id=event.activity_id,
                    profile_id=event.profile_id,
                    template=event.template,
                    language=event.language,
                ),
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self._consumers:
            await consumer.stop()
        if self._phones is not None:
            await self._phones.stop()
        self._tasks, self._consumers, self._phones = [], [], None


def _change_values(payload: dict[str, Any]) -> list[dict[str, Any]]:
    values = []
    for entry in payload.get("entry") or ():
        if not isinstance(entry, dict):
            continue
        for change in entry.get("changes") or ():
            if isinstance(change, dict) and isinstance(change.get("value"), dict):
                values.append(change["value"])
    return values


def _pricing(raw: object) -> Pricing | None:
    """Meta's pricing object as the DeliveryEvent carries it; None when absent or malformed."""
    if not isinstance(raw, dict):
        return None
    try:
        return Pricing.model_validate({k: v for k, v in raw.items() if k in Pricing.model_fields})
    except ValueError:
        return None


def _country_code(status: dict[str, Any]) -> str | None:
    """The recipient's country calling code from Meta's recipient_id (digits), if it parses."""
    try:
        number = phonenumbers.parse("+" + str(status.get("recipient_id", "")), None)
    except phonenumbers.NumberParseException:
        return None
    return str(number.country_code) if number.country_code else None


def _message_text(message: dict[str, Any]) -> str | None:
    """What the person wrote or tapped: text body, button text, or interactive reply title."""
    for field, inner in (("text", "body"), ("button", "text")):
        part = message.get(field)
        if isinstance(part, dict) and isinstance(part.get(inner), str):
            return str(part[inner])
    interactive = message.get("interactive")
    if isinstance(interactive, dict):
        for reply in ("button_reply", "list_reply"):
            part = interactive.get(reply)
            if isinstance(part, dict) and isinstance(part.get("title"), str):
                return str(part["title"])
    return None


RECEIVER: web.AppKey[WebhookReceiver] = web.AppKey("whatsapp_webhook_receiver", WebhookReceiver)


def build_webhook_app(
    settings: Settings, producer: AIOKafkaProducer, **options: Any
) -> web.Application:
    """The receiver as an aiohttp app; it starts its Kafka followers on startup.

    `producer` must be started (and is stopped) by the caller; `options` go to WebhookReceiver.
    """
    receiver = WebhookReceiver(settings, producer, **options)
    app = web.Application(client_max_size=settings.webhook_max_body_bytes)
    app[RECEIVER] = receiver

    async def followers(app: web.Application) -> AsyncIterator[None]:
        try:
            await receiver.start()
        except BaseException:
            await receiver.stop()
            raise
        yield
        await receiver.stop()

    app.cleanup_ctx.append(followers)
    app.router.add_get(PATH, receiver.handle_verify)
    app.router.add_post(PATH, receiver.handle_post)
    app.router.add_get("/healthz", receiver.handle_health)
    return app


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """The receiver's one producer: every record acknowledged by all replicas, no duplicates."""
    return acknowledged_producer(settings)


async def run_webhook(settings: Settings) -> None:
    """Serve the receiver on WEBHOOK_HOST:WEBHOOK_PORT until cancelled."""
    producer = new_producer(settings)
    await producer.start()
    runner: web.AppRunner | None = None
    try:
        # No access log: query strings of the verification handshake carry the verify token.
        runner = web.AppRunner(build_webhook_app(settings, producer), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.webhook_host, settings.webhook_port)
        await site.start()
        log.info(
            "whatsapp_webhook.listening",
            host=settings.webhook_host,
            port=settings.webhook_port,
            path=PATH,
        )
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await producer.stop()
