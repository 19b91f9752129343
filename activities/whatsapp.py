"""The WhatsApp activity: quiet hours, template rendering and the frequency cap, then a SendRequest.

Consent, opt-out and phone validity are the connector's checks; here a skip is a DeliveryEvent.

Choices where the contract is silent:
- Order of checks: quiet hours, then rendering, then the cap, so a broken template is reported
  even to capped profiles, and a delayed message is capped by the sends at its real send time.
- A skipped message keeps its deterministic message id and becomes the instance's pending
  message, so a later wait on its statuses never matches an older message of the instance.
- Values render like CEL's string(): integral doubles lose the `.0` (42.0 -> "42", 42.5 ->
  "42.5"), booleans are `true`/`false`, timestamps ISO-8601; null, lists, maps and blank text
  are template errors, because WhatsApp rejects empty parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from activities.base import StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.common import construct, format_duration
from schemas.journey import FrequencyCap, QuietHours, WhatsAppActivity
from schemas.messages import (
    DeliveryError,
    DeliveryEvent,
    DeliveryStatus,
    RenderedMedia,
    RenderedParameters,
    SendRequest,
    SkipReason,
)

_CONSENT = frozenset({"opted_in", "opted_out", "unknown"})


class TemplateError(Exception):
    """A parameter could not be rendered; the message names the parameter."""


def message_id(
    journey_id: str, version: int, profile_id: str, activity_id: str, visit: int | str
) -> str:
    """The deterministic id of one send (DESIGN.md): replays yield the same id, never a new one.

    For a campaign the visit is the run id, so a run never messages a profile twice.
    """
    return f"{journey_id}:{version}:{profile_id}:{activity_id}:{visit}"


def run(ctx: StepContext, activity: WhatsAppActivity, now: datetime) -> StepOutcome:
    journey = ctx.journey
    visit = ctx.run_id if ctx.run_id is not None else ctx.visit
    mid = message_id(journey.id, ctx.version, ctx.profile_id, ctx.activity_id, visit)
    quiet = journey.quiet_hours
    if quiet is not None:
        until = quiet_hours_end(quiet, ctx.profile.get("timezone"), now)
        if until is not None:
            if quiet.action == "delay":
                return StepOutcome.wait_for("quiet_hours", until)
            title = f"quiet hours {quiet.start}-{quiet.end} until {until.isoformat()}"
            return _skip(ctx, activity, mid, now, SkipReason.QUIET_HOURS, title, activity.next)
    try:
        parameters, media = render(ctx, activity)
    except TemplateError as exc:
        target = activity.on_error or activity.next
        return _skip(ctx, activity, mid, now, SkipReason.TEMPLATE_ERROR, str(exc), target)
    cap = journey.frequency_cap
    if cap is not None and is_capped(cap, ctx.whatsapp_sends, now):
        title = f"frequency cap of {cap.max} per {format_duration(cap.per)} reached"
        return _skip(ctx, activity, mid, now, SkipReason.FREQUENCY_CAPPED, title, activity.next)
    consent = ctx.profile.get("whatsapp_consent")
    phone = ctx.profile.get("phone")
    send = construct(
        SendRequest,
        message_id=mid,
        journey_id=journey.id,
        journey_version=ctx.version,
        activity_id=ctx.activity_id,
        profile_id=ctx.profile_id,
        to=phone if isinstance(phone, str) else None,
        consent=consent if consent in _CONSENT else "unknown",
        template=activity.template,
        language=activity.language,
        parameters=parameters,
        media=media,
        requested_at=now,
        trigger_at=ctx.trigger_at,
        on_paused=activity.on_paused,
        wait_until=ctx.deadline,
        channel="whatsapp",
        kind="template",
        text=None,
        phone_number_id=None,
    )
    detail = "delayed by quiet hours" if ctx.resumed else None
    return StepOutcome(outcome="sent", next=activity.next, detail=detail, send=send, message_id=mid)


def quiet_hours_end(quiet: QuietHours, profile_timezone: Any, now: datetime) -> datetime | None:
    """When the quiet window around `now` ends (UTC), or None when `now` is outside it."""
    zone = _zone(quiet, profile_timezone)
    local = now.astimezone(zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    minute = local.hour * 60 + local.minute
    end_day = local.date()
    if start < end:
        if not start <= minute < end:
            return None
    elif minute >= start:
        end_day += timedelta(days=1)  # the window crosses midnight; it ends tomorrow
    elif minute >= end:
        return None
    wake = datetime.combine(end_day, time(end // 60, end % 60), tzinfo=zone).astimezone(UTC)
    # A daylight-saving jump can put the local end time at or before now; never wake in the past.
    return wake if wake > now else now + timedelta(minutes=1)


def is_capped(cap: FrequencyCap, sends: Sequence[datetime], now: datetime) -> bool:
    since = now - cap.per
    return sum(1 for sent_at in sends if sent_at > since) >= cap.max


def render(
    ctx: StepContext, activity: WhatsAppActivity
) -> tuple[RenderedParameters, RenderedMedia | None]:
    """Every header, body and button parameter and the media link, as text."""
    params = activity.parameters
    rendered = construct(
        RenderedParameters,
        header=[_render(ctx, "header", i, src) for i, src in enumerate(params.header, 1)],
        body=[_render(ctx, "body", i, src) for i, src in enumerate(params.body, 1)],
        buttons=[_render(ctx, "button", i, src) for i, src in enumerate(params.buttons, 1)],
    )
    media = None
    if activity.media is not None:
        link = _render(ctx, "media link", None, activity.media.link)
        media = construct(RenderedMedia, type=activity.media.type, link=link)
    return rendered, media


def render_value(value: Any) -> str:
    """A CEL value as template text; raises ValueError for values that are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None:
        raise ValueError("gave null")
    raise ValueError(f"gave a {type(value).__name__}, not a single value")


def _render(ctx: StepContext, part: str, index: int | None, source: str) -> str:
    name = f"{part} parameter {index}" if index is not None else part
    try:
        text = render_value(ctx.evaluate(source))
    except ExpressionError as exc:
        raise TemplateError(f"{name} ({source}): {exc.reason}") from None
    except ValueError as exc:
        raise TemplateError(f"{name} ({source}): {exc}") from None
    if not text.strip():
        raise TemplateError(f"{name} ({source}): rendered empty")
    return text


def _skip(
    ctx: StepContext,
    activity: WhatsAppActivity,
    mid: str,
    now: datetime,
    reason: SkipReason,
    title: str,
    next_id: str,
) -> StepOutcome:
    delivery = construct(
        DeliveryEvent,
        message_id=mid,
        wamid=None,
        journey_id=ctx.journey.id,
        journey_version=ctx.version,
        activity_id=ctx.activity_id,
        profile_id=ctx.profile_id,
        channel="whatsapp",
        template=activity.template,
        language=activity.language,
        status=DeliveryStatus.SKIPPED,
        error=construct(DeliveryError, code=None, title=title, retriable=False, reason=reason),
        occurred_at=now,
    )
    return StepOutcome(
        outcome=reason.value, next=next_id, detail=title, delivery=delivery, message_id=mid
    )


def _zone(quiet: QuietHours, profile_timezone: Any) -> ZoneInfo:
    name = quiet.timezone
    if name == "profile":
        name = profile_timezone if isinstance(profile_timezone, str) else quiet.default_timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # A profile attribute that names no zone falls back instead of stopping the journey.
        return ZoneInfo(quiet.default_timezone)


def _clock(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)
