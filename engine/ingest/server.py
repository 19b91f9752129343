"""`POST /v1/events`: profile events over HTTP, validated as the engine validates them and
produced to profile-events keyed by profile id on the engine's murmur2 partition.

A 202 is sent only once Kafka has acknowledged every accepted event (acks=all): the
server keeps nothing, so any number of replicas can run, and a client that got no 202
sends the batch again (the engine drops the events it already has by event id).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from connectors.kafka import acknowledged_producer
from engine.core.admission import InvalidEvent, admit_profile_event
from engine.ingest.openapi import openapi_document
from engine.streaming.produce import produce_batched
from schemas.ingest import MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from schemas.settings import Settings

log = structlog.get_logger(__name__)

PATH = "/v1/events"
NDJSON = "application/x-ndjson"

EVENTS_ACCEPTED = Counter(
    "ingest_events_accepted_total", "Events acknowledged by Kafka and answered with a 202"
)
EVENTS_REJECTED = Counter(
    "ingest_events_rejected_total", "Events rejected by index in a 202 answer", ["reason"]
)
REQUESTS = Counter("ingest_requests_total", "Requests to POST /v1/events by status", ["status"])
REQUEST_SECONDS = Histogram(
    "ingest_request_seconds",
    "Time from a request's arrival to its answer (a 202 includes Kafka's acknowledgement)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# A rejection's reason label: the engine's reasons, by their first words (few values).
_REASON_LABELS = (
    ("malformed JSON", "malformed_json"),
    ("empty record value", "empty"),
    ("event too large", "too_large"),
    ("invalid profile event", "invalid"),
)


def reason_label(error: str) -> str:
    """The metric label of a rejection reason: the engine's reason without its details."""
    for prefix, label in _REASON_LABELS:
        if error.startswith(prefix):
            return label
    return "too_new" if "check the sender's clock" in error else "too_old"


class IngestApi:
    """The request handlers, over one started producer (owned by the caller)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        if settings.ingest_api_token is None or not settings.ingest_api_token.get_secret_value():
            raise ValueError("INGEST_API_TOKEN is not set: the ingestion API will not start")
        self.settings = settings
        self.producer = producer
        self.topic = settings.topic_profile_events
        self._expected = f"Bearer {settings.ingest_api_token.get_secret_value()}".encode()
        self._max_age = timedelta(days=settings.max_event_age_days)
        self._max_future = timedelta(seconds=settings.max_event_future_seconds)
        self._retry_after = str(max(1, round(settings.ingest_produce_timeout_seconds / 2)))
        self._hashes: dict[bytes, int] = {}

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return hmac.compare_digest(given, self._expected)

    async def handle_events(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._events(request)
        finally:
            REQUEST_SECONDS.observe(time.perf_counter() - started)
        REQUESTS.labels(status=str(response.status)).inc()
        return response

    async def _events(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(
                401,
                "missing or wrong bearer token (Authorization: Bearer <INGEST_API_TOKEN>)",
                headers={"WWW-Authenticate": 'Bearer realm="ingest"'},
            )
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            return _too_large()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
        items = _ndjson_items(body) if request.content_type == NDJSON else _json_items(body)
        if isinstance(items, web.Response):
            return items
        if len(items) > MAX_EVENTS_PER_REQUEST:
            return _error(413, f"{len(items)} events: at most {MAX_EVENTS_PER_REQUEST} per request")
        now = datetime.now(UTC)
        records: list[tuple[str, bytes | None, bytes | None]] = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(items):
            try:
                event = admit_profile_event(
                    raw, now, max_age=self._max_age, max_future=self._max_future
                )
            except InvalidEvent as exc:
                rejected.append({"index": index, "event_id": _event_id(raw), "error": exc.reason})
                EVENTS_REJECTED.labels(reason=reason_label(exc.reason)).inc()
                continue
            records.append((self.topic, event.profile_id.encode(), raw))
        if records:
            try:
                async with asyncio.timeout(self.settings.ingest_produce_timeout_seconds):
                    futures = await produce_batched(self.producer, records, hashes=self._hashes)
                    await asyncio.gather(*futures)
            except (TimeoutError, KafkaError) as exc:
                log.warning("ingest.kafka_unavailable", error=f"{type(exc).__name__}: {exc}")
                return _error(
                    503,
                    "Kafka did not acknowledge the events in time; none is known to be "
                    "stored: send the batch again (the engine drops duplicates by event_id)",
                    headers={"Retry-After": self._retry_after},
                )
            EVENTS_ACCEPTED.inc(len(records))
        return web.json_response(
            {"accepted": len(records), "rejected": rejected}, status=202, dumps=_dumps
        )

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, dumps=_dumps)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def handle_openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(), dumps=_dumps)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers, dumps=_dumps)


def _too_large() -> web.Response:
    return _error(413, f"body over {MAX_REQUEST_BYTES} bytes: split the batch")


def _json_items(body: bytes) -> list[bytes] | web.Response:
    """Each event of `{"events": [...]}` as the JSON bytes the engine would read."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, f'body is not JSON ({exc}); send {{"events": [...]}} or NDJSON')
    events = parsed.get("events") if isinstance(parsed, dict) else None
    if not isinstance(events, list):
        return _error(400, 'body must be {"events": [event, ...]}')
    return [orjson.dumps(event) for event in events]


def _ndjson_items(body: bytes) -> list[bytes] | web.Response:
    """One event per non-blank line; a line that is not JSON is rejected by its index."""
    items = [line.strip() for line in body.split(b"\n")]
    items = [line for line in items if line]
    if not items:
        return _error(400, "empty NDJSON body: one event per line")
    return items


def _event_id(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    return event_id if isinstance(event_id, str) else None


def new_producer(settings: Settings) -> AIOKafkaProducer:
    """`acknowledged_producer`; a request gives up (503) after
    INGEST_PRODUCE_TIMEOUT_SECONDS."""
    return acknowledged_producer(
        settings,
        linger_ms=2,
        request_timeout_ms=int(settings.ingest_produce_timeout_seconds * 1000),
    )


def build_ingest_app(settings: Settings, producer: AIOKafkaProducer) -> web.Application:
    """The API as an aiohttp app; `producer` must be started (and stopped) by the caller.

    The topic's partition count is read on startup, so each event goes to its key's
    murmur2 partition as the engine checks it."""
    api = IngestApi(settings, producer)
    # The limit counts the body only; 413 comes from IngestApi before the limit applies.
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)

    async def metadata(app: web.Application) -> AsyncIterator[None]:
        await producer.partitions_for(settings.topic_profile_events)
        yield

    app.cleanup_ctx.append(metadata)
    app.router.add_post(PATH, api.handle_events)
    app.router.add_get("/healthz", api.handle_health)
    app.router.add_get("/metrics", api.handle_metrics)
    app.router.add_get("/openapi.json", api.handle_openapi)
    return app


async def run_ingest(settings: Settings) -> None:
    """Serve the API on INGEST_HOST:INGEST_PORT until cancelled."""
    producer = new_producer(settings)
    await producer.start()
    runner: web.AppRunner | None = None
    try:
        runner = web.AppRunner(build_ingest_app(settings, producer), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.ingest_host, settings.ingest_port)
        await site.start()
        log.info("ingest.listening", host=settings.ingest_host, port=settings.ingest_port)
        await asyncio.Event().wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await producer.stop()
