"""Graph API errors as the sandbox answers them: codes, titles, HTTP statuses."""

from __future__ import annotations

import secrets
from typing import Any

# Where the sandbox follows Meta rather than the obvious choice:
# * 131026 (undeliverable) is never a synchronous error: the send is accepted and a `failed`
#   status webhook carries the code, as the Cloud API does for numbers without WhatsApp.
# * 131047 (outside the 24-hour window) is also asynchronous by default, as the Cloud API does
#   it today; reengagement_error="sync" makes it a 400 for connectors that test that path.
# * 130429 answers HTTP 429 (Meta's current table); rate_limit_http_status=400 reproduces the
#   older answer some accounts still get.
# * 131049 (marketing limit per user) and 131050 (user stopped marketing) come as `failed`
#   status webhooks; 131056 (pair rate limit) is a synchronous 400.
# * The messaging limit (unique users reached with templates in a moving window) has no
#   dedicated code in Meta's table: a user beyond it gets a `failed` status with 131048.
# * An unknown phone_number_id is Graph's generic 400 / code 100 / subcode 33
#   GraphMethodException, not a WhatsApp error.

ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# Titles as Meta's error-code reference words them; the message field is "(#code) title".
ERROR_TITLES: dict[int, str] = {
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    2500: "Unknown path components",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement",
    131050: "Unable to deliver the message: the user stopped marketing messages",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132005: "Translated text too long",
    132012: "Parameter format does not match format in the created template",
    132015: "Template is Paused",
    132016: "Template is Disabled",
    132018: "There was an issue with the parameters in your template",
}
ERROR_HTTP_STATUS: dict[int, int] = {
    1: 400,
    2: 503,
    190: 401,
    130429: 429,
    131000: 500,
    132001: 404,
}
ASYNC_DETAILS: dict[int, str] = {
    131026: "Message Undeliverable.",
    131048: (
        "Message failed to send because there are restrictions on how many messages can be "
        "sent from this phone number."
    ),
    131049: (
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered."
    ),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving "
        "marketing messages on WhatsApp from your business."
    ),
    131047: (
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number."
    ),
}


class ApiError(Exception):
    """A Graph API error response, raised while checking a request."""

    def __init__(
        self,
        code: int,
        details: str | None = None,
        *,
        message: str | None = None,
        http_status: int | None = None,
        error_type: str = "OAuthException",
        subcode: int | None = None,
        with_error_data: bool = True,
    ) -> None:
        self.code = code
        self.details = details
        self.message = message or f"(#{code}) {ERROR_TITLES.get(code, 'Unknown error')}"
        self.http_status = http_status or ERROR_HTTP_STATUS.get(code, 400)
        self.error_type = error_type
        self.subcode = subcode
        self.with_error_data = with_error_data
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.with_error_data:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details or ""}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(20)[:26]
        return {"error": error}
