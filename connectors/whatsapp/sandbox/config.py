"""The sandbox's configuration and its phone-number helpers."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from schemas.templates import Template


# The phone helpers stay here until the project has one phone masker (issue 21, item 3).
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
    # Meta's messaging limit: unique users reached with templates outside the customer
    # service window per moving window; None is unlimited.
    messaging_limit: int | None = Field(default=None, ge=1)
    messaging_window_seconds: float = Field(default=24 * 3600, gt=0)
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
