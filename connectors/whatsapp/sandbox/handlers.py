"""Local WhatsApp Cloud API sandbox: a loopback aiohttp server that answers like Meta's Graph API.
Lets the real connector be tested end to end: same request checks, error codes and signed webhooks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import phonenumbers
import structlog
import yaml
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from connectors.whatsapp.signature import sign

__all__ = [
    "ApiError",
    "SandboxConfig",
    "SandboxState",
    "SentMessage",
    "Template",
    "TemplateButton",
    "TemplateFileError",
    "TemplateHeader",
    "build_app",
    "load_templates",
    "main",
    "mask_phone",
    "normalize_phone",
    "run_sandbox",
]

log = structlog.get_logger("connectors.whatsapp.sandbox")

# Where the sandbox follows Meta rather than the obvious choice:
# * 131026 (undeliverable) is never a synchronous error: the send is accepted and a `failed`
#   status webhook carries the code, as the Cloud API does for numbers without WhatsApp.
# * 131047 (outside the 24-hour window) is also asynchronous by default, as the Cloud API does
#   it today; reengagement_error="sync" makes it a 400 for connectors that test that path.
# * 130429 answers HTTP 429 (Meta's current table); rate_limit_http_status=400 reproduces the
#   older answer some accounts still get.
# * An unknown phone_number_id is Graph's generic 400 / code 100 / subcode 33
#   GraphMethodException, not a WhatsApp error.

API_VERSION_RE = re.compile(r"v\d+\.\d+")
PLACEHOLDER_RE = re.compile(r"\{\{\s*(\d+)\s*\}\}")
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
BODY_MAX_CHARS = 1024
TEXT_MAX_CHARS = 4096
CALLBACK_DATA_MAX_CHARS = 512
FREE_FORM_TYPES = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "interactive",
        "reaction",
        "location",
        "contacts",
    }
)
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})

# Titles as Meta's error-code reference words them; the message field is "(#code) title".
ERROR_TITLES: dict[int, str] = {
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    2500: "Unknown path components",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132005: "Translated text too long",
    132012: "Parameter format does not match format in the created template",
    132015: "Template is Paused",
    132016: "Template is Disabled",
    132018: "There was an issue with the parameters in your template",
}
ERROR_HTTP_STATUS: dict[int, int] = {
    1: 400,
    2: 503,
    190: 401,
    130429: 429,
    131000: 500,
    132001: 404,
}
ASYNC_DETAILS: dict[int, str] = {
    131026: "Message Undeliverable.",
    131047: (
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number."
    ),
}


# --------------------------------------------------------------------------- templates


class TemplateFileError(ValueError):
    """A template file is unreadable or has invalid entries; the message names the file."""


def _placeholders(text: str) -> list[int]:
    return [int(m.group(1)) for m in PLACEHOLDER_RE.finditer(text)]


def _check_sequential(text: str, where: str) -> int:
    numbers = sorted(set(_placeholders(text)))
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{where}: placeholders must be {{{{1}}}}..{{{{n}}}} without gaps")
    return len(numbers)


class TemplateHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text", "image", "video", "document"]
    text: str | None = Field(default=None, max_length=60)

    @model_validator(mode="after")
    def _text_matches_type(self) -> TemplateHeader:
        if self.type == "text":
            if not self.text:
                raise ValueError("a text header needs 'text'")
            if _check_sequential(self.text, "header") > 1:
                raise ValueError("a text header takes at most one parameter")
        elif self.text is not None:
            raise ValueError(f"a {self.type} header has no 'text'; its media comes at send time")
        return self


class TemplateButton(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["quick_reply", "url"]
    text: str = Field(min_length=1, max_length=25)
    url: str | None = None

    @model_validator(mode="after")
    def _url_matches_type(self) -> TemplateButton:
        if self.type == "url":
            if not self.url or not self.url.startswith(("https://", "http://")):
                raise ValueError("a url button needs an http(s) 'url'")
            found = _placeholders(self.url)
            # Meta only allows one dynamic suffix, at the very end of the URL.
            if found and (found != [1] or not self.url.endswith("{{1}}")):
                raise ValueError("a url button may only end in {{1}}")
        elif self.url is not None:
            raise ValueError("a quick_reply button has no 'url'")
        return self

    @property
    def dynamic(self) -> bool:
        return self.type == "url" and bool(self.url and PLACEHOLDER_RE.search(self.url))


class Template(BaseModel):
    """One approved (or not) translation of a message template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_]{1,512}$")
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")
    category: Literal["marketing", "utility", "authentication"]
    status: Literal["APPROVED", "PAUSED", "DISABLED", "PENDING", "REJECTED"] = "APPROVED"
    header: TemplateHeader | None = None
    body: str = Field(min_length=1, max_length=BODY_MAX_CHARS)
    footer: str | None = Field(default=None, max_length=60)
    buttons: tuple[TemplateButton, ...] = Field(default=(), max_length=10)

    @model_validator(mode="after")
    def _body_placeholders(self) -> Template:
        _check_sequential(self.body, "body")
        if self.footer and _placeholders(self.footer):
            raise ValueError("footer: parameters are not allowed in a footer")
        return self

    @property
    def body_params(self) -> int:
        return len(set(_placeholders(self.body)))

    @property
    def header_params(self) -> int:
        if self.header is None or self.header.text is None:
            return 0
        return len(set(_placeholders(self.header.text)))


def load_templates(path: str | Path) -> list[Template]:
    """Read a YAML list of templates (or ``{templates: [...]}``); errors name the file and entry."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateFileError(f"{file}: cannot read template file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TemplateFileError(f"{file}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict) and "templates" in raw:
        raw = raw["templates"]
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TemplateFileError(f"{file}: expected a list of templates, got {type(raw).__name__}")
    problems: list[str] = []
    templates: list[Template] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(raw):
        label = f"entry {index}"
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            label += f" ({entry['name']}/{entry.get('language', '?')})"
        try:
            template = Template.model_validate(entry)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(part) for part in err["loc"]) or "<entry>"
                problems.append(f"{file}: {label}: {where}: {err['msg']}")
            continue
        key = (template.name, template.language)
        if key in seen:
            problems.append(f"{file}: {label}: duplicate template {key[0]!r} in {key[1]!r}")
            continue
        seen.add(key)
        templates.append(template)
    if problems:
        raise TemplateFileError("\n".join(problems))
    return templates


# --------------------------------------------------------------------------- config


def normalize_phone(raw: str) -> str | None:
    """Digits of a phone number as WhatsApp's wa_id, or None when it is not shaped like one."""
    candidate = re.sub(r"[\s\-().]", "", raw.strip())
    candidate = candidate.removeprefix("+")
    if not re.fullmatch(r"[0-9]{7,15}", candidate):
        return None
    return candidate


@functools.lru_cache(maxsize=65_536)
def is_valid_number(digits: str) -> bool:
    # Cached: phonenumbers' parse was a tenth of the sandbox's CPU per call.
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


def mask_phone(raw: str) -> str:
    """Keep country prefix and last three digits, so logs can be correlated but not dialled."""
    digits = re.sub(r"\D", "", raw)
    if len(digits) <= 5:
        return "+" + "*" * len(digits)
    return "+" + digits[:2] + "*" * (len(digits) - 5) + digits[-3:]


class SandboxConfig(BaseModel):
    """How the sandbox listens, what it accepts and how messages fare after acceptance."""

    # hide_input_in_errors: a validation error would otherwise echo the token in plain text.
    model_config = ConfigDict(
        frozen=True, extra="forbid", arbitrary_types_allowed=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8070, ge=0, le=65535)
    # SecretStr keeps both secrets out of reprs, tracebacks and logs.
    token: SecretStr
    app_secret: SecretStr | None = None
    phone_number_ids: tuple[str, ...] = ("100000000000001",)
    display_phone_number: str = "15550001111"
    waba_id: str = "200000000000001"
    templates: tuple[Template, ...] = ()
    webhook_url: str | None = None
    status_delays: tuple[float, float, float] = (0.05, 0.1, 0.2)
    failure_share: float = Field(default=0.0, ge=0.0, le=1.0)
    failure_code: int = 131026
    read_share: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int | None = None
    unreachable: frozenset[str] = frozenset()
    rate_per_second: float | None = Field(default=80.0, gt=0)
    burst: int | None = Field(default=None, ge=1)
    rate_limit_http_status: int = Field(default=429, ge=400, le=599)
    reengagement_error: Literal["webhook", "sync"] = "webhook"
    window_seconds: float = Field(default=24 * 3600, gt=0)
    webhook_retries: int = Field(default=3, ge=0)
    # Meta takes the message (it is sent, its status webhooks go out) but answers the call
    # this much later: the "Meta took it, the answer was lost" case, when the client gives
    # up or dies first.
    answer_delay: float = Field(default=0.0, ge=0)
    # Meta opens a bounded number of connections to an endpoint; so does the sandbox (and
    # httpx's pool slows down quadratically with thousands of queued requests).
    webhook_concurrency: int = Field(default=16, ge=1)
    webhook_backoff: float = Field(default=0.1, ge=0)
    webhook_timeout: float = Field(default=5.0, gt=0)
    # Wall clock for timestamps and the 24-hour window; tests pass a controllable one.
    clock: Callable[[], float] = Field(default=time.time, exclude=True, repr=False)
    monotonic: Callable[[], float] = Field(default=time.monotonic, exclude=True, repr=False)

    @model_validator(mode="after")
    def _consistent(self) -> SandboxConfig:
        if not self.token.get_secret_value():
            raise ValueError("token must not be empty")
        if self.webhook_url is not None:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ValueError("webhook_url must be an http(s) URL")
            if self.app_secret is None or not self.app_secret.get_secret_value():
                raise ValueError("app_secret is needed to sign webhooks")
        delays = self.status_delays
        if any(d < 0 for d in delays) or list(delays) != sorted(delays):
            raise ValueError("status_delays must be non-negative and non-decreasing")
        bad = sorted(n for n in self.unreachable if normalize_phone(n) is None)
        if bad:
            raise ValueError(f"unreachable has {len(bad)} entries that are not phone numbers")
        return self

    @property
    def unreachable_ids(self) -> frozenset[str]:
        return frozenset(d for n in self.unreachable if (d := normalize_phone(n)) is not None)


# --------------------------------------------------------------------------- state


class ApiError(Exception):
    """A Graph API error response, raised while checking a request."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        message: str | None = None,
        http_status: int | None = None,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        with_error_data: bool = True,
    ) -> None:
        self.code = code
        self.details = details
        self.message = message or f"(#{code}) {ERROR_TITLES.get(code, 'Unknown error')}"
        self.http_status = http_status or ERROR_HTTP_STATUS.get(code, 400)
        self.error_type = error_type
        self.subcode = subcode
        self.with_error_data = with_error_data
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.with_error_data:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details or ""}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(20)[:26]
        return {"error": error}


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
            "received_at": _iso(self.received_at),
            "statuses": list(self.statuses),
            "errors": list(self.errors),
            "request": self.request,
        }


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


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
        now = self.config.monotonic()
        bucket = self.buckets.get(phone_number_id)
        if bucket is None:
            capacity = float(self.config.burst or max(1, round(rate)))
            bucket = TokenBucket(rate=rate, capacity=capacity, tokens=capacity, updated=now)
            self.buckets[phone_number_id] = bucket
        return bucket.take(now)

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

    async def post_webhook(self, payload: dict[str, Any]) -> bool:
        """POST a signed webhook, retrying a few times; False when the receiver never took it."""
        url = self.config.webhook_url
        secret = self.config.app_secret
        if url is None or secret is None:
            return False
        if self.http is None:
            self.http = _new_http_client(self.config)
        body = orjson.dumps(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(secret.get_secret_value(), body),
            "User-Agent": "facebookexternalua",
        }
        attempts = self.config.webhook_retries + 1
        reason = ""
        for attempt in range(attempts):
            try:
                async with self.webhook_slots:
                    response = await self.http.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            else:
                if 200 <= response.status_code < 300:
                    self.stats.webhooks_delivered += 1
                    return True
                reason = f"HTTP {response.status_code}"
            if attempt + 1 < attempts:
                await asyncio.sleep(self.config.webhook_backoff * 2**attempt)
        self.stats.webhooks_failed += 1
        log.warning("whatsapp_sandbox.webhook_gave_up", attempts=attempts, reason=reason)
        return False

    def conversation(self, msg: SentMessage, origin: str, now: float) -> dict[str, Any]:
        key = (msg.phone_number_id, msg.wa_id, origin)
        current = self.conversations.get(key)
        if current is None or current[1] <= now:
            current = (secrets.token_hex(16), now + 24 * 3600)
            self.conversations[key] = current
        return {
            "id": current[0],
            "expiration_timestamp": str(int(current[1])),
            "origin": {"type": origin},
        }

    def status_payload(self, msg: SentMessage, step: StatusStep) -> dict[str, Any]:
        now = self.now()
        status: dict[str, Any] = {
            "id": msg.wamid,
            "status": step.status,
            "timestamp": str(int(now)),
            "recipient_id": msg.wa_id,
        }
        if msg.biz_opaque_callback_data is not None:
            status["biz_opaque_callback_data"] = msg.biz_opaque_callback_data
        if step.error_code is not None:
            code = step.error_code
            title = ERROR_TITLES.get(code, "Unknown error")
            status["errors"] = [
                {
                    "code": code,
                    "title": title,
                    "message": title,
                    "error_data": {"details": ASYNC_DETAILS.get(code, title)},
                    "href": ERROR_CODES_URL,
                }
            ]
        elif step.status in ("sent", "delivered"):
            service = msg.category is None
            origin = "service" if service else str(msg.category)
            status["conversation"] = self.conversation(msg, origin, now)
            status["pricing"] = {
                "billable": not service,
                "pricing_model": "PMP",
                "category": origin,
                "type": "free_customer_service" if service else "regular",
            }
        value = {
            "messaging_product": "whatsapp",
            "metadata": self.metadata(msg.phone_number_id),
            "statuses": [status],
        }
        return self.envelope(value)

    def plan(self, msg: SentMessage, async_error: int | None) -> list[StatusStep]:
        sent_at, delivered_at, read_at = self.config.status_delays
        if async_error is not None:
            return [StatusStep("failed", sent_at, async_error)]
        if self.fraction(msg.wamid, "fail") < self.config.failure_share:
            return [
                StatusStep("sent", sent_at),
                StatusStep("failed", delivered_at, self.config.failure_code),
            ]
        steps = [StatusStep("sent", sent_at), StatusStep("delivered", delivered_at)]
        if self.fraction(msg.wamid, "read") < self.config.read_share:
            steps.append(StatusStep("read", read_at))
        return steps

    async def run_lifecycle(self, msg: SentMessage, steps: list[StatusStep]) -> None:
        started = asyncio.get_running_loop().time()
        for step in steps:
            wait = started + step.at - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            msg.statuses.append(step.status)
            if step.error_code is not None:
                code = step.error_code
                self.stats.failed_by_code[code] = self.stats.failed_by_code.get(code, 0) + 1
                msg.errors.append({"code": code, "title": ERROR_TITLES.get(code, "")})
            if self.config.webhook_url is None or self.config.app_secret is None:
                continue  # nobody to tell: skip building a payload no one receives
            # Awaiting each post keeps sent -> delivered -> read in order at the receiver.
            await self.post_webhook(self.status_payload(msg, step))


STATE: web.AppKey[SandboxState] = web.AppKey("whatsapp_sandbox_state", SandboxState)


def _new_http_client(config: SandboxConfig) -> httpx.AsyncClient:
    # trust_env=False: a developer's HTTP(S)_PROXY must not swallow loopback webhooks.
    return httpx.AsyncClient(timeout=config.webhook_timeout, trust_env=False)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _sandbox_error(message: str, status: int = 400) -> web.Response:
    return _json({"error": {"message": message}}, status=status)


# --------------------------------------------------------------------------- request checks


@dataclass(slots=True)
class Rendered:
    text: str
    media: dict[str, str] | None = None


def _param_text(param: Any, where: str, index: int) -> str:
    if not isinstance(param, dict):
        raise ApiError(131009, f"{where}: parameter {index} must be an object")
    kind = param.get("type")
    if kind == "text":
        value = param.get("text")
        if not isinstance(value, str) or not value.strip():
            raise ApiError(131008, f"{where}: parameter {index} of type text is missing text value")
        return value
    if kind in ("currency", "date_time"):
        inner = param.get(kind)
        fallback = inner.get("fallback_value") if isinstance(inner, dict) else None
        if not isinstance(fallback, str) or not fallback:
            raise ApiError(
                131008, f"{where}: parameter {index} of type {kind} needs fallback_value"
            )
        return fallback
    raise ApiError(
        132012,
        f"{where}: Format mismatch, expected TEXT, received {str(kind or 'UNKNOWN').upper()}",
    )


def _check_count(where: str, given: int, expected: int) -> None:
    if given != expected:
        raise ApiError(
            132000,
            f"{where}: number of localizable_params ({given}) does not match the expected "
            f"number of params ({expected})",
        )


def _fill(text: str, values: list[str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: values[int(m.group(1)) - 1], text)


def _media_param(template: Template, params: list[Any]) -> dict[str, str]:
    assert template.header is not None
    expected = template.header.type
    received = "UNKNOWN"
    if params:
        first = params[0]
        received = (
            str(first.get("type", "UNKNOWN")).upper() if isinstance(first, dict) else received
        )
    if not params or received != expected.upper():
        raise ApiError(
            132012, f"header: Format mismatch, expected {expected.upper()}, received {received}"
        )
    _check_count("header", len(params), 1)
    media = params[0].get(expected)
    if not isinstance(media, dict):
        raise ApiError(131008, f"header: parameter of type {expected} needs an '{expected}' object")
    link, media_id = media.get("link"), media.get("id")
    if isinstance(link, str) and link:
        if not link.startswith(("https://", "http://")):
            raise ApiError(131009, f"header: {expected}.link must be an http(s) URL")
        return {"type": expected, "link": link}
    if isinstance(media_id, str) and media_id:
        return {"type": expected, "id": media_id}
    raise ApiError(131008, f"header: {expected} needs a 'link' or an 'id'")


def render_template(template: Template, components: Any) -> Rendered:
    """Check send-time components against the template and return what the person reads."""
    if components is None:
        components = []
    if not isinstance(components, list):
        raise ApiError(100, "template.components must be a list")
    header: list[Any] | None = None
    body: list[Any] | None = None
    buttons: dict[int, tuple[str, list[Any]]] = {}
    for position, component in enumerate(components):
        if not isinstance(component, dict):
            raise ApiError(100, f"components[{position}] must be an object")
        kind = str(component.get("type", "")).lower()
        params = component.get("parameters", [])
        if not isinstance(params, list):
            raise ApiError(100, f"components[{position}].parameters must be a list")
        if kind == "header":
            header = params
        elif kind == "body":
            body = params
        elif kind == "button":
            try:
                index = int(component.get("index", ""))
            except (TypeError, ValueError):
                raise ApiError(131009, f"components[{position}]: button index is missing") from None
            buttons[index] = (str(component.get("sub_type", "")).lower(), params)
        else:
            raise ApiError(100, f"components[{position}]: unsupported component type {kind!r}")

    lines: list[str] = []
    media: dict[str, str] | None = None
    tpl_header = template.header
    if tpl_header is None:
        _check_count("header", len(header or []), 0)
    elif tpl_header.type == "text":
        assert tpl_header.text is not None
        params = header or []
        _check_count("header", len(params), template.header_params)
        values = [_param_text(p, "header", i + 1) for i, p in enumerate(params)]
        lines.append(_fill(tpl_header.text, values))
    else:
        media = _media_param(template, header or [])

    params = body or []
    _check_count("body", len(params), template.body_params)
    values = []
    for i, param in enumerate(params):
        value = _param_text(param, "body", i + 1)
        # Meta refuses these in body parameters; connectors that pass raw user input hit it.
        if "\n" in value or "\t" in value or "     " in value:
            raise ApiError(
                132018,
                "body: Param text cannot have new-line/tab characters or more than 4 "
                "consecutive spaces",
            )
        values.append(value)
    text = _fill(template.body, values)
    if len(text) > BODY_MAX_CHARS:
        raise ApiError(132005, f"body: hydrated text is {len(text)} characters, over 1024")
    lines.append(text)
    if template.footer:
        lines.append(template.footer)

    for index in buttons:
        if not 0 <= index < len(template.buttons):
            raise ApiError(131009, f"buttons: Button at index {index} does not exist in template")
    for index, button in enumerate(template.buttons):
        sub_type, params = buttons.get(index, ("", []))
        given = index in buttons
        if given and sub_type != button.type:
            raise ApiError(
                131009,
                f"buttons: Button at index {index} is of type {button.type}, not {sub_type!r}",
            )
        if button.type == "url":
            assert button.url is not None
            if button.dynamic and not params:
                raise ApiError(
                    131008, f"buttons: Button at index {index} of type Url requires a parameter"
                )
            _check_count(f"button at index {index}", len(params), 1 if button.dynamic else 0)
            suffix = [_param_text(p, f"button at index {index}", 1) for p in params]
            lines.append(f"[{button.text}]({_fill(button.url, suffix)})")
        else:
            if len(params) > 1:
                _check_count(f"button at index {index}", len(params), 1)
            for param in params:
                if not isinstance(param, dict) or param.get("type") != "payload":
                    raise ApiError(132012, f"button at index {index}: expected PAYLOAD parameter")
                if not isinstance(param.get("payload"), str):
                    raise ApiError(131008, f"button at index {index}: payload is missing")
            lines.append(f"[{button.text}]")
    return Rendered(text="\n".join(lines), media=media)


def render_free_form(kind: str, payload: dict[str, Any]) -> Rendered:
    content = payload.get(kind)
    if not isinstance(content, dict) and not (kind == "contacts" and isinstance(content, list)):
        raise ApiError(
            100,
            f"The parameter {kind} is required.",
            message=f"(#100) The parameter {kind} is required.",
        )
    if kind == "text":
        assert isinstance(content, dict)
        body = content.get("body")
        if not isinstance(body, str) or not body:
            raise ApiError(
                100,
                "text['body'] is required",
                message="(#100) The parameter text['body'] is required.",
            )
        if len(body) > TEXT_MAX_CHARS:
            raise ApiError(100, f"text['body'] must be at most {TEXT_MAX_CHARS} characters long")
        return Rendered(text=body)
    if kind in MEDIA_TYPES:
        assert isinstance(content, dict)
        link, media_id = content.get("link"), content.get("id")
        if isinstance(link, str) and link.startswith(("https://", "http://")):
            media = {"type": kind, "link": link}
        elif isinstance(media_id, str) and media_id:
            media = {"type": kind, "id": media_id}
        else:
            raise ApiError(131008, f"{kind} needs an http(s) 'link' or an 'id'")
        caption = content.get("caption")
        text = f"[{kind}]" + (f" {caption}" if isinstance(caption, str) and caption else "")
        return Rendered(text=text, media=media)
    if kind == "interactive":
        assert isinstance(content, dict)
        inner = content.get("body")
        body_text = inner.get("text") if isinstance(inner, dict) else None
        return Rendered(text=body_text if isinstance(body_text, str) else "[interactive]")
    if kind == "reaction":
        assert isinstance(content, dict)
        return Rendered(text=str(content.get("emoji", "")))
    return Rendered(text=f"[{kind}]")


# --------------------------------------------------------------------------- handlers


async def _apply_fault(state: SandboxState) -> ApiError | None:
    fault = state.fault
    if fault is None:
        return None
    now = state.config.monotonic()
    if fault.until is not None and now >= fault.until:
        state.fault = None
        return None
    if fault.remaining is not None:
        fault.remaining -= 1
        if fault.remaining <= 0:
            state.fault = None
    state.stats.faults_injected += 1
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.status is None:
        return None
    code = fault.code
    if code is None:
        code = {500: 131000, 503: 2, 429: 130429}.get(fault.status, 1)
    return ApiError(
        code, "Injected by the sandbox", message=fault.message, http_status=fault.status
    )


def _auth_error(request: web.Request, state: SandboxState) -> ApiError | None:
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    token = supplied.strip() if scheme.lower() == "bearer" else ""
    # Graph also takes the token as a query parameter; some clients still use it.
    token = token or request.query.get("access_token", "")
    expected = state.config.token.get_secret_value()
    if not token:
        return ApiError(
            190,
            message="An access token is required to request this resource.",
            with_error_data=False,
        )
    if not secrets.compare_digest(token.encode(), expected.encode()):
        return ApiError(190, with_error_data=False)
    return None


def _error_response(state: SandboxState, error: ApiError) -> web.Response:
    state.reject(error.code)
    headers: dict[str, str] = {}
    if error.code == 190:
        headers["WWW-Authenticate"] = 'OAuth "Facebook Platform" "invalid_token" "Invalid token"'
    if error.code != 190:
        log.info("whatsapp_sandbox.rejected", code=error.code, http_status=error.http_status)
    return _json(error.body(), status=error.http_status, headers=headers)


async def handle_send(request: web.Request) -> web.Response:
    """POST /{version}/{phone_number_id}/messages, Meta's send endpoint."""
    state = request.app[STATE]
    version = request.match_info["version"]
    phone_number_id = request.match_info["phone_number_id"]
    error = await _apply_fault(state) or _auth_error(request, state)
    if error is None and not API_VERSION_RE.fullmatch(version):
        error = ApiError(
            2500,
            message=f"Unknown path components: /{phone_number_id}/messages",
            with_error_data=False,
        )
    if error is None and not state.accepts_phone_number_id(phone_number_id):
        error = ApiError(
            100,
            message=(
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation."
            ),
            error_type="GraphMethodException",
            subcode=33,
            with_error_data=False,
        )
    if error is None and not state.take_token(phone_number_id):
        state.stats.rate_limited += 1
        error = ApiError(
            130429,
            "Message failed to send because there were too many messages sent from this phone "
            "number in a short period of time",
            http_status=state.config.rate_limit_http_status,
        )
    if error is not None:
        return _error_response(state, error)
    try:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError(100, "Request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(100, "Request body must be a JSON object")
        response = _accept(state, phone_number_id, payload)
    except ApiError as exc:
        return _error_response(state, exc)
    if state.config.answer_delay > 0:
        await asyncio.sleep(state.config.answer_delay)
    return response


def _accept(state: SandboxState, phone_number_id: str, payload: dict[str, Any]) -> web.Response:
    product = payload.get("messaging_product")
    if product is None:
        raise ApiError(100, message="(#100) The parameter messaging_product is required.")
    if product != "whatsapp":
        raise ApiError(
            100,
            message=(
                f"(#100) Param messaging_product must be one of {{WHATSAPP}} - got {product!r}."
            ),
        )

    if payload.get("status") == "read":
        # Marking an inbound message as read shares the endpoint but has its own reply.
        message_id = payload.get("message_id")
        if not isinstance(message_id, str) or message_id not in state.inbound_ids:
            raise ApiError(100, "message_id does not name a received message")
        return _json({"success": True})

    rtype = payload.get("recipient_type", "individual")
    if rtype != "individual":
        raise ApiError(
            100,
            message=f"(#100) Param recipient_type must be one of {{INDIVIDUAL}} - got {rtype!r}.",
        )
    to_raw = payload.get("to")
    if to_raw is None or to_raw == "":
        raise ApiError(100, message="(#100) The parameter to is required.")
    wa_id = normalize_phone(to_raw) if isinstance(to_raw, str) else None
    if wa_id is None:
        raise ApiError(100, f"Invalid 'to' parameter: {to_raw!r} is not a phone number")

    kind = payload.get("type", "text")
    if kind != "template" and kind not in FREE_FORM_TYPES:
        choices = ", ".join(sorted(FREE_FORM_TYPES | {"template"}))
        raise ApiError(
            100, message=f'(#100) Param type must be one of {{{choices}}} - got "{kind}".'
        )

    callback_data = payload.get("biz_opaque_callback_data")
    if callback_data is not None and (
        not isinstance(callback_data, str) or len(callback_data) > CALLBACK_DATA_MAX_CHARS
    ):
        raise ApiError(100, "biz_opaque_callback_data must be a string of at most 512 characters")

    context = payload.get("context")
    context_wamid: str | None = None
    if context is not None:
        if not isinstance(context, dict) or not isinstance(context.get("message_id"), str):
            raise ApiError(100, "context.message_id must be a string")
        context_wamid = context["message_id"]

    template: Template | None = None
    if kind == "template":
        template = _find_template(state, payload.get("template"))
        tpl_payload = payload["template"]
        rendered = render_template(template, tpl_payload.get("components"))
    else:
        rendered = render_free_form(kind, payload)

    async_error: int | None = None
    if state.is_unreachable(wa_id) or not is_valid_number(wa_id):
        async_error = 131026
    elif template is None and not state.in_window(wa_id):
        if state.config.reengagement_error == "sync":
            raise ApiError(131047, ASYNC_DETAILS[131047])
        async_error = 131047

    wamid = state.new_wamid(wa_id)
    message = SentMessage(
        wamid=wamid,
        to="+" + wa_id,
        wa_id=wa_id,
        phone_number_id=phone_number_id,
        type="template" if template else kind,
        text=rendered.text,
        received_at=state.now(),
        template=template.name if template else None,
        language=template.language if template else None,
        category=template.category if template else None,
        biz_opaque_callback_data=callback_data,
        context_wamid=context_wamid,
        media=rendered.media,
        request=payload,
    )
    state.messages.append(message)
    state.by_wamid[wamid] = message
    state.stats.accepted += 1
    state.spawn(
        state.run_lifecycle(message, state.plan(message, async_error)), "whatsapp-sandbox-status"
    )
    log.info(
        "whatsapp_sandbox.accepted",
        to=mask_phone(wa_id),
        type=message.type,
        template=message.template,
        outcome="failed" if async_error else "ok",
    )
    return _json(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to_raw, "wa_id": wa_id}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
    )


def _find_template(state: SandboxState, spec: Any) -> Template:
    if not isinstance(spec, dict):
        raise ApiError(100, message="(#100) The parameter template is required.")
    name = spec.get("name")
    language = spec.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(131008, "template.name is required")
    if not isinstance(code, str) or not code:
        raise ApiError(131008, "template.language.code is required")
    template = state.templates.get((name, code))
    not_found = f"template name ({name}) does not exist in {code}"
    if template is None or template.status in ("PENDING", "REJECTED"):
        # Only approved translations exist for sending, so Meta gives the same answer.
        raise ApiError(132001, not_found)
    if template.status == "PAUSED":
        raise ApiError(132015, f"Template {name} ({code}) is paused due to low quality")
    if template.status == "DISABLED":
        raise ApiError(132016, f"Template {name} ({code}) is disabled")
    return template


async def handle_inbound(request: web.Request) -> web.Response:
    """POST /sandbox/inbound: a person writes to the business; opens the 24-hour window."""
    state = request.app[STATE]
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _sandbox_error("body is not valid JSON")
    if not isinstance(data, dict):
        return _sandbox_error("body must be a JSON object")
    sender = data.get("from")
    wa_id = normalize_phone(sender) if isinstance(sender, str) else None
    if wa_id is None:
        return _sandbox_error("'from' must be a phone number")
    text, button = data.get("text"), data.get("button")
    if not (isinstance(text, str) and text) and not isinstance(button, dict):
        return _sandbox_error("give 'text' or 'button': {payload, text}")
    phone_number_id = data.get("phone_number_id") or (
        state.config.phone_number_ids[0] if state.config.phone_number_ids else "100000000000001"
    )
    if not isinstance(phone_number_id, str) or not state.accepts_phone_number_id(phone_number_id):
        return _sandbox_error("unknown phone_number_id")

    now = state.now()
    wamid = state.new_wamid(wa_id, inbound=True)
    message: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(int(now))}
    if isinstance(button, dict):
        message["type"] = "button"
        message["button"] = {
            "payload": str(button.get("payload", "")),
            "text": str(button.get("text", "")),
        }
    else:
        message["type"] = "text"
        message["text"] = {"body": text}
    context_wamid = data.get("context_wamid")
    if isinstance(context_wamid, str) and context_wamid:
        message["context"] = {"from": state.config.display_phone_number, "id": context_wamid}
    name = data.get("name")
    value = {
        "messaging_product": "whatsapp",
        "metadata": state.metadata(phone_number_id),
        "contacts": [
            {"profile": {"name": name if isinstance(name, str) else "Sandbox User"}, "wa_id": wa_id}
        ],
        "messages": [message],
    }
    state.last_inbound[wa_id] = now
    state.inbound.append({**message, "phone_number_id": phone_number_id, "received_at": _iso(now)})
    state.inbound_ids.add(wamid)
    state.stats.inbound += 1
    state.spawn(_post_and_forget(state, state.envelope(value)), "whatsapp-sandbox-inbound")
    log.info("whatsapp_sandbox.inbound", sender=mask_phone(wa_id), type=message["type"])
    return _json({"wamid": wamid})


async def _post_and_forget(state: SandboxState, payload: dict[str, Any]) -> None:
    await state.post_webhook(payload)


def _digits_filter(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    # A '+' in a query string arrives as a space unless the client encoded it; accept both.
    return re.sub(r"\D", "", raw)


async def handle_list_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    to = _digits_filter(request, "to")
    template = request.query.get("template")
    status = request.query.get("status")
    phone_number_id = request.query.get("phone_number_id")
    found = [
        m.to_json()
        for m in state.messages
        if (to is None or m.wa_id == to)
        and (template is None or m.template == template)
        and (status is None or status in m.statuses)
        and (phone_number_id is None or m.phone_number_id == phone_number_id)
    ]
    return _json(found)


async def handle_get_message(request: web.Request) -> web.Response:
    message = request.app[STATE].by_wamid.get(request.match_info["wamid"])
    if message is None:
        return _sandbox_error("no such message", status=404)
    return _json(message.to_json())


async def handle_clear_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.messages.clear()
    state.by_wamid.clear()
    return web.Response(status=204)


async def handle_list_inbound(request: web.Request) -> web.Response:
    return _json(request.app[STATE].inbound)


async def handle_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats.to_json())


async def handle_reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats = Stats()
    return web.Response(status=204)


async def handle_reset(request: web.Request) -> web.Response:
    """POST /sandbox/reset: forget messages, windows, buckets, faults and counters."""
    state = request.app[STATE]
    state.messages.clear()
    state.by_wamid.clear()
    state.inbound.clear()
    state.inbound_ids.clear()
    state.last_inbound.clear()
    state.buckets.clear()
    state.conversations.clear()
    state.fault = None
    state.stats = Stats()
    state.clock_offset = 0.0
    return web.Response(status=204)


async def handle_set_fault(request: web.Request) -> web.Response:
    """POST /sandbox/faults {"status": 500, "count": 10} or {"delay_seconds": 5, "seconds": 3}."""
    state = request.app[STATE]
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _sandbox_error("body is not valid JSON")
    if not isinstance(data, dict):
        return _sandbox_error("body must be a JSON object")
    status, code, delay = data.get("status"), data.get("code"), data.get("delay_seconds", 0)
    count, seconds, message = data.get("count"), data.get("seconds"), data.get("message")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        return _sandbox_error("status must be an HTTP error status (400-599)")
    if code is not None and not isinstance(code, int):
        return _sandbox_error("code must be an integer")
    if not isinstance(delay, int | float) or delay < 0:
        return _sandbox_error("delay_seconds must be a non-negative number")
    if status is None and not delay:
        return _sandbox_error("give 'status', 'delay_seconds' or both")
    if count is not None and (not isinstance(count, int) or count < 1):
        return _sandbox_error("count must be a positive integer")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        return _sandbox_error("seconds must be a positive number")
    if message is not None and not isinstance(message, str):
        return _sandbox_error("message must be a string")
    if count is None and seconds is None:
        count = 1
    now = state.config.monotonic()
    state.fault = Fault(
        status=status,
        code=code,
        message=message,
        delay=float(delay),
        remaining=count,
        until=None if seconds is None else now + float(seconds),
    )
    return _json(state.fault.to_json(now))


async def handle_get_fault(request: web.Request) -> web.Response:
    state = request.app[STATE]
    fault = state.fault
    return _json(None if fault is None else fault.to_json(state.config.monotonic()))


async def handle_clear_fault(request: web.Request) -> web.Response:
    request.app[STATE].fault = None
    return web.Response(status=204)


async def handle_clock(request: web.Request) -> web.Response:
    """POST /sandbox/clock {"advance_seconds": 90000}: let HTTP-only tests age the 24h window."""
    state = request.app[STATE]
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _sandbox_error("body is not valid JSON")
    advance = data.get("advance_seconds") if isinstance(data, dict) else None
    if not isinstance(advance, int | float) or advance < 0:
        return _sandbox_error("advance_seconds must be a non-negative number")
    state.clock_offset += float(advance)
    return _json({"now": _iso(state.now())})


async def handle_templates(request: web.Request) -> web.Response:
    templates = request.app[STATE].templates.values()
    return _json([t.model_dump(mode="json") for t in templates])


async def handle_health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


# --------------------------------------------------------------------------- app


def build_app(config: SandboxConfig) -> web.Application:
    """The sandbox as an aiohttp application; its state is ``app[STATE]``."""
    app = web.Application(client_max_size=2 * 1024 * 1024)
    state = SandboxState(config)
    app[STATE] = state

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        if config.webhook_url is not None:
            state.http = _new_http_client(config)
        yield
        await state.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/{version}/{phone_number_id}/messages", handle_send)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/sandbox/messages", handle_list_messages)
    app.router.add_delete("/sandbox/messages", handle_clear_messages)
    app.router.add_get("/sandbox/messages/{wamid}", handle_get_message)
    app.router.add_get("/sandbox/inbound", handle_list_inbound)
    app.router.add_post("/sandbox/inbound", handle_inbound)
    app.router.add_get("/sandbox/stats", handle_stats)
    app.router.add_delete("/sandbox/stats", handle_reset_stats)
    app.router.add_post("/sandbox/reset", handle_reset)
    app.router.add_get("/sandbox/faults", handle_get_fault)
    app.router.add_post("/sandbox/faults", handle_set_fault)
    app.router.add_delete("/sandbox/faults", handle_clear_fault)
    app.router.add_post("/sandbox/clock", handle_clock)
    app.router.add_get("/sandbox/templates", handle_templates)
    return app


async def run_sandbox(config: SandboxConfig) -> None:
    """Serve the sandbox on ``config.host:config.port`` until cancelled."""
    app = build_app(config)
    # No access log: query strings such as ?to=+34... would put phone numbers in it.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        log.info(
            "whatsapp_sandbox.listening",
            host=config.host,
            port=config.port,
            templates=len(config.templates),
            webhooks=config.webhook_url is not None,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Local WhatsApp Cloud API sandbox")
    parser.add_argument("--host", default=env("WA_SANDBOX_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("WA_SANDBOX_PORT", "8070")))
    parser.add_argument("--templates", default=env("WA_SANDBOX_TEMPLATES"))
    parser.add_argument("--webhook-url", default=env("WA_SANDBOX_WEBHOOK_URL"))
    parser.add_argument("--phone-number-id", action="append", dest="phone_number_ids")
    parser.add_argument("--unreachable", action="append", default=[])
    parser.add_argument("--failure-share", type=float, default=0.0)
    parser.add_argument("--read-share", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=80.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--reengagement-error", choices=["webhook", "sync"], default="webhook")
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m connectors.whatsapp.sandbox``; secrets come from WA_SANDBOX_TOKEN/APP_SECRET."""
    args = _parse_args(argv)
    token = os.environ.get("WA_SANDBOX_TOKEN")
    if not token:
        raise SystemExit("set WA_SANDBOX_TOKEN to the bearer token the sandbox should expect")
    settings: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "token": token,
        "app_secret": os.environ.get("WA_SANDBOX_APP_SECRET") or None,
        "webhook_url": args.webhook_url or None,
        "unreachable": frozenset(args.unreachable),
        "failure_share": args.failure_share,
        "read_share": args.read_share,
        "rate_per_second": args.rate,
        "seed": args.seed,
        "reengagement_error": args.reengagement_error,
    }
    if args.phone_number_ids:
        settings["phone_number_ids"] = tuple(args.phone_number_ids)
    try:
        if args.templates:
            settings["templates"] = tuple(load_templates(args.templates))
        config = SandboxConfig(**settings)
    except (TemplateFileError, ValidationError) as exc:
        raise SystemExit(str(exc)) from None
    asyncio.run(_serve_until_signalled(config))


async def _serve_until_signalled(config: SandboxConfig) -> None:
    # SIGTERM (docker stop, make's kill) should run the same cleanup as Ctrl-C.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_sandbox(config)
    log.info("whatsapp_sandbox.stopped")


if __name__ == "__main__":
    main()
