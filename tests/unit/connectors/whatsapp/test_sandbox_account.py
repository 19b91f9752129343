"""The sandbox's business account: templates list, status/quality/category webhooks, the
messaging limit, marketing preferences, per-user error injection and pricing in statuses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.whatsapp.templates_api import fetch_templates
from schemas.settings import Settings
from schemas.templates import dump_templates, load_templates
from tests.unit.connectors.whatsapp.test_sandbox import (
    MARIA,
    SECRET,
    TEMPLATES,
    TOKEN,
    Receiver,
    SandboxFactory,
    body,
    make_sandbox,
    receiver,
    template,
)

__all__ = ["make_sandbox", "receiver"]  # fixtures used by name below

WABA = "200000000000001"
CART = ("cart_reminder", "es")


async def account_change(rec: Receiver, field: str) -> dict[str, Any]:
    while True:
        payload, _, _ = await rec.next()
        change = payload["entry"][0]["changes"][0]
        if change["field"] == field:
            return dict(change["value"])


async def failed_code(rec: Receiver, wamid: str) -> int | None:
    for status in await rec.statuses_for(wamid, 1):
        if status["status"] == "failed":
            return int(status["errors"][0]["code"])
    return None


def cart(to: str = MARIA) -> dict[str, Any]:
    return template(*CART, body("María", "10 €"), to=to)


def welcome(to: str = MARIA) -> dict[str, Any]:
    return template("welcome", "es", body("María"), to=to)


@pytest.mark.asyncio
async def test_templates_are_listed_in_pages_and_sync_reads_them_all(
    make_sandbox: SandboxFactory, tmp_path: Any
) -> None:
    sandbox = await make_sandbox()
    first = await sandbox.client.get(f"/v21.0/{WABA}/message_templates", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert len(page["data"]) == 2 and "next" in page["paging"]
    assert page["data"][0]["components"][0]["type"] in ("HEADER", "BODY")
    unauthorized = await sandbox.client.get(
        f"/v21.0/{WABA}/message_templates", headers={"Authorization": "Bearer nope"}
    )
    assert unauthorized.status_code == 401

    settings = Settings(
        whatsapp_api_url=sandbox.base_url, whatsapp_waba_id=WABA, whatsapp_token=TOKEN
    )
    found, problems = await asyncio.to_thread(fetch_templates, settings)
    assert problems == []
    key = lambda t: (t.name, t.language)  # noqa: E731
    assert sorted(found, key=key) == sorted(TEMPLATES, key=key)
    written = tmp_path / "templates.yaml"
    written.write_text(dump_templates(found))
    assert sorted(load_templates(written), key=key) == sorted(TEMPLATES, key=key)


@pytest.mark.asyncio
async def test_a_paused_template_sends_its_webhook_and_is_refused_until_reinstated(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)
    url = "/sandbox/templates/cart_reminder/es/status"
    answer = await sandbox.client.post(url, json={"status": "PAUSED", "reason": "LOW_QUALITY"})
    assert answer.json() == {"status": "PAUSED", "webhook_delivered": True}
    value = await account_change(receiver, "message_template_status_update")
    assert value["event"] == "PAUSED" and value["message_template_name"] == "cart_reminder"
    assert value["message_template_language"] == "es" and value["reason"] == "LOW_QUALITY"
    refused = await sandbox.send(cart())
    assert refused.json()["error"]["code"] == 132015

    await sandbox.client.post(url, json={"status": "REINSTATED"})
    assert (await account_change(receiver, "message_template_status_update"))["event"] == (
        "REINSTATED"
    )
    assert (await sandbox.send(cart())).status_code == 200

    quality = await sandbox.client.post(
        "/sandbox/templates/cart_reminder/es/quality", json={"quality": "RED"}
    )
    assert quality.status_code == 200
    value = await account_change(receiver, "message_template_quality_update")
    assert value["new_quality_score"] == "RED"
    await sandbox.client.post(
        "/sandbox/templates/welcome/es/category", json={"category": "marketing"}
    )
    value = await account_change(receiver, "template_category_update")
    assert (value["previous_category"], value["new_category"]) == ("UTILITY", "MARKETING")
    missing = await sandbox.client.post("/sandbox/templates/nope/es/status", json={})
    assert missing.status_code == 404


@pytest.mark.asyncio
async def test_the_messaging_limit_fails_new_users_beyond_it_until_the_window_frees(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url, messaging_limit=2)
    users = ["+34600000001", "+34600000002", "+34600000003"]
    codes = []
    for user in users:
        wamid = (await sandbox.send(welcome(user))).json()["messages"][0]["id"]
        codes.append(await failed_code(receiver, wamid))
    assert codes == [None, None, 131048]
    again = (await sandbox.send(welcome(users[0]))).json()["messages"][0]["id"]
    assert await failed_code(receiver, again) is None  # already reached: not counted again

    await sandbox.client.post("/sandbox/clock", json={"advance_seconds": 24 * 3600})
    later = (await sandbox.send(welcome(users[2]))).json()["messages"][0]["id"]
    assert await failed_code(receiver, later) is None

    answer = await sandbox.client.post("/sandbox/messaging-limit", json={"limit": 250})
    assert answer.json()["limit"] == 250
    value = await account_change(receiver, "business_capability_update")
    assert value["max_daily_conversations_per_business"] == 250


@pytest.mark.asyncio
async def test_a_user_who_stops_marketing_gets_utility_but_not_marketing(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)
    await sandbox.client.post("/sandbox/user-preferences", json={"from": MARIA, "value": "stop"})
    value = await account_change(receiver, "user_preferences")
    assert value["user_preferences"][0]["value"] == "stop"
    assert value["user_preferences"][0]["category"] == "marketing_messages"
    marketing = (await sandbox.send(cart())).json()["messages"][0]["id"]
    assert await failed_code(receiver, marketing) == 131050
    utility = (await sandbox.send(welcome())).json()["messages"][0]["id"]
    assert await failed_code(receiver, utility) is None

    await sandbox.client.post("/sandbox/user-preferences", json={"from": MARIA, "value": "resume"})
    await account_change(receiver, "user_preferences")
    resumed = (await sandbox.send(cart())).json()["messages"][0]["id"]
    assert await failed_code(receiver, resumed) is None


@pytest.mark.asyncio
async def test_injected_user_errors_and_pricing_in_statuses(
    make_sandbox: SandboxFactory, receiver: Receiver
) -> None:
    sandbox = await make_sandbox(webhook_url=receiver.url)
    await sandbox.client.post(
        "/sandbox/recipient-errors", json={"to": MARIA, "code": 131056, "count": 1}
    )
    await sandbox.client.post("/sandbox/recipient-errors", json={"to": MARIA, "code": 131049})
    pair = await sandbox.send(cart())
    assert pair.status_code == 400 and pair.json()["error"]["code"] == 131056
    limited = (await sandbox.send(cart())).json()["messages"][0]["id"]
    assert await failed_code(receiver, limited) == 131049
    bad = await sandbox.client.post("/sandbox/recipient-errors", json={"to": MARIA, "code": 1})
    assert bad.status_code == 400

    sent = (await sandbox.send(cart())).json()["messages"][0]["id"]
    statuses = await receiver.statuses_for(sent, 2)
    pricing = next(s["pricing"] for s in statuses if s["status"] == "sent")
    assert pricing == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "marketing",
        "type": "regular",
    }
    assert SECRET  # webhooks are signed with the test's app secret (checked in statuses_for)
