"""Executes the engine's HTTP custom actions and answers with `http.response` events.

At-least-once: a call replayed after a crash is made again, so every request carries
an `Idempotency-Key` header (the deterministic request id) for the receiver to dedupe.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import faust
import httpx
import orjson
import structlog

from schemas.deadletter import dead_letter_record
from schemas.settings import Settings

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 16 * 1024  # bigger answers are not kept in the event, only their status
RESPONSE_EVENT = "http.response"
CONCURRENCY = 16


def response_event(call: dict[str, Any], status: int | None, body: Any, error: str | None) -> bytes:
    """The `http.response` profile event that resumes the waiting instance."""
    ok = status is not None and 200 <= status < 300
    return orjson.dumps(
        {
            "event_id": f"http:{call['request_id']}",
            "type": RESPONSE_EVENT,
            "profile_id": call["profile_id"],
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {
                "request_id": call["request_id"],
                "ok": ok,
                "status": status,
                "body": body,
                "error": error,
            },
        }
    )


def _parse_body(response: httpx.Response) -> Any:
    if len(response.content) > MAX_RESPONSE_BYTES:
        return None
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return response.text[:1000]


class HttpActionConnector:
    def __init__(self, settings: Settings) -> None:
        self.client = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=CONCURRENCY),
            headers={"User-Agent": "journey-engine/0.1"},
        )

    async def call(self, call: dict[str, Any]) -> bytes:
        """Make the call; any failure becomes a response with ok=false and the reason."""
        try:
            response = await self.client.request(
                call["method"],
                call["url"],
                json=call["body"] if call["method"] not in ("GET", "DELETE") else None,
                headers={"Idempotency-Key": call["request_id"]},
                timeout=float(call["timeout_seconds"]),
            )
        except httpx.TimeoutException:
            return response_event(call, None, None, "timeout")
        except httpx.HTTPError as exc:
            return response_event(call, None, None, f"{type(exc).__name__}: {exc}"[:300])
        log.info(
            "custom action answered",
            journey_id=call["journey_id"],
            activity_id=call["activity_id"],
            status=response.status_code,
        )
        return response_event(call, response.status_code, _parse_body(response), None)

    async def aclose(self) -> None:
        await self.client.aclose()


def register(
    app: faust.App,
    *,
    requests_topic: faust.TopicT,
    profile_events_topic: faust.TopicT,
    dead_letter_topic: faust.TopicT,
    settings: Settings,
) -> HttpActionConnector:
    """Add the agent that runs custom actions to the app."""
    connector = HttpActionConnector(settings)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def handle(key: bytes | None, value: bytes | None) -> None:
        try:
            call = orjson.loads(value or b"")
            for field in ("request_id", "profile_id", "method", "url", "body", "timeout_seconds"):
                call[field]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            record = dead_letter_record(
                reason=f"invalid custom action request: {exc!r}"[:300],
                error_type=type(exc).__name__,
                component="http-actions",
                key=key,
                value=value,
                now=datetime.now(UTC),
                source_topic=requests_topic.get_topic_name(),
            )
            await dead_letter_topic.send(key=key, value=record)
            return
        async with semaphore:
            answer = await connector.call(call)
        await profile_events_topic.send(key=call["profile_id"].encode(), value=answer)

    async def agent(stream: faust.StreamT[bytes]) -> None:
        # Calls are independent, so they run side by side; each record is acked after
        # its answer is produced (faust commits offsets only below the oldest unacked).
        async for event in stream.events():
            await handle(event.key, event.value)

    app.agent(requests_topic, name="http-actions", concurrency=CONCURRENCY)(agent)

    @app.service
    class _Closer(faust.Service):
        async def on_stop(self) -> None:
            await connector.aclose()

    return connector
