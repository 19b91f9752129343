"""The HTTP ingestion API's wire formats (`POST /v1/events`), for its OpenAPI document."""

from __future__ import annotations

from pydantic import Field

from schemas.common import StrictModel
from schemas.events import ProfileEvent

MAX_EVENTS_PER_REQUEST = 500
MAX_REQUEST_BYTES = 1024 * 1024


class EventsRequest(StrictModel):
    """A batch of profile events. Each is validated on its own: a bad one is rejected by
    its index while the others are accepted."""

    events: list[ProfileEvent] = Field(max_length=MAX_EVENTS_PER_REQUEST)


class Rejection(StrictModel):
    """An event of the batch that was not accepted, and why (the engine's dead-letter reason)."""

    index: int = Field(ge=0, description="the event's position in the batch, from 0")
    event_id: str | None = Field(description="the event's event_id, when it has one")
    error: str


class EventsAccepted(StrictModel):
    """Every accepted event is acknowledged by all in-sync replicas of profile-events."""

    accepted: int = Field(ge=0)
    rejected: list[Rejection]


class ApiError(StrictModel):
    """Why a whole request was refused."""

    error: str
