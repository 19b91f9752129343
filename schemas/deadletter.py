"""A record that could not be processed, kept whole with the reason, for operators."""

from __future__ import annotations

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
