"""A Cloud API call that got no answer is named by its cause and host, apart from Meta's codes."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime

import aiohttp
import httpx
import orjson
import pytest
import yarl
from aiohttp.client_reqrep import ConnectionKey

from connectors.whatsapp.client import CloudApiClient
from connectors.whatsapp.events import failed_error
from connectors.whatsapp.transport import host_of, transport_cause
from engine.reporting.aggregate import aggregate
from schemas.messages import SendRequest
from schemas.settings import Settings

KEY = ConnectionKey("graph.facebook.com", 443, True, True, None, None, None)


def raised(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer` as raised `from inner`, the way aiohttp and httpx wrap OS errors."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (
            raised(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")),
            "connection refused",
        ),
        (
            raised(httpx.ConnectError("x"), socket.gaierror(-2, "Name or service not known")),
            "DNS lookup failed",
        ),
        (
            raised(httpx.ConnectError("x"), ssl.SSLCertVerificationError("bad cert")),
            "TLS handshake failed",
        ),
        (raised(httpx.ReadError("x"), ConnectionResetError(104, "reset")), "connection reset"),
        (httpx.ConnectTimeout("x"), "connect timeout"),
        (httpx.ReadTimeout("x"), "read timeout"),
        (httpx.RemoteProtocolError("x"), "connection closed"),
        (httpx.ReadError("x"), "network error"),
        (
            raised(
                httpx.ConnectError("x"), aiohttp.ClientConnectorDNSError(KEY, OSError(-2, "dns"))
            ),
            "DNS lookup failed",
        ),
        (
            raised(
                httpx.ConnectError("x"),
                aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused")),
            ),
            "connection refused",
        ),
        (raised(httpx.ConnectTimeout("x"), aiohttp.ConnectionTimeoutError()), "connect timeout"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_the_cause_is_found_through_the_wrapping(exc: BaseException, cause: str) -> None:
    assert transport_cause(exc) == cause


def test_the_host_carries_its_port_only_when_the_url_names_one() -> None:
    assert host_of(yarl.URL("https://graph.facebook.com/v21.0/1/messages")) == "graph.facebook.com"
    assert host_of(yarl.URL("http://127.0.0.1:8089/x")) == "127.0.0.1:8089"


class Refused(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc


async def test_a_refused_call_fails_with_code_transport_and_the_report_keeps_it_apart() -> None:
    url = "https://graph.facebook.com"  # never reached: the transport refuses
    settings = Settings(whatsapp_api_url=url, whatsapp_token="t", whatsapp_phone_number_id="1")
    api = CloudApiClient(settings, transport=Refused())
    request = SendRequest(
        message_id="j:1:p:a:0",
        journey_id="j",
        journey_version=1,
        activity_id="a",
        profile_id="p",
        to="+34600111222",
        consent="opted_in",
        template="t",
        language="es",
        requested_at=datetime(2026, 12, 8, tzinfo=UTC),
    )
    try:
        outcome = await api.send(request)
    finally:
        await api.aclose()
    error = failed_error(outcome)
    assert (error.code, error.title, error.retriable) == (
        "transport",
        "connection refused to graph.facebook.com",
        True,
    )
    failed = [
        {
            "message_id": f"j:1:p{i}:a:0",
            "journey_id": "j",
            "journey_version": 1,
            "activity_id": "a",
            "profile_id": f"p{i}",
            "status": "failed",
            "occurred_at": "2026-12-08T00:00:00Z",
            "error": err,
        }
        for i, err in enumerate(
            [error.model_dump(mode="json"), {"code": 131026, "title": "undeliverable"}] * 2
        )
    ]
    report = aggregate(orjson.dumps(r) for r in failed)
    activity = report.journeys[0].activities[0]
    assert activity.failed == {"transport": 2, "131026": 2}
    assert list(activity.failed) == ["transport", "131026"]
