"""What the interpreter is given: whether a profile event's bytes can be processed (the one
check the engine and the ingestion API share, so an event the API accepts is an event the
engine takes), and a delivery status as the profile event journeys wait for.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import ValidationError

from schemas.common import construct, format_duration
from schemas.events import MAX_EVENT_BYTES, ProfileEvent
from schemas.messages import DeliveryEvent, DeliveryStatus


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


def check_event_time(
    event: ProfileEvent,
    now: datetime,
    *,
    max_age: timedelta = timedelta(days=91),
    max_future: timedelta = timedelta(hours=1),
) -> str | None:
    """Why an event's time makes it unusable (a dead-letter reason), or None when it is fine."""
    if event.occurred_at < now - max_age:
        return (
            f"event {event.event_id!r} occurred at {event.occurred_at.isoformat()}, "
            f"more than {format_duration(max_age)} before {now.isoformat()}"
        )
    if event.occurred_at > now + max_future:
        return (
            f"event {event.event_id!r} occurred at {event.occurred_at.isoformat()}, "
            f"more than {format_duration(max_future)} after {now.isoformat()}: "
            "check the sender's clock"
        )
    return None


def delivery_to_event(delivery: DeliveryEvent) -> ProfileEvent:
    """A delivery status as the profile event that journeys wait for (`whatsapp.read`, ...)."""
    status = DeliveryStatus(delivery.status).value
    error = delivery.error.model_dump(mode="json", exclude_none=True) if delivery.error else None
    return construct(
        ProfileEvent,
        event_id=f"delivery:{delivery.message_id}:{status}",
        type=f"whatsapp.{status}",
        profile_id=delivery.profile_id,
        occurred_at=delivery.occurred_at,
        attributes=None,
        data={
            "message_id": delivery.message_id,
            "wamid": delivery.wamid,
            "journey_id": delivery.journey_id,
            "journey_version": delivery.journey_version,
            "activity_id": delivery.activity_id,
            "template": delivery.template,
            "error": error,
        },
    )
