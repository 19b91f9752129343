"""What the engine asks a channel to send, and what happened to it.

SendRequest travels on `whatsapp-requests`; DeliveryEvent on `delivery-events`.
Both are keyed by profile id.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import StrictModel
from schemas.events import ConsentStatus


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    NO_CONSENT = "no_consent"
    OPTED_OUT = "opted_out"
    FREQUENCY_CAPPED = "frequency_capped"
    QUIET_HOURS = "quiet_hours"
    INVALID_PHONE = "invalid_phone"
    TEMPLATE_ERROR = "template_error"
    OUTSIDE_WINDOW = "outside_window"
    TEMPLATE_PAUSED = "template_paused"
    TEMPLATE_DISABLED = "template_disabled"
    MARKETING_OPTED_OUT = "marketing_opted_out"


class DeliveryError(StrictModel):
    """Why a message failed (Meta's code and title) or was skipped (`reason`).

    `code` is Meta's error code, or `transport` when the Cloud API could not be reached
    (refused, DNS, TLS, timeout); the title then names the cause and the host.
    """

    code: int | Literal["transport"] | None = None
    title: str
    retriable: bool = False
    reason: SkipReason | None = None


class Pricing(StrictModel):
    """What Meta charges for a message, as its status webhooks say (per-message pricing)."""

    billable: bool
    pricing_model: str = Field(description="PMP: per-message pricing")
    category: str = Field(description="marketing, utility, authentication, service, ...")
    type: str | None = Field(
        default=None, description="regular, free_customer_service, free_entry_point, ..."
    )


class RenderedParameters(StrictModel):
    header: list[str] = Field(default_factory=list)
    body: list[str] = Field(default_factory=list)
    buttons: list[str] = Field(default_factory=list)


class RenderedMedia(StrictModel):
    type: Literal["image", "video", "document"]
    link: str


class SendRequest(StrictModel):
    """One message to send. `message_id` is deterministic: journey:version:profile:activity:visit."""

    message_id: str
    journey_id: str
    journey_version: int
    activity_id: str
    profile_id: str
    channel: Literal["whatsapp"] = "whatsapp"
    kind: Literal["template", "text"] = "template"
    to: str | None = Field(
        default=None, description="the profile's phone as known; checked by the connector"
    )
    consent: ConsentStatus = "unknown"
    template: str | None = None
    language: str | None = None
    parameters: RenderedParameters = Field(default_factory=RenderedParameters)
    media: RenderedMedia | None = None
    text: str | None = Field(
        default=None, description="free-form text, only for replies inside the 24-hour window"
    )
    phone_number_id: str | None = Field(
        default=None, description="business number; the connector's default when empty"
    )
    requested_at: AwareDatetime
    trigger_at: AwareDatetime | None = Field(
        default=None, description="when the event that caused this send occurred"
    )
    on_paused: Literal["skip", "wait"] = Field(
        default="skip",
        description="a PAUSED template: skip the send, or wait until reinstated (or wait_until)",
    )
    wait_until: AwareDatetime | None = Field(
        default=None, description="the latest a held send may wait: the journey's deadline"
    )


class DeliveryEvent(StrictModel):
    """One status of one message, for analysts and for journeys that wait on delivery."""

    message_id: str
    wamid: str | None = None
    journey_id: str
    journey_version: int
    activity_id: str
    profile_id: str
    channel: Literal["whatsapp"] = "whatsapp"
    template: str | None = None
    language: str | None = None
    status: DeliveryStatus
    error: DeliveryError | None = None
    pricing: Pricing | None = Field(
        default=None, description="Meta's pricing of the message, on sent/delivered statuses"
    )
    country_code: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,3}$",
        description="the recipient's country calling code (34), with pricing: prices differ",
    )
    occurred_at: AwareDatetime
