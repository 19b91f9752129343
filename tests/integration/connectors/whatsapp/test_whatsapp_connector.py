"""The WhatsApp channel end to end: requests on Kafka -> connector worker -> sandbox -> webhooks
-> receiver -> delivery and profile events on Kafka. Real broker, real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import TopicPartition

from connectors.whatsapp.indoubt import find_statuses
from connectors.whatsapp.signature import sign
from engine.streaming.clients import topic_partitions
from schemas.messages import SendRequest
from schemas.partitioning import partition_of
from schemas.settings import Settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ANA = "+34600111222"
# The same values as the Settings that the wa_settings fixture makes.
APP_SECRET = "integration-app-secret"
VERIFY_TOKEN = "integration-verify-token"
PHONE_NUMBER_ID = "100000000000001"
SettingsFactory = Callable[..., Settings]
Start = Callable[..., Awaitable[Any]]
ReadTopic = Callable[[Settings, str], Awaitable[Any]]
CreateTopics = Callable[[Settings], Awaitable[None]]
Produce = Callable[[Settings, str, list[tuple[bytes | None, bytes]]], Awaitable[None]]
StartWorker = Callable[..., Any]


def send_request(
    message_id: str,
    profile_id: str,
    to: str | None = ANA,
    *,
    consent: str = "opted_in",
    template: str = "welcome",
    body: tuple[str, ...] = ("Ana",),
) -> SendRequest:
    return SendRequest.model_validate(
        {
            "message_id": message_id,
            "journey_id": "onboarding",
            "journey_version": 2,
            "activity_id": "send-welcome",
            "profile_id": profile_id,
            "to": to,
            "consent": consent,
            "template": template,
            "language": "es",
            "parameters": {"body": list(body)},
            "requested_at": datetime.now(UTC),
        }
    )


def record(request: SendRequest) -> tuple[bytes | None, bytes]:
    return request.profile_id.encode(), request.model_dump_json().encode()


def statuses_of(events: list[dict[str, Any]], message_id: str) -> list[str]:
    return [e["status"] for e in events if e["message_id"] == message_id]


def has_all(expected: dict[str, set[str]]) -> Callable[[list[dict[str, Any]]], bool]:
    def done(events: list[dict[str, Any]]) -> bool:
        return all(want <= set(statuses_of(events, mid)) for mid, want in expected.items())

    return done


def signed(payload: dict[str, Any], secret: str = APP_SECRET) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(payload)
    return body, {"X-Hub-Signature-256": sign(secret, body), "Content-Type": "application/json"}


def envelope(value: dict[str, Any]) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "200000000000001", "changes": [{"field": "messages", "value": value}]}],
    }


def inbound(wamid: str, sender: str, text: str) -> dict[str, Any]:
    return envelope(
        {
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": sender}],
            "messages": [
                {
                    "from": sender,
                    "id": wamid,
                    "timestamp": str(int(time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def status(
    wamid: str, name: str, callback: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": wamid,
        "status": name,
        "timestamp": str(int(time.time())),
        "recipient_id": "34600111222",
        **extra,
    }
    if callback is not None:
        entry["biz_opaque_callback_data"] = orjson.dumps(callback).decode()
    return envelope({"statuses": [entry]})


async def test_a_request_goes_from_accepted_to_read_and_stop_is_honoured(
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_receiver: Start,
    start_worker: StartWorker,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> None:
    settings = wa_settings(whatsapp_rate_per_second=80, whatsapp_max_retries=2)
    await create_topics(settings)
    await produce(
        settings, settings.topic_profile_phones, [(ANA.encode(), b'{"profile_id": "p-ana"}')]
    )
    receiver = await start_receiver(settings)
    sandbox = await start_sandbox(webhook_url=receiver.webhook_url)
    settings = wa_settings(
        whatsapp_rate_per_second=80, whatsapp_max_retries=2, whatsapp_api_url=sandbox.url
    )
    deliveries = await read_topic(settings, settings.topic_delivery_events)
    dead_letters = await read_topic(settings, settings.topic_dead_letter)
    profile_events = await read_topic(settings, settings.topic_profile_events)
    start_worker(settings)

    ok = send_request(
        "onboarding:2:p-ana:send-welcome:1",
        "p-ana",
        template="cart_reminder",
        body=("Ana", "42,50 €"),
    )
    no_consent = send_request("m-no-consent", "p-bob", "+34600111333", consent="unknown")
    opted_out = send_request("m-opted-out", "p-bea", "+34600111334", consent="opted_out")
    bad_phone = send_request("m-bad-phone", "p-carl", "600111444")
    unknown_template = send_request("m-unknown-template", "p-dana", "+34600111555", template="nope")
    await produce(
        settings,
        settings.topic_whatsapp_requests,
        [record(r) for r in (ok, no_consent, opted_out, bad_phone, unknown_template)]
        + [(b"p-eve", b'{"message_id": "half a request"'), record(ok)],
    )

    events = await deliveries.until(
        has_all(
            {
                ok.message_id: {"accepted", "sent", "delivered", "read"},
                no_consent.message_id: {"skipped"},
                opted_out.message_id: {"skipped"},
                bad_phone.message_id: {"skipped"},
                unknown_template.message_id: {"failed"},
            }
        ),
        seconds=45,
    )
    by_id = {(e["message_id"], e["status"]): e for e in events}
    accepted = by_id[(ok.message_id, "accepted")]
    assert accepted["wamid"].startswith("wamid.")
    assert accepted["profile_id"] == "p-ana" and accepted["template"] == "cart_reminder"
    for name in ("sent", "delivered", "read"):  # correlated through biz_opaque_callback_data
        event = by_id[(ok.message_id, name)]
        assert (event["wamid"], event["journey_id"], event["journey_version"]) == (
            accepted["wamid"],
            "onboarding",
            2,
        )
        assert event["activity_id"] == "send-welcome" and event["profile_id"] == "p-ana"
    assert by_id[(no_consent.message_id, "skipped")]["error"]["reason"] == "no_consent"
    assert by_id[(opted_out.message_id, "skipped")]["error"]["reason"] == "opted_out"
    assert by_id[(bad_phone.message_id, "skipped")]["error"]["reason"] == "invalid_phone"
    failed = by_id[(unknown_template.message_id, "failed")]["error"]
    assert (failed["code"], failed["retriable"]) == (132001, False)
    # The duplicate request got the same `accepted` again, and Meta got one message.
    assert [
        e["wamid"] for e in events if (e["message_id"], e["status"]) == (ok.message_id, "accepted")
    ] == [accepted["wamid"]] * 2
    assert sandbox.message_ids() == [ok.message_id]

    [letter] = await dead_letters.until(lambda v: len(v) >= 1)
    assert letter["key"] == "p-eve" and letter["reason"].startswith("invalid SendRequest")
    assert letter["component"] == "whatsapp-connector"
    assert letter["value_text"] == '{"message_id": "half a request"'

    # Retriable answers are retried; when retries run out the outcome is failed, retriable.
    await sandbox.http.post("/sandbox/faults", json={"status": 503, "count": 2})
    retried = send_request("m-retried", "p-fran", "+34600111666")
    await produce(settings, settings.topic_whatsapp_requests, [record(retried)])
    await deliveries.until(has_all({retried.message_id: {"accepted"}}))
    await sandbox.http.post("/sandbox/faults", json={"status": 503, "count": 3})
    exhausted = send_request("m-exhausted", "p-gil", "+34600111777")
    await produce(settings, settings.topic_whatsapp_requests, [record(exhausted)])
    events = await deliveries.until(has_all({exhausted.message_id: {"failed"}}))
    error = next(e for e in events if e["message_id"] == exhausted.message_id)["error"]
    assert (error["code"], error["retriable"]) == (2, True)
    assert sandbox.state.stats.faults_injected == 5

    # STOP: the inbound message, the opt-out, and the confirmation sent back to Ana.
    answer = await sandbox.http.post("/sandbox/inbound", json={"from": ANA, "text": "Stop."})
    wamid = answer.json()["wamid"]
    events = await profile_events.until(lambda v: len(v) >= 2)
    inbound_event, consent_event = events
    assert inbound_event["event_id"] == f"wa-inbound:{wamid}"
    assert (inbound_event["type"], inbound_event["profile_id"]) == ("whatsapp.inbound", "p-ana")
    assert inbound_event["data"] == {"text": "Stop.", "wamid": wamid, "context": None, "from": ANA}
    assert consent_event["type"] == "profile.updated" and consent_event["profile_id"] == "p-ana"
    assert consent_event["attributes"] == {"whatsapp_consent": "opted_out"}
    reply_id = f"wa-reply:{wamid}"
    await deliveries.until(has_all({reply_id: {"accepted", "delivered"}}))
    [reply] = [m for m in sandbox.state.messages if m.type == "text"]
    assert reply.to == ANA and reply.text == settings.whatsapp_opt_out_reply


async def test_the_receiver_refuses_what_meta_did_not_sign(
    wa_settings: SettingsFactory,
    start_receiver: Start,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
) -> None:
    settings = wa_settings(webhook_max_body_bytes=4096)
    await create_topics(settings)
    receiver = await start_receiver(settings)
    http = receiver.http
    profile_events = await read_topic(settings, settings.topic_profile_events)
    dead_letters = await read_topic(settings, settings.topic_dead_letter)

    assert (await http.get("/healthz")).status_code == 200
    ok = await http.get(
        "/webhooks/whatsapp",
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert (ok.status_code, ok.text, ok.headers["content-type"]) == (
        200,
        "1158201444",
        "text/plain; charset=utf-8",
    )
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
        {},
    ):
        assert (await http.get("/webhooks/whatsapp", params=params)).status_code == 403

    forged_body, _ = signed(inbound("wamid.FORGED", "34600111222", "hola"))
    for headers in (
        {},
        {"X-Hub-Signature-256": sign("not-the-app-secret", forged_body)},
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {"X-Hub-Signature-256": "garbage"},
    ):
        response = await http.post("/webhooks/whatsapp", content=forged_body, headers=headers)
        assert response.status_code == 401

    tampered_body, headers = signed(inbound("wamid.TAMPERED", "34600111222", "hola"))
    tampered_body = tampered_body.replace(b"hola", b"STOP")
    response = await http.post("/webhooks/whatsapp", content=tampered_body, headers=headers)
    assert response.status_code == 401

    big_body, headers = signed(inbound("wamid.BIG", "34600111222", "x" * 5000))
    assert (
        await http.post("/webhooks/whatsapp", content=big_body, headers=headers)
    ).status_code == 413

    not_json, headers = b"{not json", {"X-Hub-Signature-256": sign(APP_SECRET, b"{not json")}
    assert (
        await http.post("/webhooks/whatsapp", content=not_json, headers=headers)
    ).status_code == 400

    # Signed but impossible to turn into events (an id far over ProfileEvent's limits):
    # kept as a dead letter, and a 200 so that Meta does not send it again forever.
    odd_body, headers = signed(inbound("wamid." + "X" * 300, "34600111222", "hola"))
    response = await http.post("/webhooks/whatsapp", content=odd_body, headers=headers)
    assert response.status_code == 200
    [letter] = await dead_letters.until(lambda v: len(v) >= 1)
    assert letter["reason"].startswith("unprocessable webhook") and letter["key"] is None
    assert letter["value_text"] == odd_body.decode()

    # A genuine webhook from the same sender afterwards: same key, same partition, so
    # once it is on the topic, anything produced before it would be there too.
    body, headers = signed(inbound("wamid.GENUINE", "34600111222", "hola"))
    assert (await http.post("/webhooks/whatsapp", content=body, headers=headers)).status_code == 200
    events = await profile_events.until(lambda v: len(v) >= 1)
    assert [e["event_id"] for e in await profile_events.settle(0.5)] == ["wa-inbound:wamid.GENUINE"]
    assert events[0]["profile_id"] == ANA  # an unknown phone is its own profile id


async def test_the_receiver_correlates_statuses_and_drops_replays(
    wa_settings: SettingsFactory,
    start_receiver: Start,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    # A wamid known only from an `accepted` DeliveryEvent (no callback data in the status).
    accepted = {
        "message_id": "m-from-map",
        "wamid": "wamid.FROM-MAP",
        "journey_id": "cart-recovery",
        "journey_version": 3,
        "activity_id": "send-es",
        "profile_id": "p-map",
        "channel": "whatsapp",
        "template": "cart_reminder",
        "language": "es",
        "status": "accepted",
        "error": None,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    await produce(settings, settings.topic_delivery_events, [(b"p-map", orjson.dumps(accepted))])
    receiver = await start_receiver(settings, unknown_wamid_grace=0.2)
    # The short grace is for wamid.NOBODY-KNOWS; wamid.FROM-MAP must be known before its
    # status comes, however long the receiver's follower takes on a busy machine.
    await wait_until(
        lambda: "wamid.FROM-MAP" in receiver.receiver.steps, 30, what="the accepted wamid learned"
    )
    deliveries = await read_topic(settings, settings.topic_delivery_events)
    dead_letters = await read_topic(settings, settings.topic_dead_letter)
    callback = {
        "message_id": "m-callback",
        "journey_id": "onboarding",
        "journey_version": 1,
        "activity_id": "send-welcome",
        "profile_id": "p-callback",
        "template": "welcome",
        "language": "es",
    }

    async def post(payload: dict[str, Any]) -> int:
        body, headers = signed(payload)
        response: httpx.Response = await receiver.http.post(
            "/webhooks/whatsapp", content=body, headers=headers
        )
        return response.status_code

    assert await post(status("wamid.CALLBACK", "sent", callback)) == 200
    assert await post(status("wamid.CALLBACK", "sent", callback)) == 200  # Meta's replay
    failed = {"errors": [{"code": 131026, "title": "Message undeliverable"}]}
    assert await post(status("wamid.CALLBACK", "failed", callback, **failed)) == 200
    # A 200 means the webhook's records are on the broker: sent and failed, in that order.
    callback_tp = TopicPartition(
        settings.topic_delivery_events, partition_of(b"p-callback", settings.topic_partitions)
    )
    ends = await deliveries.consumer.end_offsets([callback_tp])
    assert ends[callback_tp] == 2
    assert await post(status("wamid.FROM-MAP", "delivered")) == 200
    assert await post(status("wamid.NOBODY-KNOWS", "read")) == 200
    assert await post(status("wamid.CALLBACK", "deleted", callback)) == 200  # not a status we map

    await deliveries.until(
        has_all({"m-callback": {"sent", "failed"}, "m-from-map": {"accepted", "delivered"}})
    )
    events = await deliveries.settle(0.5)
    # Kafka orders records within a partition, and DeliveryEvents are keyed by profile id:
    # each profile's events come in the order of the webhooks. p-callback and p-map are on
    # different partitions, and a reader may interleave partitions in any order.
    produced = {
        profile: [(e["message_id"], e["status"]) for e in events if e["profile_id"] == profile]
        for profile in ("p-callback", "p-map")
    }
    assert produced == {
        "p-callback": [("m-callback", "sent"), ("m-callback", "failed")],
        "p-map": [("m-from-map", "accepted"), ("m-from-map", "delivered")],
    }
    assert len(events) == 4, events
    [sent, failed_event] = [e for e in events if e["profile_id"] == "p-callback"]
    [delivered] = [e for e in events if e["status"] == "delivered"]
    assert (sent["profile_id"], sent["journey_id"], sent["wamid"]) == (
        "p-callback",
        "onboarding",
        "wamid.CALLBACK",
    )
    assert failed_event["error"] == {
        "code": 131026,
        "title": "Message undeliverable",
        "retriable": False,
        "reason": None,
    }
    assert (delivered["profile_id"], delivered["journey_version"], delivered["template"]) == (
        "p-map",
        3,
        "cart_reminder",
    )
    [letter] = await dead_letters.until(lambda v: len(v) >= 1)
    assert (letter["reason"], letter["key"], letter["component"]) == (
        "unknown wamid",
        "wamid.NOBODY-KNOWS",
        "whatsapp-webhook",
    )
    assert orjson.loads(letter["value_text"])["status"] == "read"


async def test_keywords_publish_consent_and_ask_for_a_reply(
    wa_settings: SettingsFactory,
    start_receiver: Start,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    await produce(
        settings, settings.topic_profile_phones, [(ANA.encode(), b'{"profile_id": "p-ana"}')]
    )
    receiver = await start_receiver(settings)
    profile_events = await read_topic(settings, settings.topic_profile_events)
    requests = await read_topic(settings, settings.topic_whatsapp_requests)

    for wamid, text in (
        ("w1", " báJa "),
        ("w2", "START"),
        ("w3", "help!"),
        ("w4", "¿baja mañana?"),
    ):
        body, headers = signed(inbound(f"wamid.{wamid}", "34600111222", text))
        response = await receiver.http.post("/webhooks/whatsapp", content=body, headers=headers)
        assert response.status_code == 200

    events = await profile_events.until(lambda v: len(v) >= 6)
    assert [(e["event_id"], e["type"]) for e in events] == [
        ("wa-inbound:wamid.w1", "whatsapp.inbound"),
        ("wa-consent:wamid.w1", "profile.updated"),
        ("wa-inbound:wamid.w2", "whatsapp.inbound"),
        ("wa-consent:wamid.w2", "profile.updated"),
        ("wa-inbound:wamid.w3", "whatsapp.inbound"),
        ("wa-inbound:wamid.w4", "whatsapp.inbound"),
    ]
    assert {e["profile_id"] for e in events} == {"p-ana"}
    assert [e["attributes"] for e in events if e["type"] == "profile.updated"] == [
        {"whatsapp_consent": "opted_out"},
        {"whatsapp_consent": "opted_in"},
    ]
    replies = [SendRequest.model_validate(v) for v in await requests.until(lambda v: len(v) >= 3)]
    assert [(r.message_id, r.kind, r.consent, r.text) for r in replies] == [
        ("wa-reply:wamid.w1", "text", "opted_out", settings.whatsapp_opt_out_reply),
        ("wa-reply:wamid.w2", "text", "opted_in", settings.whatsapp_opt_in_reply),
        ("wa-reply:wamid.w3", "text", "unknown", settings.whatsapp_help_reply),
    ]
    for reply in replies:
        assert (reply.to, reply.profile_id, reply.phone_number_id) == (
            ANA,
            "p-ana",
            PHONE_NUMBER_ID,
        )
        assert reply.trigger_at is not None
        assert abs(reply.requested_at - reply.trigger_at) < timedelta(seconds=5)
    # A replayed inbound webhook is not re-published.
    body, headers = signed(inbound("wamid.w1", "34600111222", " báJa "))
    assert (
        await receiver.http.post("/webhooks/whatsapp", content=body, headers=headers)
    ).status_code == 200
    assert len(await profile_events.settle(0.5)) == 6


async def kill_mid_burst(
    *,
    webhooks: bool,
    in_doubt_seconds: float,
    count: int = 2000,
    kill_at: int = 1137,
    answer_delay: float = 0.0,
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_receiver: Start,
    start_worker: StartWorker,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> tuple[Counter[str], set[str], int, str]:
    """`count` requests at 500/s, the worker killed after `kill_at` sends and started again.

    Returns (sends per message id, expected ids, sends at the kill, the new worker's log)."""
    rate = 500.0
    settings = wa_settings(whatsapp_rate_per_second=rate)
    await create_topics(settings)
    # Written and read back before the receiver starts: the topic is there for its reader.
    await produce(settings, settings.topic_profile_phones, [(ANA.encode(), b'{"profile_id": "a"}')])
    webhook_url = (await start_receiver(settings)).webhook_url if webhooks else None
    sandbox = await start_sandbox(
        rate_per_second=rate,
        burst=int(rate / 4),
        webhook_url=webhook_url,
        answer_delay=answer_delay,
    )
    settings = wa_settings(
        whatsapp_rate_per_second=rate,
        whatsapp_max_in_flight=64,
        whatsapp_api_url=sandbox.url,
        whatsapp_in_doubt_seconds=in_doubt_seconds,
    )
    requests = [send_request(f"kill:{i}", f"p-{i % 997}", f"+346002{i:05d}") for i in range(count)]
    await produce(settings, settings.topic_whatsapp_requests, [record(r) for r in requests])
    deliveries = await read_topic(settings, settings.topic_delivery_events)

    first = start_worker(settings)
    deadline = time.monotonic() + 60
    # Inside a batch of 500 (1,137: the third), not at a batch boundary: calls are in flight
    # and the rest of the batch has its "sending" markers on the broker.
    while len(sandbox.state.messages) < kill_at and time.monotonic() < deadline:
        assert first.process.poll() is None, first.log()
        await asyncio.sleep(0.005)
    first.kill()
    at_kill = len(sandbox.state.messages)
    assert 0 < at_kill < count, first.log()

    second = start_worker(settings)
    expected = {r.message_id for r in requests}
    deadline = time.monotonic() + 90 + in_doubt_seconds
    while not expected <= set(sandbox.message_ids()) and time.monotonic() < deadline:
        assert second.process.poll() is None, second.log()
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 60
    while True:
        accepted = {e["message_id"] for e in deliveries.values() if e["status"] == "accepted"}
        if expected <= accepted:
            break
        assert time.monotonic() < deadline, (
            f"{len(expected - accepted)} never accepted, e.g. {sorted(expected - accepted)[:5]}\n"
            f"{second.log(80)}"
        )
        await deliveries.poll()
    await asyncio.sleep(1.0)  # anything still coming from the restarted worker
    sent = Counter(sandbox.message_ids())
    # Every accepted event names the wamid the sandbox gave that message, never another.
    wamids = {
        m.wamid: orjson.loads(m.biz_opaque_callback_data or "{}").get("message_id")
        for m in sandbox.state.messages
    }
    for event in deliveries.values():
        if event["status"] == "accepted":
            assert wamids.get(event["wamid"]) == event["message_id"], event
    log = second.log(100_000)
    assert "whatsapp.in_doubt" in log, log
    return sent, expected, at_kill, log


KillBurst = Callable[..., Awaitable[tuple[Counter[str], set[str], int, str]]]


@pytest.fixture
def kill_burst(
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_receiver: Start,
    start_worker: StartWorker,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> KillBurst:
    """`await kill_burst(webhooks=..., in_doubt_seconds=..., ...)`: kill_mid_burst on this
    test's fixtures."""

    async def run(**options: Any) -> tuple[Counter[str], set[str], int, str]:
        return await kill_mid_burst(
            **options,
            wa_settings=wa_settings,
            start_sandbox=start_sandbox,
            start_receiver=start_receiver,
            start_worker=start_worker,
            read_topic=read_topic,
            create_topics=create_topics,
            produce=produce,
        )

    return run


@pytest.mark.slow
async def test_kill_9_mid_burst_sends_every_message_once_with_status_webhooks(
    kill_burst: KillBurst,
) -> None:
    sent, expected, at_kill, _ = await kill_burst(
        webhooks=True,
        in_doubt_seconds=30,
    )
    twice = sorted(mid for mid, n in sent.items() if n > 1)
    print(f"kill -9 after {at_kill} sends, webhooks on: {len(twice)} sent twice {twice[:10]}")
    assert set(sent) == expected  # nothing lost
    assert not twice  # the calls in doubt were settled by Meta's status webhooks


@pytest.mark.slow
async def test_kill_9_mid_burst_without_webhooks_sends_again_after_the_grace(
    kill_burst: KillBurst,
) -> None:
    sent, expected, at_kill, _ = await kill_burst(
        webhooks=False,
        in_doubt_seconds=2,
    )
    duplicates = sum(n - 1 for n in sent.values())
    print(f"kill -9 after {at_kill} sends, no webhooks: {duplicates} duplicate sends")
    assert set(sent) == expected  # nothing lost: no status within the grace means send
    # Without statuses only the calls in flight at the kill can go out twice.
    assert duplicates <= 64


@pytest.mark.slow
async def test_kill_9_while_meta_holds_the_answers_sends_nothing_twice(
    kill_burst: KillBurst,
) -> None:
    """Meta takes each message at once but answers a second later: at the kill, up to 64
    calls (WHATSAPP_MAX_IN_FLIGHT) are taken and unanswered, the window the markers close."""
    sent, expected, at_kill, log = await kill_burst(
        webhooks=True,
        in_doubt_seconds=30,
        count=300,
        kill_at=100,
        answer_delay=1.0,
    )
    twice = sorted(mid for mid, n in sent.items() if n > 1)
    taken = [int(n) for n in re.findall(r"taken_by_meta=(\d+)", log)]
    print(f"kill -9 after {at_kill} taken, answers held: {len(twice)} sent twice, taken {taken}")
    assert set(sent) == expected  # nothing lost
    assert sum(taken) > 0, log  # calls Meta took but never answered were in doubt
    assert not twice  # and their status webhooks kept them from going out again


async def test_statuses_in_doubt_are_found_even_when_the_grace_is_over(
    wa_settings: SettingsFactory, create_topics: CreateTopics, produce: Produce
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    now = datetime.now(UTC)

    def status_record(message_id: str, status: str, wamid: str | None) -> tuple[bytes, bytes]:
        value = {"message_id": message_id, "wamid": wamid, "status": status, "occurred_at": "x"}
        return b"p-1", orjson.dumps(value)

    await produce(
        settings,
        settings.topic_delivery_events,
        [
            status_record("m-sent", "sent", "wamid.A"),
            status_record("m-failed-by-meta", "failed", "wamid.B"),
            status_record("m-refused", "failed", None),  # the connector's own failure
            status_record("m-other", "sent", "wamid.C"),
        ],
    )
    markers = {
        "m-sent": now - timedelta(seconds=40),
        "m-failed-by-meta": now - timedelta(seconds=40),
        "m-refused": now - timedelta(seconds=40),
        "m-never": now - timedelta(seconds=40),
    }
    started = time.monotonic()
    found = await find_statuses(
        settings, settings.topic_delivery_events, markers, 1.0, topic_partitions
    )
    assert {k: v.wamid for k, v in found.items()} == {
        "m-sent": "wamid.A",
        "m-failed-by-meta": "wamid.B",
    }
    assert time.monotonic() - started < 10  # the grace was over: read to the end, no wait
    # A recent marker waits for its status, here one that arrives while it waits.
    waiting = asyncio.create_task(
        find_statuses(
            settings, settings.topic_delivery_events, {"m-late": now}, 20.0, topic_partitions
        )
    )
    await asyncio.sleep(1.0)
    await produce(
        settings, settings.topic_delivery_events, [status_record("m-late", "sent", "wamid.L")]
    )
    late = await asyncio.wait_for(waiting, 15)
    assert late["m-late"].wamid == "wamid.L"
