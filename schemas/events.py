"""Profile events from upstream systems and inbound WhatsApp messages.

The topic `profile-events` carries ProfileEvent JSON keyed by profile id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, ConfigDict, Field, JsonValue

from schemas.common import E164Phone, EventType, StrictModel, TimeZoneName

MAX_EVENT_BYTES = 64 * 1024  # AJO's limit on one event; bigger ones go to the dead-letter topic

ConsentStatus = Literal["opted_in", "opted_out", "unknown"]


class ProfileAttributes(StrictModel):
    """Profile attribute updates. Known keys are checked; any other key is kept as it is."""

    model_config = ConfigDict(extra="allow")

    phone: E164Phone | None = None
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}([_-][A-Za-z]{2,4})?$")
    timezone: TimeZoneName | None = None
    whatsapp_consent: ConsentStatus | None = None


class ProfileEvent(StrictModel):
    """One event about one profile, published by an upstream system (the contract in DESIGN.md)."""

    event_id: str = Field(min_length=1, max_length=200)
    type: EventType
    profile_id: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    attributes: ProfileAttributes | None = None
    data: dict[str, JsonValue] = Field(default_factory=dict)


class InboundMessage(StrictModel):
    """A message a person sent to the business number, as the webhook receiver saw it."""

    wamid: str
    from_phone: E164Phone
    phone_number_id: str
    type: str = "text"
    text: str | None = None
    context_wamid: str | None = None
    received_at: datetime
    profile_id: str | None = None
