"""The Cloud API client against the local sandbox over real HTTP on loopback.

Checks the payload Meta receives, and how every answer (success, each error code, HTTP
status, timeout, connection failure) is classified.
"""

from __future__ import annotations

import gc
import gzip
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from connectors.whatsapp.client import (
    FINAL_CODES,
    RETRIABLE_CODES,
    CloudApiClient,
    build_message,
    callback_data,
    is_retriable,
)
from connectors.whatsapp.sandbox import SandboxConfig, Template, build_app
from schemas.messages import SendRequest
from schemas.settings import Settings

# The test's own templates, so edits to deploy/sandbox/templates.yaml never break it.
TEMPLATES = tuple(
    Template.model_validate(t)
    for t in [
        {
            "name": "cart_reminder",
            "language": "es",
            "category": "marketing",
            "body": "Hola {{1}}, te has dejado artículos por valor de {{2}}.",
            "buttons": [
                {"type": "url", "text": "Ver carrito", "url": "https://shop.example.com/cart/{{1}}"}
            ],
        },
        {
            "name": "order_confirmation",
            "language": "es",
            "category": "utility",
            "header": {"type": "image"},
            "body": "Hola {{1}}, hemos recibido tu pedido {{2}} por un total de {{3}}.",
            "buttons": [
                {"type": "url", "text": "Seguir", "url": "https://shop.example.com/o/{{1}}"}
            ],
        },
        {
            "name": "spring_sale",
            "language": "es",
            "category": "marketing",
            "header": {"type": "text", "text": "Rebajas de primavera, {{1}}"},
            "body": "{{1}}, este fin de semana tienes un {{2}} de descuento.",
            "buttons": [
                {"type": "quick_reply", "text": "Sí, quiero el código"},
                {"type": "quick_reply", "text": "No me interesa"},
            ],
        },
        {
            "name": "winback_offer",
            "language": "es",
            "category": "marketing",
            "status": "PAUSED",
            "body": "{{1}}, vuelve y llévate un {{2}} de descuento.",
        },
    ]
)
TOKEN = "client-test-token"
PNID = "100000000000001"
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@dataclass
class Sandbox:
    url: str
    http: httpx.AsyncClient

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.http.get("/sandbox/messages")).json())

    async def fault(self, **fault: Any) -> None:
        response = await self.http.post("/sandbox/faults", json=fault)
        assert response.status_code == 200, response.text

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "whatsapp_api_url": self.url,
            "whatsapp_token": TOKEN,
            "whatsapp_phone_number_id": PNID,
            "whatsapp_timeout_seconds": 2.0,
            "whatsapp_max_in_flight": 4,
        }
        values.update(overrides)
        return Settings(**values)


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    config = SandboxConfig(
        token=TOKEN, templates=TEMPLATES, rate_per_second=None, status_delays=(0.0, 0.0, 0.0)
    )
    server = TestServer(build_app(config), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    http = httpx.AsyncClient(base_url=url, trust_env=False, timeout=5)
    try:
        yield Sandbox(url=url, http=http)
    finally:
        await http.aclose()
        await server.close()


@pytest_asyncio.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[CloudApiClient]:
    api = CloudApiClient(sandbox.settings())
    try:
        yield api
    finally:
        await api.aclose()


def request(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "message_id": "cart-recovery:3:p-42:send-es:1",
        "journey_id": "cart-recovery",
        "journey_version": 3,
        "activity_id": "send-es",
        "profile_id": "p-42",
        "to": "+34600111222",
        "consent": "opted_in",
        "template": "cart_reminder",
        "language": "es",
        "parameters": {"body": ["Ana", "42,50 €"], "buttons": ["c-981"]},
        "requested_at": NOW,
    }
    fields.update(overrides)
    return SendRequest.model_validate(fields)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_template_is_accepted_with_meta_payload_shape(
    sandbox: Sandbox, client: CloudApiClient
) -> None:
    before = sample("whatsapp_sends_total", status="accepted", code="")
    outcome = await client.send(request())

    assert outcome.accepted and outcome.wamid and outcome.wamid.startswith("wamid.")
    assert outcome.retriable is False and outcome.code is None
    [message] = await sandbox.messages()
    assert message["wamid"] == outcome.wamid
    assert message["to"] == "+34600111222"
    assert "Hola Ana" in message["text"] and "42,50 €" in message["text"]
    assert "https://shop.example.com/cart/c-981" in message["text"]
    sent = message["request"]
    assert sent == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "34600111222",
        "type": "template",
        "template": {
            "name": "cart_reminder",
            "language": {"code": "es"},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "text", "text": "42,50 €"},
                    ],
                },
                {
                    "type": "button",
                    "index": "0",
                    "sub_type": "url",
                    "parameters": [{"type": "text", "text": "c-981"}],
                },
            ],
        },
        "biz_opaque_callback_data": sent["biz_opaque_callback_data"],
    }
    assert orjson.loads(sent["biz_opaque_callback_data"]) == {
        "message_id": "cart-recovery:3:p-42:send-es:1",
        "journey_id": "cart-recovery",
        "journey_version": 3,
        "activity_id": "send-es",
        "profile_id": "p-42",
        "template": "cart_reminder",
        "language": "es",
    }
    assert sample("whatsapp_sends_total", status="accepted", code="") == before + 1


async def test_media_header_text_header_and_quick_reply_payloads(
    sandbox: Sandbox, client: CloudApiClient
) -> None:
    order = request(
        template="order_confirmation",
        parameters={"body": ["Carmen", "A-1042", "59,90 €"], "buttons": ["A-1042"]},
        media={"type": "image", "link": "https://cdn.example.com/o.png"},
    )
    sale = request(
        template="spring_sale",
        parameters={
            "header": ["Carmen"],
            "body": ["Carmen", "20 %"],
            "buttons": ["payload:WANT_CODE", ""],
        },
    )
    assert (await client.send(order)).accepted
    assert (await client.send(sale)).accepted

    first, second = await sandbox.messages()
    assert first["media"] == {"type": "image", "link": "https://cdn.example.com/o.png"}
    header = first["request"]["template"]["components"][0]
    assert header == {
        "type": "header",
        "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/o.png"}}],
    }
    components = second["request"]["template"]["components"]
    assert components[0] == {"type": "header", "parameters": [{"type": "text", "text": "Carmen"}]}
    assert components[2] == {
        "type": "button",
        "index": "0",
        "sub_type": "quick_reply",
        "parameters": [{"type": "payload", "payload": "WANT_CODE"}],
    }
    assert len(components) == 3  # the empty second button sends nothing
    assert second["text"].startswith("Rebajas de primavera, Carmen")


async def test_free_form_text(sandbox: Sandbox, client: CloudApiClient) -> None:
    reply = request(
        message_id="wa-reply:wamid.X",
        kind="text",
        template=None,
        language=None,
        parameters={},
        text="You will no longer receive messages.",
    )
    assert build_message(reply)["text"] == {
        "body": "You will no longer receive messages.",
        "preview_url": False,
    }
    outcome = await client.send(reply)
    assert outcome.accepted
    [message] = await sandbox.messages()
    assert (message["type"], message["text"]) == ("text", "You will no longer receive messages.")
    assert orjson.loads(message["biz_opaque_callback_data"])["message_id"] == "wa-reply:wamid.X"


def test_callback_data_stays_within_512_characters() -> None:
    long = request(
        activity_id="a" * 100,
        journey_id="j" * 100,
        template="t" * 200,
        message_id="m" * 200,
    )
    data = callback_data(long)
    assert data is not None and len(data) <= 512
    kept = orjson.loads(data)
    assert kept["message_id"] == "m" * 200 and kept["profile_id"] == "p-42"
    assert "template" not in kept
    assert callback_data(request(message_id="m" * 600)) is None


# Every classified code, injected through the sandbox's fault endpoint with Meta's HTTP status.
CODE_STATUS = {
    130429: 429,
    80007: 400,
    131056: 400,
    131000: 500,
    1: 400,
    2: 503,
    4: 400,
    131047: 400,
    131026: 400,
    131049: 400,
    131050: 400,
    132000: 400,
    132001: 404,
    132015: 400,
    132016: 400,
    131008: 400,
    131009: 400,
    100: 400,
    190: 401,
}


def test_the_code_table_covers_every_classified_code() -> None:
    assert set(CODE_STATUS) == RETRIABLE_CODES | FINAL_CODES
    assert not RETRIABLE_CODES & FINAL_CODES


@pytest.mark.parametrize(("code", "status"), sorted(CODE_STATUS.items()))
async def test_every_error_code_is_classified(
    sandbox: Sandbox, client: CloudApiClient, code: int, status: int
) -> None:
    before = sample("whatsapp_sends_total", status="failed", code=str(code))
    await sandbox.fault(status=status, code=code, count=1)

    outcome = await client.send(request())

    assert not outcome.accepted and outcome.wamid is None
    assert (outcome.code, outcome.http_status) == (code, status)
    assert outcome.retriable is (code in RETRIABLE_CODES)
    assert outcome.title
    assert outcome.rate_limited is (code in (130429, 80007))
    assert sample("whatsapp_sends_total", status="failed", code=str(code)) == before + 1
    assert (await client.send(request())).accepted  # the fault was for one call only


@pytest.mark.parametrize(
    ("overrides", "code", "status"),
    [
        ({"template": "no_such_template"}, 132001, 404),
        ({"language": "fr"}, 132001, 404),
        ({"parameters": {"body": ["Ana"], "buttons": ["c-1"]}}, 132000, 400),
        ({"template": "winback_offer", "parameters": {"body": ["Ana", "10 %"]}}, 132015, 400),
        ({"parameters": {"body": ["Ana", "1"], "buttons": ["payload:X"]}}, 131009, 400),
        ({"to": "not-a-phone"}, 100, 400),
    ],
)
async def test_real_sandbox_rejections_are_final(
    client: CloudApiClient, overrides: dict[str, Any], code: int, status: int
) -> None:
    outcome = await client.send(request(**overrides))
    assert (outcome.code, outcome.http_status, outcome.retriable) == (code, status, False)
    assert outcome.title and not outcome.title.startswith("(#")


async def test_a_bad_token_is_190_final_alerted_and_counted(
    sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sample("whatsapp_auth_errors_total")
    api = CloudApiClient(sandbox.settings(whatsapp_token="wrong-token"))
    try:
        outcome = await api.send(request())
    finally:
        await api.aclose()
    assert (outcome.code, outcome.http_status, outcome.retriable) == (190, 401, False)
    assert sample("whatsapp_auth_errors_total") == before + 1
    logged = capsys.readouterr().out
    assert "whatsapp.auth_error" in logged and "critical" in logged
    assert "wrong-token" not in logged and "34600111222" not in logged
    assert "+34******222" in logged


@pytest.mark.parametrize(
    ("status", "retriable"), [(500, True), (502, True), (429, True), (403, False)]
)
async def test_unknown_codes_follow_the_http_status(
    sandbox: Sandbox, client: CloudApiClient, status: int, retriable: bool
) -> None:
    await sandbox.fault(status=status, code=987654, count=1)
    outcome = await client.send(request())
    assert (outcome.code, outcome.retriable) == (987654, retriable)


async def test_a_timeout_is_retriable(sandbox: Sandbox) -> None:
    api = CloudApiClient(sandbox.settings(whatsapp_timeout_seconds=0.2))
    try:
        await sandbox.fault(delay_seconds=1.0, count=1)
        outcome = await api.send(request())
    finally:
        await api.aclose()
    assert not outcome.accepted and outcome.retriable
    assert outcome.code == "transport" and outcome.http_status is None
    assert outcome.title == f"read timeout to {sandbox.url.removeprefix('http://')}"
    assert outcome.in_doubt  # the request went out: Meta may have taken the message


async def test_a_closed_port_is_a_transport_failure_named_with_its_host() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(whatsapp_api_url=f"http://127.0.0.1:{port}", whatsapp_token=TOKEN)
    labels = {"cause": "connection refused", "host": f"127.0.0.1:{port}"}
    before = REGISTRY.get_sample_value("whatsapp_transport_errors_total", labels) or 0.0
    api = CloudApiClient(settings)
    try:
        outcome = await api.send(request())
    finally:
        await api.aclose()
    assert not outcome.accepted and outcome.retriable
    assert outcome.code == "transport"
    assert outcome.title == f"connection refused to 127.0.0.1:{port}"
    assert not outcome.in_doubt  # nothing was sent: a retry cannot send it twice
    assert REGISTRY.get_sample_value("whatsapp_transport_errors_total", labels) == before + 1


def test_classification_without_an_answer() -> None:
    assert is_retriable(None, None)
    assert is_retriable(None, 503)
    assert not is_retriable(None, 400)
    assert not is_retriable(190, 500)  # a known final code wins over the status


def test_a_client_needs_a_token() -> None:
    with pytest.raises(ValueError, match="WHATSAPP_TOKEN"):
        CloudApiClient(Settings(whatsapp_token=None))


async def test_the_api_url_keeps_its_path_prefix() -> None:
    api = CloudApiClient(
        Settings(whatsapp_api_url="https://proxy.example/meta/", whatsapp_token=TOKEN)
    )
    try:
        url = api._messages_url("123")
    finally:
        await api.aclose()
    assert str(url) == f"https://proxy.example/meta/{Settings().whatsapp_api_version}/123/messages"


async def test_a_compressed_answer_is_decoded() -> None:
    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(b'{"messaging_product":"whatsapp","messages":[{"id":"wamid.GZ"}]}')
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/{version}/{number}/messages", gzipped)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    api = CloudApiClient(Settings(whatsapp_api_url=str(server.make_url("")), whatsapp_token=TOKEN))
    try:
        outcome = await api.send(request())
    finally:
        await api.aclose()
        await server.close()
    assert (outcome.accepted, outcome.wamid) == (True, "wamid.GZ")


async def test_a_call_leaves_no_reference_cycles(sandbox: Sandbox) -> None:
    # Objects in cycles are freed only by the garbage collector, whose runs were a fifth of
    # the connector's CPU when httpx's client (Response <-> its bound stream) was in the way.
    api = CloudApiClient(sandbox.settings())
    try:
        assert (await api.send(request(message_id="warm-up"))).accepted
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for i in range(50):
                assert (await api.send(request(message_id=f"m-{i}"))).accepted
            gc.collect()
            cyclic = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    finally:
        await api.aclose()
    assert cyclic == []


async def test_cookies_an_answer_sets_are_not_sent_back() -> None:
    # The bearer token authenticates; a Set-Cookie from the API (or a proxy in front of
    # it) must not ride along on the next calls. "localhost": aiohttp's default jar keeps
    # no cookies for an IP address, so 127.0.0.1 would hide a jar that keeps them.
    seen: list[str | None] = []

    async def answer(req: web.Request) -> web.Response:
        seen.append(req.headers.get("Cookie"))
        body = {"messaging_product": "whatsapp", "messages": [{"id": f"wamid.{len(seen)}"}]}
        response = web.json_response(body)
        response.set_cookie("session", "abc", path="/")
        return response

    app = web.Application()
    app.router.add_post("/{version}/{number}/messages", answer)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    api = CloudApiClient(
        Settings(whatsapp_api_url=f"http://localhost:{server.port}", whatsapp_token=TOKEN)
    )
    try:
        first = await api.send(request())
        second = await api.send(request(message_id="m-2"))
    finally:
        await api.aclose()
        await server.close()
    assert first.accepted and second.accepted
    assert seen == [None, None]


async def test_cookies_are_not_kept_through_a_custom_transport() -> None:
    seen: list[str | None] = []

    def answer(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("cookie"))
        return httpx.Response(
            200,
            json={"messages": [{"id": f"wamid.{len(seen)}"}]},
            headers={"set-cookie": "session=abc; Path=/"},
        )

    settings = Settings(
        whatsapp_api_url="http://127.0.0.1:9", whatsapp_token=TOKEN, whatsapp_phone_number_id=PNID
    )
    api = CloudApiClient(settings, transport=httpx.MockTransport(answer))
    try:
        first = await api.send(request())
        second = await api.send(request(message_id="m-2"))
    finally:
        await api.aclose()
    assert first.accepted and second.accepted
    assert seen == [None, None]


@pytest.mark.parametrize(
    ("rate", "explicit", "limit"),
    [(80.0, None, 64), (1000.0, None, 250), (300.0, None, 75), (1000.0, 32, 32)],
)
def test_calls_in_flight_scale_with_the_cap(rate: float, explicit: int | None, limit: int) -> None:
    settings = Settings(whatsapp_rate_per_second=rate, whatsapp_max_in_flight=explicit)
    assert settings.in_flight_limit() == limit
