"""A record that could not be processed, kept whole with the reason, for operators."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import AwareDatetime

from schemas.common import StrictModel


class DeadLetter(StrictModel):
    """The original key and bytes (base64, plus text when it decodes) and why it was refused."""

    reason: str
    error_type: str
    component: str
    source_topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    value_base64: str
    value_text: str | None = None
    occurred_at: AwareDatetime


def dead_letter_record(
    *,
    reason: str,
    error_type: str,
    component: str,
    key: bytes | None,
    value: bytes | None,
    now: datetime,
    source_topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> bytes:
    """A DeadLetter (JSON bytes) that keeps the original bytes whole, plus their text if any."""
    raw = value or b""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    record = DeadLetter(
        reason=reason,
        error_type=error_type,
        component=component,
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=None if key is None else key.decode("utf-8", "replace"),
        value_base64=base64.b64encode(raw).decode("ascii"),
        value_text=text,
        occurred_at=now,
    )
    return record.model_dump_json().encode()
