"""Meta's account-level webhooks, turned into `whatsapp-controls` records. Pure: no I/O.

Fields handled (entry.changes[].field), each to the records connectors.whatsapp.controls
describes:

- message_template_status_update: the event (APPROVED, PAUSED, DISABLED, FLAGGED,
  REJECTED, PENDING, IN_APPEAL; REINSTATED is APPROVED again) and Meta's reason.
- message_template_quality_update: new_quality_score (GREEN, YELLOW, RED, UNKNOWN).
- template_category_update: new_category, with previous_category kept for operators.
- user_preferences: marketing_messages "stop" / "resume" set and clear the user's
  marketing opt-out (the profile comes from the phone directory).
- business_capability_update: max_daily_conversations_per_business (or the older
  per-phone field) is the messaging-limit tier; -1 is unlimited.

And from message statuses: a failed status with 131049 holds marketing to the profile for
24 hours; with 131050 it sets the marketing opt-out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.whatsapp.controls import (
    MARKETING_HOLD,
    Record,
    hold_record,
    optout_record,
    template_records,
    tier_record,
)
from schemas.templates import STATUS_EVENTS

FIELDS = frozenset(
    {
        "message_template_status_update",
        "message_template_quality_update",
        "template_category_update",
        "user_preferences",
        "business_capability_update",
    }
)
QUALITIES = frozenset({"GREEN", "YELLOW", "RED", "UNKNOWN"})
CATEGORIES = frozenset({"marketing", "utility", "authentication"})


def changes(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field, value) of every change in a webhook payload."""
    for entry in payload.get("entry") or ():
        if not isinstance(entry, dict):
            continue
        for change in entry.get("changes") or ():
            if isinstance(change, dict) and isinstance(change.get("value"), dict):
                yield str(change.get("field", "")), change["value"]


def _when(raw: object, fallback: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(str(raw)), UTC)
    except (TypeError, ValueError, OverflowError):
        return fallback


def control_records(
    field: str, value: dict[str, Any], profile_for: Callable[[str], str], now: datetime
) -> list[Record]:
    """The control records one change carries; [] for anything not understood.

    `profile_for` maps Meta's wa_id (digits) to the profile id."""
    name = str(value.get("message_template_name") or "")
    language = str(value.get("message_template_language") or "")
    template = bool(name and language)
    if field == "message_template_status_update" and template:
        status = STATUS_EVENTS.get(str(value.get("event", "")).upper())
        if status is None:
            return []
        reason = value.get("reason")
        return template_records(
            name, language, now, status=status, reason=str(reason) if reason else None
        )
    if field == "message_template_quality_update" and template:
        quality = str(value.get("new_quality_score", "")).upper()
        return (
            template_records(name, language, now, quality=quality) if quality in QUALITIES else []
        )
    if field == "template_category_update" and template:
        new = str(value.get("new_category", "")).lower()
        old = str(value.get("previous_category", "")).lower()
        if new not in CATEGORIES:
            return []
        previous = old if old in CATEGORIES else None
        return template_records(name, language, now, category=new, previous=previous)
    if field == "user_preferences":
        records = []
        for pref in value.get("user_preferences") or ():
            if not isinstance(pref, dict) or pref.get("category") != "marketing_messages":
                continue
            wa_id, choice = pref.get("wa_id"), pref.get("value")
            if not isinstance(wa_id, str) or not wa_id or choice not in ("stop", "resume"):
                continue
            at = _when(pref.get("timestamp"), now)
            records.append(optout_record(profile_for(wa_id), choice == "stop", at))
        return records
    if field == "business_capability_update":
        limit = value.get("max_daily_conversations_per_business")
        if limit is None:
            limit = value.get("max_daily_conversation_per_phone")
        if not isinstance(limit, int):
            return []
        return [tier_record(limit if limit > 0 else None, now)]
    return []


def status_error_records(profile_id: str, code: int | None, now: datetime) -> list[Record]:
    """What a failed status's error code says about the profile's marketing messages."""
    if code == 131049:
        return [hold_record(profile_id, now + MARKETING_HOLD)]
    if code == 131050:
        return [optout_record(profile_id, True, now)]
    return []
