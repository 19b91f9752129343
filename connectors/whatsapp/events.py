"""DeliveryEvents the connector writes, and the errors they carry.

Built without validation from validated requests, the connector's own enums and its clock.
"""

from __future__ import annotations

from datetime import datetime

from connectors.whatsapp.client import SendOutcome
from schemas.common import construct
from schemas.messages import DeliveryError, DeliveryEvent, DeliveryStatus, SendRequest, SkipReason

SKIP_TITLES: dict[SkipReason, str] = {
    SkipReason.NO_CONSENT: "no WhatsApp opt-in for this profile",
    SkipReason.OPTED_OUT: "the profile opted out of WhatsApp",
    SkipReason.FREQUENCY_CAPPED: "frequency cap reached",
    SkipReason.QUIET_HOURS: "inside quiet hours",
    SkipReason.INVALID_PHONE: "no valid E.164 phone number",
    SkipReason.TEMPLATE_ERROR: "the request has no template (or no text) to send",
    SkipReason.OUTSIDE_WINDOW: "free-form text outside the 24-hour customer-service window",
    SkipReason.TEMPLATE_PAUSED: "Meta paused the template",
    SkipReason.TEMPLATE_DISABLED: "Meta disabled the template",
    SkipReason.MARKETING_OPTED_OUT: "the user stopped marketing messages",
}


def delivery_event(
    request: SendRequest,
    status: DeliveryStatus,
    *,
    occurred_at: datetime,
    wamid: str | None = None,
    error: DeliveryError | None = None,
) -> DeliveryEvent:
    # Built without validation: every value comes from a validated SendRequest, our own
    # enums and models, or our clock; only the time zone could be missing, so it is checked.
    if occurred_at.tzinfo is None:
        raise ValueError("a DeliveryEvent's occurred_at must carry a time zone")
    return construct(
        DeliveryEvent,
        message_id=request.message_id,
        wamid=wamid,
        journey_id=request.journey_id,
        journey_version=request.journey_version,
        activity_id=request.activity_id,
        profile_id=request.profile_id,
        channel="whatsapp",
        template=request.template,
        language=request.language,
        status=status,
        error=error,
        occurred_at=occurred_at,
    )


def failed_error(outcome: SendOutcome) -> DeliveryError:
    return DeliveryError(
        code=outcome.code, title=outcome.title or "send failed", retriable=outcome.retriable
    )


def skipped_error(reason: SkipReason, title: str | None = None) -> DeliveryError:
    return DeliveryError(title=title or SKIP_TITLES[reason], reason=reason)
