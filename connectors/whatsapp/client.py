"""The WhatsApp Cloud API client: one pooled HTTP client that turns a SendRequest into one call.

It builds Meta's message payload, classifies every answer as accepted, retriable or final,
and counts sends in Prometheus. It never retries or paces by itself: the connector does.

Calls go straight through aiohttp's connection pool (`AiohttpPoster`): httpx's client
layer costs more CPU per call and leaves its Response and stream in reference cycles for
the garbage collector. Errors still take httpx's types, and a custom httpx transport
(`transport=`, e.g. httpx.MockTransport in tests) goes through an httpx client
(`HttpxPoster`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import httpx
import orjson
import structlog
import yarl
from prometheus_client import Counter

from connectors.whatsapp.transport import TRANSPORT_CODE, transport_title
from schemas.common import mask_phone, mask_phones_in
from schemas.messages import SendRequest
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.client")

# Meta's error codes (https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/).
# Worth another try later: rate limits, throttling and Meta's own transient failures.
RETRIABLE_CODES = frozenset({130429, 80007, 131056, 131000, 1, 2, 4})
# Final: the request itself is wrong, the person cannot be reached, or the token is bad.
FINAL_CODES = frozenset(
    {131047, 131026, 131049, 131050, 132000, 132001, 132015, 132016, 131008, 131009, 100, 190}
)
MARKETING_LIMITED = 131049  # Meta limits marketing messages to this user for now
MARKETING_OPTED_OUT = 131050  # the user stopped marketing messages from this business
PAIR_RATE_LIMITED = 131056  # too many messages to this one user: back off for them only
# Over the business number's throughput cap: pause the number, not just this message.
RATE_LIMIT_CODES = frozenset({130429, 80007})
AUTH_ERROR_CODE = 190
CALLBACK_DATA_MAX_CHARS = 512
# Fields dropped from biz_opaque_callback_data, in this order, when it would exceed 512 chars;
# the receiver then falls back to its wamid map for the rest.
_CALLBACK_DROP_ORDER = ("language", "template", "activity_id", "journey_version", "journey_id")
QUICK_REPLY_PREFIX = "payload:"
# Failures before the request was written (no connection, or none free in the pool):
# Meta cannot have the message. Any other transport failure leaves the call in doubt.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_CODE_PREFIX = re.compile(r"^\(#\d+\)\s*")

SENDS = Counter(
    "whatsapp_sends_total",
    "Cloud API calls: status accepted, failed (Meta's error code) or error (code transport:"
    " no answer)",
    ["status", "code"],
)
_SENT_ACCEPTED = SENDS.labels(status="accepted", code="")  # looked up once, not per call
AUTH_ERRORS = Counter(
    "whatsapp_auth_errors_total",
    "Cloud API answers with code 190: the access token is invalid or expired",
)


def is_retriable(code: int | None, http_status: int | None) -> bool:
    """Whether a failed call may succeed if made again later.

    Known codes decide; otherwise HTTP 429 and 5xx are retriable, other 4xx are final,
    and no answer at all (timeout, connection error: code and status both None) is retriable.
    """
    if code in RETRIABLE_CODES:
        return True
    if code in FINAL_CODES:
        return False
    if http_status is None:
        return True
    return http_status == 429 or http_status >= 500


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one call ended as. `wamid` is set when accepted; `code`/`title` when not."""

    accepted: bool
    wamid: str | None = None
    code: int | Literal["transport"] | None = None
    title: str | None = None
    details: str | None = None
    retriable: bool = False
    http_status: int | None = None
    # No answer, but the request went out (read timeout, connection closed): Meta may
    # have taken the message, so a retry could send it twice (connectors/whatsapp/indoubt.py).
    in_doubt: bool = False

    @property
    def rate_limited(self) -> bool:
        return self.code in RATE_LIMIT_CODES


def callback_data(request: SendRequest) -> str | None:
    """Compact JSON Meta echoes in every status webhook, so statuses find their journey step."""
    data: dict[str, Any] = {
        "message_id": request.message_id,
        "journey_id": request.journey_id,
        "journey_version": request.journey_version,
        "activity_id": request.activity_id,
        "profile_id": request.profile_id,
        "template": request.template,
        "language": request.language,
    }
    data = {k: v for k, v in data.items() if v is not None}
    encoded = orjson.dumps(data).decode()
    for name in _CALLBACK_DROP_ORDER:
        if len(encoded) <= CALLBACK_DATA_MAX_CHARS:
            return encoded
        data.pop(name, None)
        encoded = orjson.dumps(data).decode()
    return encoded if len(encoded) <= CALLBACK_DATA_MAX_CHARS else None


def _text_params(values: list[str]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": value} for value in values]


def template_components(request: SendRequest) -> list[dict[str, Any]]:
    """Header, body and button components from the request's rendered values.

    Buttons are positional: entry i fills the template's button at index i. A url button
    takes the value as its URL suffix; a value written `payload:<data>` is a quick-reply
    payload; an empty value sends nothing for that button (a static one).
    """
    params = request.parameters
    components: list[dict[str, Any]] = []
    if request.media is not None:
        media = request.media
        components.append(
            {
                "type": "header",
                "parameters": [{"type": media.type, media.type: {"link": media.link}}],
            }
        )
    elif params.header:
        components.append({"type": "header", "parameters": _text_params(params.header)})
    if params.body:
        components.append({"type": "body", "parameters": _text_params(params.body)})
    for index, value in enumerate(params.buttons):
        if not value:
            continue
        button: dict[str, Any] = {"type": "button", "index": str(index)}
        if value.startswith(QUICK_REPLY_PREFIX):
            payload = value[len(QUICK_REPLY_PREFIX) :]
            button["sub_type"] = "quick_reply"
            button["parameters"] = [{"type": "payload", "payload": payload}]
        else:
            button["sub_type"] = "url"
            button["parameters"] = [{"type": "text", "text": value}]
        components.append(button)
    return components


def build_message(request: SendRequest) -> dict[str, Any]:
    """The Cloud API body for one request: a template, or free-form text for kind='text'."""
    to = request.to or ""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.removeprefix("+"),
    }
    if request.kind == "text":
        body["type"] = "text"
        body["text"] = {"body": request.text or "", "preview_url": False}
    else:
        body["type"] = "template"
        body["template"] = {
            "name": request.template,
            "language": {"code": request.language},
            "components": template_components(request),
        }
    opaque = callback_data(request)
    if opaque is not None:
        body["biz_opaque_callback_data"] = opaque
    return body


def _parse_error(status: int, content: bytes) -> tuple[int | None, str, str | None]:
    try:
        data = orjson.loads(content)
        error = data["error"]
        code = error.get("code")
        details = (error.get("error_data") or {}).get("details")
        title = str(error.get("error_user_title") or error.get("message") or "")
        # Meta's message reads "(#131026) Message undeliverable"; the code has its own field.
        title = _CODE_PREFIX.sub("", title) or f"HTTP {status}"
        return (code if isinstance(code, int) else None), title, details
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None, f"HTTP {status}", None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: to get a pooled connection, to open one, and between bytes of the answer."""

    pool: float
    connect: float
    read: float


class Poster(Protocol):
    """POSTs one JSON body and returns (HTTP status, body).

    Failures are raised as httpx's exceptions: httpx.TimeoutException for a timeout and
    httpx.TransportError for any other failure to get an answer.
    """

    async def post(self, url: yarl.URL, body: bytes) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class AiohttpPoster:
    """Calls through one aiohttp connection pool of at most `max_connections`."""

    def __init__(
        self, *, headers: dict[str, str], timeouts: Timeouts, max_connections: int
    ) -> None:
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool,
            sock_connect=timeouts.connect,
            sock_read=timeouts.read,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=30, enable_cleanup_closed=True
            )
            # The Cloud API authenticates by the bearer token and sets no cookie the client
            # needs: a Set-Cookie from the API or a proxy must not ride along on later calls.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        return self._session

    async def post(self, url: yarl.URL, body: bytes) -> tuple[int, bytes]:
        try:
            async with self._open().post(
                url,
                data=body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise httpx.ConnectTimeout(str(exc) or "connect timeout") from exc
        except TimeoutError as exc:  # aiohttp's socket and pool timeouts included
            raise httpx.ReadTimeout(str(exc) or "read timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class HttpxPoster:
    """Calls through an httpx client over the given transport (tests, custom transports)."""

    def __init__(
        self, *, headers: dict[str, str], timeouts: Timeouts, transport: httpx.AsyncBaseTransport
    ) -> None:
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect, pool=timeouts.pool),
            transport=transport,
            trust_env=False,
        )
        self._http._cookies = _NoCookies()  # see AiohttpPoster._open

    async def post(self, url: yarl.URL, body: bytes) -> tuple[int, bytes]:
        response = await self._http.post(str(url), content=body)
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._http.aclose()


class CloudApiClient:
    """Sends messages through the Cloud API over one pooled HTTP connection set.

    The pool is sized to `max_in_flight` (the connector never has more calls open), and
    every call has a timeout. Close it with `aclose()`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings.whatsapp_token is None or not settings.whatsapp_token.get_secret_value():
            raise ValueError("WHATSAPP_TOKEN is not set: the Cloud API needs a bearer token")
        self.default_phone_number_id = settings.whatsapp_phone_number_id
        self.api_version = settings.whatsapp_api_version
        # A trailing "/" keeps any path prefix of WHATSAPP_API_URL when paths are joined.
        self._base_url = httpx.URL(settings.whatsapp_api_url.rstrip("/") + "/")
        self._urls: dict[str, yarl.URL] = {}
        timeout = settings.whatsapp_timeout_seconds
        timeouts = Timeouts(pool=timeout, connect=min(timeout, 5.0), read=timeout)
        headers = {
            "Authorization": f"Bearer {settings.whatsapp_token.get_secret_value()}",
            "Content-Type": "application/json",
        }
        self._poster: Poster
        if transport is None:
            self._poster = AiohttpPoster(
                headers=headers, timeouts=timeouts, max_connections=settings.in_flight_limit()
            )
        else:
            self._poster = HttpxPoster(headers=headers, timeouts=timeouts, transport=transport)

    def phone_number_id(self, request: SendRequest) -> str:
        return request.phone_number_id or self.default_phone_number_id

    def _messages_url(self, phone_number_id: str) -> yarl.URL:
        # Parsed once per business number: URL parsing is a visible share of a call's CPU.
        url = self._urls.get(phone_number_id)
        if url is None:
            path = f"{self.api_version}/{phone_number_id}/messages"
            url = self._urls[phone_number_id] = yarl.URL(str(self._base_url.join(path)))
        return url

    async def send(self, request: SendRequest) -> SendOutcome:
        """Make one call; never raises for an API or network failure, it returns the outcome."""
        url = self._messages_url(self.phone_number_id(request))
        body = orjson.dumps(build_message(request))
        try:
            status, content = await self._poster.post(url, body)
        except httpx.TransportError as exc:  # timeouts included: no answer at all
            outcome = SendOutcome(
                False,
                code=TRANSPORT_CODE,
                title=transport_title(exc, url),
                retriable=True,
                in_doubt=not isinstance(exc, NOT_SENT_ERRORS),
            )
            return self._record(request, outcome)
        if 200 <= status < 300:
            try:
                wamid = orjson.loads(content)["messages"][0]["id"]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                wamid = None
            if isinstance(wamid, str) and wamid:
                return self._record(request, SendOutcome(True, wamid=wamid, http_status=status))
            # A 2xx without a message id is not an answer we can build on; ask again later.
            outcome = SendOutcome(
                False,
                title="success without a message id",
                retriable=True,
                http_status=status,
            )
            return self._record(request, outcome)
        code, title, details = _parse_error(status, content)
        outcome = SendOutcome(
            False,
            code=code,
            title=title,
            details=details,
            retriable=is_retriable(code, status),
            http_status=status,
        )
        return self._record(request, outcome)

    def _record(self, request: SendRequest, outcome: SendOutcome) -> SendOutcome:
        if outcome.accepted:
            _SENT_ACCEPTED.inc()
            return outcome
        code = "" if outcome.code is None else str(outcome.code)
        SENDS.labels(status="failed" if outcome.http_status else "error", code=code).inc()
        fields = {
            "message_id": request.message_id,
            "to": mask_phone(request.to),
            "code": outcome.code,
            "http_status": outcome.http_status,
            "title": outcome.title,
            "retriable": outcome.retriable,
        }
        if outcome.code == AUTH_ERROR_CODE:
            AUTH_ERRORS.inc()
            log.critical(
                "whatsapp.auth_error",
                action="renew WHATSAPP_TOKEN: Meta refuses it (code 190); every send will fail",
                **fields,
            )
        else:
            log.warning("whatsapp.send_failed", details=mask_phones_in(outcome.details), **fields)
        return outcome

    async def aclose(self) -> None:
        await self._poster.aclose()
