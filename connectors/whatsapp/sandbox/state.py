"""What the sandbox remembers between requests, and small HTTP helpers every room uses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import structlog
from aiohttp import web

from connectors.ratelimit import TokenBucket
from connectors.whatsapp.sandbox.config import SandboxConfig
from schemas.templates import Template

log = structlog.get_logger("connectors.whatsapp.sandbox")


@dataclass(slots=True)
class SentMessage:
    """One accepted outbound message, as GET /sandbox/messages shows it."""

    wamid: str
    to: str
    wa_id: str
    phone_number_id: str
    type: str
    text: str
    received_at: float
    template: str | None = None
    language: str | None = None
    category: str | None = None
    biz_opaque_callback_data: str | None = None
    context_wamid: str | None = None
    media: dict[str, str] | None = None
    request: dict[str, Any] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "wamid": self.wamid,
            "to": self.to,
            "wa_id": self.wa_id,
            "phone_number_id": self.phone_number_id,
            "template": self.template,
            "language": self.language,
            "category": self.category,
            "text": self.text,
            "type": self.type,
            "biz_opaque_callback_data": self.biz_opaque_callback_data,
            "context_wamid": self.context_wamid,
            "media": self.media,
            "received_at": iso(self.received_at),
            "statuses": list(self.statuses),
            "errors": list(self.errors),
            "request": self.request,
        }


@dataclass(slots=True)
class Fault:
    status: int | None
    code: int | None
    message: str | None
    delay: float
    remaining: int | None
    until: float | None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "delay_seconds": self.delay,
            "remaining": self.remaining,
            "seconds_left": None if self.until is None else max(0.0, self.until - now),
        }


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    rate_limited: int = 0
    faults_injected: int = 0
    inbound: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    rejected_by_code: dict[int, int] = field(default_factory=dict)
    failed_by_code: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected_by_code": {str(k): v for k, v in sorted(self.rejected_by_code.items())},
            "rate_limited": self.rate_limited,
            "failed_by_code": {str(k): v for k, v in sorted(self.failed_by_code.items())},
            "faults_injected": self.faults_injected,
            "inbound": self.inbound,
            "webhooks": {"delivered": self.webhooks_delivered, "failed": self.webhooks_failed},
        }


@dataclass(slots=True)
class StatusStep:
    status: str
    at: float
    error_code: int | None = None


class SandboxState:
    """Everything the sandbox remembers between requests; lives on the app under STATE."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.templates: dict[tuple[str, str], Template] = {
            (t.name, t.language): t for t in config.templates
        }
        self.messages: list[SentMessage] = []
        self.by_wamid: dict[str, SentMessage] = {}
        self.inbound: list[dict[str, Any]] = []
        self.inbound_ids: set[str] = set()
        self.last_inbound: dict[str, float] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.conversations: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.fault: Fault | None = None
        self.stats = Stats()
        self.clock_offset = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: httpx.AsyncClient | None = None
        self.webhook_slots = asyncio.Semaphore(config.webhook_concurrency)
        self._sequence = 0
        self._unreachable = config.unreachable_ids
        self.messaging_limit = config.messaging_limit
        self.messaging_window = config.messaging_window_seconds
        # wa_id -> when first reached with a template in the current messaging window, oldest
        # first (an entry is never refreshed), so expiry pops from the front: O(1) per send.
        self.reached: OrderedDict[str, float] = OrderedDict()
        # wa_id -> error codes the next sends to that user get (POST /sandbox/recipient-errors)
        self.recipient_errors: dict[str, list[int]] = {}
        self.marketing_stopped: set[str] = set()
        self._template_ids: dict[tuple[str, str], str] = {}

    def template_id(self, template: Template) -> str:
        key = (template.name, template.language)
        if key not in self._template_ids:
            self._template_ids[key] = str(300000000000000 + len(self._template_ids) + 1)
        return self._template_ids[key]

    def reset_account(self) -> None:
        self.messaging_limit = self.config.messaging_limit
        self.messaging_window = self.config.messaging_window_seconds
        self.reached.clear()
        self.recipient_errors.clear()
        self.marketing_stopped.clear()
        self.templates = {(t.name, t.language): t for t in self.config.templates}

    def next_recipient_error(self, wa_id: str) -> int | None:
        codes = self.recipient_errors.get(wa_id)
        if not codes:
            return None
        code = codes.pop(0)
        if not codes:
            del self.recipient_errors[wa_id]
        return code

    def over_messaging_limit(self, wa_id: str) -> bool:
        """Count a template to `wa_id`; True when it is a new user beyond the limit.

        Looks only at the users who left the window, never at all users reached: a send
        must cost the same with a hundred thousand of them as with none.
        """
        now = self.now()
        while self.reached:
            oldest = next(iter(self.reached.values()))
            if now - oldest < self.messaging_window:
                break
            self.reached.popitem(last=False)
        if wa_id in self.reached:
            return False
        if self.messaging_limit is not None and len(self.reached) >= self.messaging_limit:
            return True
        self.reached[wa_id] = now
        return False

    # -- time

    def now(self) -> float:
        return self.config.clock() + self.clock_offset

    # -- ids

    def _hex_id(self, salt: str, length: int) -> str:
        self._sequence += 1
        if self.config.seed is None:
            return secrets.token_hex(length // 2 + 1)[:length].upper()
        seed = f"{self.config.seed}:{salt}:{self._sequence}".encode()
        return hashlib.sha256(seed).hexdigest()[:length].upper()

    def new_wamid(self, wa_id: str, *, inbound: bool = False) -> str:
        # Same layout as real wamids (a length-prefixed phone number and a hex id, base64'd),
        # so connectors that peek into them, or store them in size-limited columns, behave.
        hex_id = self._hex_id("in" if inbound else "out", 32 if inbound else 18)
        marker = b"\x12" if inbound else b"\x11"
        raw = (
            b"\x1c\x18"
            + bytes([len(wa_id)])
            + wa_id.encode()
            + b"\x15\x02\x00"
            + marker
            + b"\x18"
            + bytes([len(hex_id)])
            + hex_id.encode()
            + b"\x00"
        )
        return "wamid." + base64.b64encode(raw).decode()

    def fraction(self, wamid: str, salt: str) -> float:
        """A stable number in [0, 1) per message, so outcomes are reproducible for a given seed."""
        digest = hashlib.sha256(f"{self.config.seed or 0}:{salt}:{wamid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    # -- checks

    def take_token(self, phone_number_id: str) -> bool:
        rate = self.config.rate_per_second
        if rate is None:
            return True
        bucket = self.buckets.get(phone_number_id)
        if bucket is None:
            # Meta's per-number cap: `burst` at once (default: a second's worth), then `rate`.
            burst = self.config.burst or max(1, round(rate))
            bucket = self.buckets[phone_number_id] = TokenBucket(rate, burst)
        return bucket.try_take(self.config.monotonic())

    def in_window(self, wa_id: str) -> bool:
        last = self.last_inbound.get(wa_id)
        return last is not None and self.now() - last < self.config.window_seconds

    def is_unreachable(self, wa_id: str) -> bool:
        return wa_id in self._unreachable

    def accepts_phone_number_id(self, phone_number_id: str) -> bool:
        ids = self.config.phone_number_ids
        return not ids or phone_number_id in ids

    def reject(self, code: int) -> None:
        self.stats.rejected_by_code[code] = self.stats.rejected_by_code.get(code, 0) + 1

    # -- background work

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        # Task names show up in error logs, so they never carry a wamid (it encodes the number).
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "whatsapp_sandbox.task_failed", task=task.get_name(), exc_info=task.exception()
            )

    async def close(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    # -- webhooks

    def metadata(self, phone_number_id: str) -> dict[str, str]:
        return {
            "display_phone_number": self.config.display_phone_number,
            "phone_number_id": phone_number_id,
        }

    def envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": self.config.waba_id, "changes": [{"field": "messages", "value": value}]}
            ],
        }


STATE: web.AppKey[SandboxState] = web.AppKey("whatsapp_sandbox_state", SandboxState)


def new_http_client(config: SandboxConfig) -> httpx.AsyncClient:
    # trust_env=False: a developer's HTTP(S)_PROXY must not swallow loopback webhooks.
    return httpx.AsyncClient(timeout=config.webhook_timeout, trust_env=False)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def sandbox_error(message: str, status: int = 400) -> web.Response:
    return json_response({"error": {"message": message}}, status=status)


# --------------------------------------------------------------------------- request checks


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else raises a 400 that says why."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        data = None
        reason = "body is not valid JSON"
    else:
        reason = "body must be a JSON object"
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            body=orjson.dumps({"error": {"message": reason}}), content_type="application/json"
        )
    return data
