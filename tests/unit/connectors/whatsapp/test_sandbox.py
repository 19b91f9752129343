"""The WhatsApp Cloud API sandbox, exercised over real HTTP on loopback.

Each test starts the sandbox (and, where webhooks matter, a tiny receiver) on ephemeral ports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.whatsapp.sandbox import (
    STATE,
    SandboxConfig,
    SandboxState,
    TemplateFileError,
    build_app,
    load_templates,
    mask_phone,
)
from connectors.whatsapp.signature import sign, verify

ROOT = Path(__file__).resolve().parents[4]
TEMPLATES = tuple(load_templates(ROOT / "deploy" / "sandbox" / "templates.yaml"))
TOKEN = "sandbox-test-token"
SECRET = "sandbox-test-app-secret"
PNID = "100000000000001"
MARIA = "+34600111222"
FAST = (0.01, 0.02, 0.03)


class FakeClock:
    """A settable clock, so the 24-hour window and token buckets need no real waiting."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class Sandbox:
    client: httpx.AsyncClient
    state: SandboxState
    base_url: str

    async def send(self, payload: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post(f"/v21.0/{PNID}/messages", json=payload, **kwargs)


@dataclass
class Receiver:
    """A stand-in for the connector's webhook endpoint that records what arrives."""

    url: str
    bodies: asyncio.Queue[tuple[bytes, str | None]] = field(default_factory=asyncio.Queue)
    fail_next: int = 0

    async def next(self) -> tuple[dict[str, Any], bytes, str | None]:
        async with asyncio.timeout(3.0):
            raw, signature = await self.bodies.get()
        return orjson.loads(raw), raw, signature

    async def statuses_for(self, wamid: str, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            payload, raw, signature = await self.next()
            assert verify(SECRET, raw, signature), "webhook signature does not verify"
            value = payload["entry"][0]["changes"][0]["value"]
            found += [s for s in value.get("statuses", []) if s["id"] == wamid]
        return found


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    holder: list[Receiver] = []

    async def webhook(request: web.Request) -> web.Response:
        rec = holder[0]
        body = await request.read()
        if rec.fail_next > 0:
            rec.fail_next -= 1
            return web.Response(status=503)
        await rec.bodies.put((body, request.headers.get("X-Hub-Signature-256")))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    holder.append(Receiver(url=str(server.make_url("/webhook"))))
    yield holder[0]
    await server.close()


@pytest_asyncio.fixture
async def make_sandbox() -> AsyncIterator[SandboxFactory]:
    started: list[tuple[TestServer, httpx.AsyncClient]] = []

    async def factory(**overrides: Any) -> Sandbox:
        settings: dict[str, Any] = {
            "token": TOKEN,
            "app_secret": SECRET,
            "templates": TEMPLATES,
            "status_delays": FAST,
            "webhook_retries": 2,
            "webhook_backoff": 0.01,
        }
        settings.update(overrides)
        app = build_app(SandboxConfig(**settings))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        base_url = str(server.make_url("")).rstrip("/")
        client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            trust_env=False,
            timeout=10,
        )
        started.append((server, client))
        return Sandbox(client=client, state=app[STATE], base_url=base_url)

    yield factory
    for server, client in started:
        await client.aclose()
        await server.close()


def template(name: str, lang: str, *components: dict[str, Any], to: str = MARIA) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {"name": name, "language": {"code": lang}, "components": list(components)},
    }


def body(*values: str) -> dict[str, Any]:
    return {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}


def text_message(to: str, text: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}


def assert_meta_error(response: httpx.Response, http_status: int, code: int) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["type"] in ("OAuthException", "GraphMethodException")
    assert error["message"]
    assert error["fbtrace_id"]
    return dict(error)


@pytest.mark.asyncio
async def test_success_shape_and_rendered_spanish_text(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    payload = template("welcome", "es", body("María"))
    payload["biz_opaque_callback_data"] = "journey=onboarding;step=1"

    response = await sandbox.send(payload)

    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"messaging_product", "contacts", "messages"}
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": MARIA, "wa_id": "34600111222"}]
    [message] = data["messages"]
    assert set(message) == {"id", "message_status"}
    assert message["message_status"] == "accepted"
    assert message["id"].startswith("wamid.")

    records = (await sandbox.client.get("/sandbox/messages", params={"to": MARIA})).json()
    [record] = records
    assert record["wamid"] == message["id"]
    assert record["to"] == MARIA
    assert record["type"] == "template"
    assert (record["template"], record["language"], record["category"]) == (
        "welcome",
        "es",
        "utility",
    )
    assert record["text"].startswith("¡Hola María! Gracias por unirte.")
    assert "Responde STOP" in record["text"]
    assert record["biz_opaque_callback_data"] == "journey=onboarding;step=1"
    assert record["received_at"].endswith("Z")
    assert (await sandbox.client.get("/sandbox/messages", params={"template": "nope"})).json() == []

    second = await sandbox.send(template("welcome", "es", body("Lucía")))
    assert second.json()["messages"][0]["id"] != message["id"]
    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert stats["accepted"] == 2

    assert (await sandbox.client.delete("/sandbox/messages")).status_code == 204
    assert (await sandbox.client.get("/sandbox/messages")).json() == []


@pytest.mark.asyncio
async def test_media_header_url_and_quick_reply_buttons(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    order = template(
        "order_confirmation",
        "es",
        {
            "type": "header",
            "parameters": [{"type": "image", "image": {"link": "https://cdn.example.com/o.png"}}],
        },
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Carmen"},
                {"type": "text", "text": "A-1042"},
                {
                    "type": "currency",
                    "currency": {"fallback_value": "59,90 €", "code": "EUR", "amount_1000": 59900},
                },
            ],
        },
        {
            "type": "button",
            "sub_type": "url",
            "index": "0",
            "parameters": [{"type": "text", "text": "A-1042"}],
        },
    )
    assert (await sandbox.send(order)).status_code == 200

    missing_image = template("order_confirmation", "es", body("Carmen", "A-1042", "59,90 €"))
    assert_meta_error(await sandbox.send(missing_image), 400, 132012)

    sale = template(
        "spring_sale",
        "es",
        {"type": "header", "parameters": [{"type": "text", "text": "Carmen"}]},
        body("Carmen", "20 %"),
        {
            "type": "button",
            "sub_type": "quick_reply",
            "index": 0,
            "parameters": [{"type": "payload", "payload": "WANT_CODE"}],
        },
    )
    assert (await sandbox.send(sale)).status_code == 200

    records = (await sandbox.client.get("/sandbox/messages")).json()
    assert records[0]["media"] == {"type": "image", "link": "https://cdn.example.com/o.png"}
    assert "pedido A-1042 por un total de 59,90 €" in records[0]["text"]
    assert "(https://shop.example.com/orders/A-1042)" in records[0]["text"]
    assert records[1]["text"].splitlines()[0] == "Rebajas de primavera, Carmen"
    assert "[Sí, quiero el código]" in records[1]["text"]


@pytest.mark.asyncio
async def test_bad_or_missing_token_is_190(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    payload = template("welcome", "es", body("María"))

    wrong = await sandbox.send(payload, headers={"Authorization": "Bearer not-the-token"})
    error = assert_meta_error(wrong, 401, 190)
    assert error["type"] == "OAuthException"

    async with httpx.AsyncClient(base_url=sandbox.base_url, trust_env=False) as anonymous:
        missing = await anonymous.post(f"/v21.0/{PNID}/messages", json=payload)
    assert_meta_error(missing, 401, 190)
    assert (await sandbox.client.get("/sandbox/stats")).json()["rejected_by_code"] == {"190": 2}


@pytest.mark.asyncio
async def test_request_shape_errors(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    good = template("welcome", "es", body("María"))

    other_number = await sandbox.client.post("/v21.0/999/messages", json=good)
    error = assert_meta_error(other_number, 400, 100)
    assert error["error_subcode"] == 33

    assert_meta_error(await sandbox.send({**good, "messaging_product": "sms"}), 400, 100)
    assert_meta_error(await sandbox.send({**good, "to": "call me maybe"}), 400, 100)
    no_json = await sandbox.client.post(f"/v21.0/{PNID}/messages", content=b"{not json")
    assert_meta_error(no_json, 400, 100)


@pytest.mark.asyncio
async def test_unknown_template_or_language_is_132001(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()

    error = assert_meta_error(await sandbox.send(template("nope", "es", body("x"))), 404, 132001)
    assert error["message"] == "(#132001) Template name does not exist in the translation"
    assert "nope" in error["error_data"]["details"]

    french = await sandbox.send(template("welcome", "fr", body("Marie")))
    error = assert_meta_error(french, 404, 132001)
    assert "does not exist in fr" in error["error_data"]["details"]


@pytest.mark.asyncio
async def test_wrong_parameter_count_is_132000(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()

    too_many = await sandbox.send(template("welcome", "es", body("María", "extra")))
    error = assert_meta_error(too_many, 400, 132000)
    assert "(2)" in error["error_data"]["details"] and "(1)" in error["error_data"]["details"]

    too_few = await sandbox.send(template("cart_reminder", "es", body("María")))
    assert_meta_error(too_few, 400, 132000)
    none_at_all = await sandbox.send(template("welcome", "en"))
    assert_meta_error(none_at_all, 400, 132000)


@pytest.mark.asyncio
async def test_paused_template_is_132015(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    response = await sandbox.send(template("winback_offer", "es", body("María", "15 %")))
    assert_meta_error(response, 400, 132015)
    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert stats["accepted"] == 0
    assert stats["rejected_by_code"] == {"132015": 1}


@pytest.mark.asyncio
async def test_free_form_text_needs_the_24_hour_window(make_sandbox: SandboxFactory) -> None:
    clock = FakeClock(1_750_000_000.0)
    sandbox = await make_sandbox(clock=clock, reengagement_error="sync")

    outside = await sandbox.send(text_message(MARIA, "¿Sigues ahí?"))
    error = assert_meta_error(outside, 400, 131047)
    assert "24 hours" in error["error_data"]["details"]

    injected = await sandbox.client.post("/sandbox/inbound", json={"from": MARIA, "text": "Hola"})
    assert injected.status_code == 200
    clock.now += 23 * 3600
    inside = await sandbox.send(text_message(MARIA, "¡Claro! ¿En qué te ayudo?"))
    assert inside.status_code == 200, inside.text
    [record] = (await sandbox.client.get("/sandbox/messages")).json()
    assert (record["type"], record["text"]) == ("text", "¡Claro! ¿En qué te ayudo?")

    clock.now += 2 * 3600
    assert_meta_error(await sandbox.send(text_message(MARIA, "¿Hola?")), 400, 131047)
    # Templates are how a business re-opens the conversation, so they are never window-bound.
    assert (await sandbox.send(template("welcome", "es", body("María")))).status_code == 200


@pytest.mark.asyncio
async def test_rate_limit_is_130429(make_sandbox: SandboxFactory) -> None:
    ticks = FakeClock(100.0)
    sandbox = await make_sandbox(rate_per_second=5, burst=5, monotonic=ticks)

    responses = await asyncio.gather(
        *(sandbox.send(template("welcome", "es", body(f"P{i}"))) for i in range(8))
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 5 + [429] * 3
    for limited in (r for r in responses if r.status_code == 429):
        error = assert_meta_error(limited, 429, 130429)
        assert error["message"] == "(#130429) Rate limit hit"
    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert (stats["accepted"], stats["rate_limited"]) == (5, 3)

    ticks.now += 0.2  # one token at 5/s
    assert (await sandbox.send(template("welcome", "es", body("again")))).status_code == 200
    assert (await sandbox.send(template("welcome", "es", body("too soon")))).status_code == 429


@pytest.mark.asyncio
async def test_signed_status_webhooks_arrive_in_order(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)
    payload = template("welcome", "es", body("María"))
    payload["biz_opaque_callback_data"] = "step-7"

    response = await sandbox.send(payload)
    wamid = response.json()["messages"][0]["id"]

    first, raw, signature = await receiver.next()
    assert signature == sign(SECRET, raw)
    assert verify(SECRET, raw, signature)
    assert not verify("another-secret", raw, signature)
    assert first["object"] == "whatsapp_business_account"
    [entry] = first["entry"]
    [change] = entry["changes"]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"]["phone_number_id"] == PNID
    [sent] = value["statuses"]
    rest = await receiver.statuses_for(wamid, 2)
    statuses = [sent, *rest]

    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    for status in statuses:
        assert status["id"] == wamid
        assert status["recipient_id"] == "34600111222"
        assert status["timestamp"].isdigit()
        assert status["biz_opaque_callback_data"] == "step-7"
    assert sent["pricing"]["category"] == "utility"
    assert sent["conversation"]["origin"]["type"] == "utility"

    record = (await sandbox.client.get(f"/sandbox/messages/{wamid}")).json()
    assert record["statuses"] == ["sent", "delivered", "read"]


@pytest.mark.asyncio
async def test_unreachable_number_fails_with_131026(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    lost = "+34611222333"
    sandbox = await make_sandbox(webhook_url=receiver.url, unreachable=frozenset({lost}))

    response = await sandbox.send(template("welcome", "es", body("Pepe"), to=lost))
    assert response.status_code == 200  # Meta accepts it and reports the failure later
    wamid = response.json()["messages"][0]["id"]

    [failed] = await receiver.statuses_for(wamid, 1)
    assert failed["status"] == "failed"
    [error] = failed["errors"]
    assert error["code"] == 131026
    assert error["title"] and error["message"]
    assert error["error_data"]["details"]
    assert "conversation" not in failed and "pricing" not in failed
    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert stats["failed_by_code"] == {"131026": 1}


@pytest.mark.asyncio
async def test_outside_window_is_reported_by_webhook_by_default(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)

    response = await sandbox.send(text_message(MARIA, "Hola"))
    assert response.status_code == 200
    wamid = response.json()["messages"][0]["id"]

    [failed] = await receiver.statuses_for(wamid, 1)
    assert failed["status"] == "failed"
    assert failed["errors"][0]["code"] == 131047


@pytest.mark.asyncio
async def test_failure_and_read_shares_shape_the_lifecycle(make_sandbox: SandboxFactory) -> None:
    failing = await make_sandbox(failure_share=1.0, seed=7)
    unread = await make_sandbox(read_share=0.0, seed=7)

    first = await failing.send(template("welcome", "es", body("Ana")))
    second = await unread.send(template("welcome", "es", body("Ana")))
    await asyncio.sleep(FAST[-1] + 0.1)

    failed = await failing.client.get(f"/sandbox/messages/{first.json()['messages'][0]['id']}")
    assert failed.json()["statuses"] == ["sent", "failed"]
    assert failed.json()["errors"][0]["code"] == 131026
    delivered = await unread.client.get(f"/sandbox/messages/{second.json()['messages'][0]['id']}")
    assert delivered.json()["statuses"] == ["sent", "delivered"]
    # Same seed, same sequence: the sandbox hands out the same wamid, so runs are reproducible.
    assert first.json()["messages"][0]["id"] == second.json()["messages"][0]["id"]


@pytest.mark.asyncio
async def test_webhooks_are_retried_while_the_receiver_is_down(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url, read_share=0.0)
    receiver.fail_next = 2

    response = await sandbox.send(template("welcome", "en", body("Mary")))
    wamid = response.json()["messages"][0]["id"]

    statuses = await receiver.statuses_for(wamid, 2)
    assert [s["status"] for s in statuses] == ["sent", "delivered"]
    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert stats["webhooks"] == {"delivered": 2, "failed": 0}


@pytest.mark.asyncio
async def test_fault_injection_then_recovery(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox()
    payload = template("welcome", "es", body("María"))

    armed = await sandbox.client.post("/sandbox/faults", json={"status": 500, "count": 3})
    assert armed.status_code == 200
    for _ in range(3):
        error = assert_meta_error(await sandbox.send(payload), 500, 131000)
        assert error["message"] == "(#131000) Something went wrong"
    assert (await sandbox.send(payload)).status_code == 200

    await sandbox.client.post("/sandbox/faults", json={"status": 503, "count": 5})
    assert_meta_error(await sandbox.send(payload), 503, 2)
    assert (await sandbox.client.delete("/sandbox/faults")).status_code == 204
    assert (await sandbox.send(payload)).status_code == 200

    await sandbox.client.post("/sandbox/faults", json={"delay_seconds": 0.3, "count": 1})
    started = time.monotonic()
    slow = await sandbox.send(payload)
    assert slow.status_code == 200
    assert time.monotonic() - started >= 0.3

    stats = (await sandbox.client.get("/sandbox/stats")).json()
    assert stats["faults_injected"] == 5
    assert stats["rejected_by_code"] == {"2": 1, "131000": 3}


@pytest.mark.asyncio
async def test_inbound_injection_posts_a_signed_webhook(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)

    response = await sandbox.client.post(
        "/sandbox/inbound",
        json={"from": MARIA, "text": "STOP", "context_wamid": "wamid.ORIGINAL", "name": "María"},
    )
    assert response.status_code == 200
    wamid = response.json()["wamid"]

    payload, raw, signature = await receiver.next()
    assert verify(SECRET, raw, signature)
    value = payload["entry"][0]["changes"][0]["value"]
    assert value["metadata"]["phone_number_id"] == PNID
    assert value["contacts"] == [{"profile": {"name": "María"}, "wa_id": "34600111222"}]
    [message] = value["messages"]
    assert message["id"] == wamid
    assert message["from"] == "34600111222"
    assert message["type"] == "text"
    assert message["text"] == {"body": "STOP"}
    assert message["context"]["id"] == "wamid.ORIGINAL"
    assert message["timestamp"].isdigit()

    read = await sandbox.send(
        {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
    )
    assert read.json() == {"success": True}


def test_template_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("- name: welcome\n  language: es\n  category: promo\n  body: Hola\n")
    with pytest.raises(TemplateFileError, match=r"broken\.yaml: entry 0 .*category"):
        load_templates(broken)
    with pytest.raises(TemplateFileError, match=r"missing\.yaml"):
        load_templates(tmp_path / "missing.yaml")


def test_signature_and_masking() -> None:
    header = sign(b"secret", b'{"a":1}')
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("secret", b'{"a":1}', header)
    assert verify("secret", b'{"a":1}', header.upper().replace("SHA256=", "sha256="))
    assert not verify("secret", b'{"a":2}', header)
    assert not verify("secret", b'{"a":1}', None)
    assert not verify("secret", b'{"a":1}', "sha1=abc")
    assert mask_phone(MARIA) == "+34******222"
