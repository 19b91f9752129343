"""Whether a profile event's bytes can be processed: the one check the engine and the
ingestion API share, so an event the API accepts is an event the engine takes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ValidationError

from engine.core.interpreter import check_event_time
from schemas.events import MAX_EVENT_BYTES, ProfileEvent


class InvalidEvent(Exception):
    """A profile event the engine would dead-letter; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validation_reason(exc: ValidationError, what: str = "profile event") -> str:
    """The first five problems of a validation error, as `invalid <what>: loc: msg; ...`."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(parts)


def parse_profile_event(value: bytes | None) -> ProfileEvent:
    """The event in `value`, or InvalidEvent: empty, over MAX_EVENT_BYTES, not JSON, or not
    a ProfileEvent.

    Any bytes give an event or a short reason, in time and memory bounded by
    MAX_EVENT_BYTES: the size is checked before anything is parsed."""
    if not value:
        raise InvalidEvent("empty record value")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event too large: {len(value)} bytes (limit {MAX_EVENT_BYTES})")
    try:
        return ProfileEvent.model_validate_json(value)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidEvent("malformed JSON") from None
        raise InvalidEvent(validation_reason(exc)) from None


def admit_profile_event(
    value: bytes | None, now: datetime, *, max_age: timedelta, max_future: timedelta
) -> ProfileEvent:
    """`parse_profile_event`, and InvalidEvent if the event occurred outside
    [now - max_age, now + max_future]: every check the engine makes of an event but the
    record's (its key and partition)."""
    event = parse_profile_event(value)
    reason = check_event_time(event, now, max_age=max_age, max_future=max_future)
    if reason:
        raise InvalidEvent(reason)
    return event
