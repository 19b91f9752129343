"""Profile events, phone numbers and profiles for tests and benchmarks, built one way.

Everything here is plain data (dicts, or the key and value bytes of a Kafka record), so a
test, a reliability run and a benchmark feed the engine the same shapes. Invariant: every
phone number built here is a valid E.164 Spanish mobile the sandbox accepts, and a profile
gets the same number every time it is built.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

FIRST_NAMES = ("Ana", "Luis", "Marta", "John", "Emma", "Pablo")


def now_iso(timespec: str = "auto") -> str:
    """The current UTC time as profile events carry it (`2026-11-24T10:00:00Z`)."""
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def phone(i: int) -> str:
    """A valid Spanish mobile number (E.164) for profile number `i`."""
    return f"+3461{i % 10_000_000:07d}"


def profile_event(
    event_id: str,
    type_: str,
    profile_id: str,
    *,
    attributes: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    """A ProfileEvent as JSON data; `occurred_at` defaults to now, `attributes` to none."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": type_,
        "profile_id": profile_id,
        "occurred_at": occurred_at or now_iso(),
        "data": data or {},
    }
    if attributes is not None:
        event["attributes"] = attributes
    return event


def customer_attributes(i: int) -> dict[str, Any]:
    """A reachable profile: phone, name, language (even `es`, odd `en`), zone, opted in."""
    return {
        "phone": phone(i),
        "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
        "language": "es" if i % 2 == 0 else "en",
        "timezone": "Europe/Madrid",
        "whatsapp_consent": "opted_in",
    }


def event_record(
    i: int,
    run: str,
    *,
    event_type: str = "cart.abandoned",
    occurred_at: str,
    data: dict[str, Any] | None = None,
    seq: int = 0,
) -> tuple[bytes, bytes]:
    """(key, value) of profile `p-{run}-{i}`'s event number `seq`, with the profile's
    attributes and a cart worth 25-124 unless `data` is given."""
    profile_id = f"p-{run}-{i}"
    event = profile_event(
        f"e-{run}-{i}-{seq}",
        event_type,
        profile_id,
        attributes=customer_attributes(i),
        data=data if data is not None else {"cart_total": 25 + i % 100, "items": 1 + i % 4},
        occurred_at=occurred_at,
    )
    return profile_id.encode(), orjson.dumps(event)
