"""How traces read on a terminal: ISO times in UTC and timeline rows, phones masked."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.testing.runner import Line, Trace
from schemas.common import mask_phones_in


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def masked(text: str) -> str:
    """Free text with anything shaped like a phone number masked (event data, details)."""
    return mask_phones_in(text)


def timeline_row(line: Line) -> str:
    """`time  journey/activity  what  detail`, aligned."""
    where = f"{line.journey_id}/{line.activity_id}" if line.journey_id else ""
    return f"{iso(line.at)}  {where:<28} {line.what:<24} {masked(line.detail)}".rstrip()


def timeline_lines(trace: Trace) -> list[str]:
    return [timeline_row(line) for line in trace.timeline]
