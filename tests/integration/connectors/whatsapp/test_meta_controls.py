"""What Meta says reaches every send: template status, marketing limits and opt-outs, the
messaging limit. Real broker; sandbox -> webhook receiver -> whatsapp-controls -> connector.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.whatsapp.controls import publish_controls, read_controls, template_records
from schemas.messages import SendRequest
from schemas.settings import Settings
from tests.integration.connectors.whatsapp.test_whatsapp_connector import (
    CreateTopics,
    Produce,
    ReadTopic,
    SettingsFactory,
    Start,
    StartWorker,
)

pytestmark = pytest.mark.integration

ANA, BOB = "+34600111222", "+34600111333"


def request(
    message_id: str,
    profile_id: str,
    to: str = ANA,
    *,
    template: str = "cart_reminder",
    **extra: Any,
) -> SendRequest:
    body = ["Ana", "10 €"] if template == "cart_reminder" else ["Ana"]
    return SendRequest.model_validate(
        {
            "message_id": message_id,
            "journey_id": "meta",
            "journey_version": 1,
            "activity_id": "send",
            "profile_id": profile_id,
            "to": to,
            "consent": "opted_in",
            "template": template,
            "language": "es",
            "parameters": {"body": body},
            "requested_at": datetime.now(UTC),
            **extra,
        }
    )


def record(r: SendRequest) -> tuple[bytes | None, bytes]:
    return r.profile_id.encode(), r.model_dump_json().encode()


def final(events: list[dict[str, Any]], message_id: str) -> dict[str, Any] | None:
    for event in events:
        if event["message_id"] == message_id and event["status"] in (
            "accepted",
            "skipped",
            "failed",
        ):
            return event
    return None


def finals(*message_ids: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: all(final(events, m) is not None for m in message_ids)


@dataclass
class Channel:
    """Sandbox -> receiver -> whatsapp-controls -> one connector worker, on this test's topics."""

    settings: Settings
    sandbox: Any
    worker: Any
    deliveries: Any
    produce: Produce

    async def send(self, *requests: SendRequest) -> None:
        topic = self.settings.topic_whatsapp_requests
        await self.produce(self.settings, topic, [record(r) for r in requests])


StartChannel = Callable[..., Awaitable[Channel]]


@pytest.fixture
def channel(
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_receiver: Start,
    start_worker: StartWorker,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> StartChannel:
    async def start(overrides: dict[str, Any], **sandbox_config: Any) -> Channel:
        settings = wa_settings(**overrides)
        await create_topics(settings)
        phones: list[tuple[bytes | None, bytes]] = [
            (ANA.encode(), b'{"profile_id": "p-ana"}'),
            (BOB.encode(), b'{"profile_id": "p-bob"}'),
        ]
        await produce(settings, settings.topic_profile_phones, phones)
        # Categories, as `journeyctl templates sync --publish` would put them.
        now = datetime.now(UTC)
        await publish_controls(
            settings,
            template_records("cart_reminder", "es", now, status="APPROVED", category="marketing")
            + template_records("welcome", "es", now, status="APPROVED", category="utility"),
        )
        receiver = await start_receiver(settings)
        sandbox = await start_sandbox(webhook_url=receiver.webhook_url, **sandbox_config)
        settings = wa_settings(whatsapp_api_url=sandbox.url, **overrides)
        worker = start_worker(settings)
        deliveries = await read_topic(settings, settings.topic_delivery_events)
        return Channel(settings, sandbox, worker, deliveries, produce)

    return start


async def test_a_paused_template_stops_sends_within_a_second_and_resumes_when_reinstated(
    channel: StartChannel,
) -> None:
    overrides = {"whatsapp_max_retries": 1}
    ch = await channel(overrides)
    settings, sandbox, deliveries = ch.settings, ch.sandbox, ch.deliveries
    before = request("m-before", "p-ana")
    await ch.send(before)
    events = await deliveries.until(finals(before.message_id), seconds=60)
    assert final(events, before.message_id)["status"] == "accepted"  # type: ignore[index]

    def sent(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in evs if e["message_id"] == "m-before" and e["status"] == "sent"]

    [status] = sent(await deliveries.until(lambda evs: bool(sent(evs)), seconds=30))
    assert status["pricing"] == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "marketing",
        "type": "regular",
    }
    assert status["country_code"] == "34"

    status_url = "/sandbox/templates/cart_reminder/es/status"
    answer = await sandbox.http.post(status_url, json={"status": "PAUSED", "reason": "LOW"})
    assert answer.json()["webhook_delivered"] is True  # the receiver has it on the broker
    await asyncio.sleep(1.0)
    paused = request("m-paused", "p-bob", BOB)
    waiting = request("m-wait", "p-ana", on_paused="wait",
                      wait_until=datetime.now(UTC) + timedelta(minutes=5))  # fmt: skip
    utility = request("m-utility", "p-bob", BOB, template="welcome")
    await ch.send(paused, waiting, utility)
    events = await deliveries.until(finals(paused.message_id, utility.message_id), seconds=30)
    skipped = final(events, paused.message_id)
    assert skipped is not None and skipped["status"] == "skipped"
    assert skipped["error"]["reason"] == "template_paused"
    assert final(events, utility.message_id)["status"] == "accepted"  # type: ignore[index]
    events = await deliveries.settle(1.5)
    assert final(events, waiting.message_id) is None  # held while the template is paused
    assert [m.template for m in sandbox.state.messages].count("cart_reminder") == 1

    await sandbox.http.post(status_url, json={"status": "REINSTATED"})
    after = request("m-after", "p-bob", BOB)
    await asyncio.sleep(1.0)
    await ch.send(after)
    events = await deliveries.until(finals(waiting.message_id, after.message_id), seconds=30)
    assert final(events, waiting.message_id)["status"] == "accepted"  # type: ignore[index]
    assert final(events, after.message_id)["status"] == "accepted"  # type: ignore[index]

    await sandbox.http.post(
        "/sandbox/templates/welcome/es/category", json={"category": "marketing"}
    )
    await sandbox.http.post("/sandbox/templates/welcome/es/quality", json={"quality": "YELLOW"})
    await sandbox.http.post(status_url, json={"status": "DISABLED"})
    await asyncio.sleep(1.0)
    controls = await read_controls(settings)
    welcome = controls.template("welcome", "es")
    assert welcome is not None
    assert (welcome.previous_category, welcome.category, welcome.quality) == (
        "utility",
        "marketing",
        "YELLOW",
    )
    assert controls.template("cart_reminder", "es").status == "DISABLED"  # type: ignore[union-attr]
    disabled = request("m-disabled", "p-bob", BOB)
    await ch.send(disabled)
    events = await deliveries.until(finals(disabled.message_id), seconds=30)
    assert final(events, disabled.message_id)["error"]["reason"] == "template_disabled"  # type: ignore[index]


async def test_a_marketing_opt_out_skips_marketing_but_not_utility(channel: StartChannel) -> None:
    overrides = {"whatsapp_max_retries": 1}
    ch = await channel(overrides)
    sandbox, deliveries = ch.sandbox, ch.deliveries
    answer = await sandbox.http.post(
        "/sandbox/user-preferences", json={"from": ANA, "value": "stop"}
    )
    assert answer.json()["webhook_delivered"] is True
    await asyncio.sleep(1.0)
    marketing = request("m-marketing", "p-ana")
    utility = request("m-utility", "p-ana", template="welcome")
    other = request("m-other", "p-bob", BOB)
    await ch.send(marketing, utility, other)
    ids = (marketing.message_id, utility.message_id, other.message_id)
    events = await deliveries.until(finals(*ids), seconds=60)
    skipped = final(events, marketing.message_id)
    assert skipped is not None and skipped["status"] == "skipped"
    assert skipped["error"]["reason"] == "marketing_opted_out"
    assert final(events, utility.message_id)["status"] == "accepted"  # type: ignore[index]
    assert final(events, other.message_id)["status"] == "accepted"  # type: ignore[index]

    await sandbox.http.post("/sandbox/user-preferences", json={"from": ANA, "value": "resume"})
    await asyncio.sleep(1.0)
    again = request("m-again", "p-ana")
    await ch.send(again)
    events = await deliveries.until(finals(again.message_id), seconds=30)
    assert final(events, again.message_id)["status"] == "accepted"  # type: ignore[index]

    # 131050 in a failed status sets the same opt-out (Meta knew before the webhook came).
    await sandbox.http.post("/sandbox/recipient-errors", json={"to": BOB, "code": 131050})
    refused = request("m-refused", "p-bob", BOB)
    await ch.send(refused)
    events = await deliveries.until(
        lambda evs: any(
            e["message_id"] == refused.message_id and e["status"] == "failed" for e in evs
        ),
        seconds=30,
    )
    failed = next(
        e for e in events if e["message_id"] == refused.message_id and e["status"] == "failed"
    )
    assert (failed["error"]["code"], failed["error"]["retriable"]) == (131050, False)
    await asyncio.sleep(1.0)
    later = request("m-later", "p-bob", BOB)
    await ch.send(later)
    events = await deliveries.until(finals(later.message_id), seconds=30)
    assert final(events, later.message_id)["error"]["reason"] == "marketing_opted_out"  # type: ignore[index]


async def test_131049_holds_marketing_for_the_profile_and_131056_backs_off_for_one_user(
    channel: StartChannel,
) -> None:
    overrides = {"whatsapp_max_retries": 3, "whatsapp_pair_backoff_seconds": 2.0}
    ch = await channel(overrides)
    sandbox, deliveries = ch.sandbox, ch.deliveries
    await sandbox.http.post("/sandbox/recipient-errors", json={"to": ANA, "code": 131049})
    limited = request("m-limited", "p-ana")
    await ch.send(limited)
    events = await deliveries.until(
        lambda evs: any(e["message_id"] == "m-limited" and e["status"] == "failed" for e in evs),
        seconds=30,
    )
    failed = next(e for e in events if e["message_id"] == "m-limited" and e["status"] == "failed")
    assert (failed["error"]["code"], failed["error"]["retriable"]) == (131049, False)
    await asyncio.sleep(1.0)
    held = request("m-held", "p-ana")
    utility = request("m-utility", "p-ana", template="welcome")
    await ch.send(held, utility)
    events = await deliveries.until(finals(held.message_id, utility.message_id), seconds=30)
    capped = final(events, held.message_id)
    assert capped is not None and capped["error"]["reason"] == "frequency_capped"
    assert "131049" in capped["error"]["title"]
    assert final(events, utility.message_id)["status"] == "accepted"  # type: ignore[index]

    # 131056: Ana's message waits for her pair limit; Bob's, sent at the same time, does not.
    await sandbox.http.post("/sandbox/recipient-errors", json={"to": BOB, "code": 131056})
    slow = request("m-slow", "p-bob", BOB, template="welcome")
    fast = request("m-fast", "p-ana", template="welcome")
    started = time.monotonic()
    await ch.send(slow, fast)
    seen: dict[str, float] = {}

    def both(evs: list[dict[str, Any]]) -> bool:
        for mid in ("m-slow", "m-fast"):
            if mid not in seen and final(evs, mid) is not None:
                seen[mid] = time.monotonic() - started
        return len(seen) == 2

    events = await deliveries.until(both, seconds=30)
    assert final(events, "m-slow")["status"] == "accepted"  # type: ignore[index]
    assert final(events, "m-fast")["status"] == "accepted"  # type: ignore[index]
    assert seen["m-slow"] >= 2.0 > seen["m-fast"], seen
    assert sandbox.state.stats.rejected_by_code.get(131056) == 1


async def test_a_tier_of_250_holds_the_251st_new_user_until_the_window_frees(
    channel: StartChannel,
) -> None:
    window = 10.0
    overrides = {"whatsapp_messaging_window_seconds": window, "whatsapp_rate_per_second": 400}
    ch = await channel(overrides, messaging_window_seconds=window, rate_per_second=1000)
    sandbox, deliveries, worker = ch.sandbox, ch.deliveries, ch.worker
    # No WHATSAPP_MESSAGING_LIMIT: the tier comes from Meta's business_capability_update.
    answer = await sandbox.http.post("/sandbox/messaging-limit", json={"limit": 250})
    assert answer.json()["webhook_delivered"] is True
    await asyncio.sleep(1.0)
    warmup = request("m-warmup", "p-ana", template="welcome")  # Ana: the first user reached
    await ch.send(warmup)
    await deliveries.until(finals(warmup.message_id), seconds=60)
    reached_first = time.monotonic()
    # 250 more new users: 249 fill the tier of 250, the last is the 251st new user.
    users = [
        request(f"m-{i}", f"p-{i}", f"+3460{i:07d}", template="welcome") for i in range(1, 251)
    ]
    await ch.send(*users)

    def done(events: list[dict[str, Any]]) -> list[str]:
        return [r.message_id for r in users if final(events, r.message_id) is not None]

    events = await deliveries.until(lambda evs: len(done(evs)) >= 249, seconds=60)
    filled = time.monotonic() - reached_first
    assert filled < window - 3, f"250 users took {filled:.1f}s: too slow for this window"
    events = await deliveries.settle(1.0)
    [held] = [r.message_id for r in users if final(events, r.message_id) is None]
    assert all(final(events, m)["status"] == "accepted" for m in done(events))  # type: ignore[index]
    # A user already reached in the window is not held behind the 251st.
    repeat = request("m-repeat", "p-ana", template="welcome")
    await ch.send(repeat)
    events = await deliveries.until(finals(repeat.message_id), seconds=5)
    assert final(events, repeat.message_id)["status"] == "accepted"  # type: ignore[index]
    assert final(events, held) is None

    events = await deliveries.until(finals(held), seconds=window + 20)
    released = time.monotonic() - reached_first
    assert final(events, held)["status"] == "accepted"  # type: ignore[index]
    assert released >= window - 0.5, released
    assert "whatsapp.messaging_limit_hold" in worker.log(600)
    assert sandbox.state.stats.failed_by_code.get(131048) is None  # Meta never had to refuse


async def test_a_held_send_does_not_stall_a_rebalance_and_goes_out_once(
    channel: StartChannel, start_worker: StartWorker
) -> None:
    window = 30.0
    overrides = {"whatsapp_messaging_window_seconds": window}
    ch = await channel(overrides, messaging_window_seconds=window)
    sandbox, deliveries = ch.sandbox, ch.deliveries
    await sandbox.http.post("/sandbox/messaging-limit", json={"limit": 1})
    await asyncio.sleep(1.0)
    first = request("m-first", "p-ana", template="welcome")
    await ch.send(first)
    await deliveries.until(finals(first.message_id), seconds=60)
    reached = time.monotonic()
    held = request("m-held", "p-bob", BOB, template="welcome")
    await ch.send(held)
    events = await deliveries.settle(2.0)
    assert final(events, held.message_id) is None

    second = start_worker(ch.settings)  # same group: a rebalance while the send is held
    started = time.monotonic()
    while "whatsapp.hold_requeued" not in ch.worker.log(400):
        assert time.monotonic() - started < 20, ch.worker.log(80)
        await asyncio.sleep(0.5)
    while "Setting newly assigned partitions" not in second.log(400):
        assert time.monotonic() - started < 25, second.log(80)
        await asyncio.sleep(0.5)
    assert time.monotonic() - reached < window - 3  # the rebalance did not wait for the hold

    events = await deliveries.until(finals(held.message_id), seconds=window + 30)
    assert final(events, held.message_id)["status"] == "accepted"  # type: ignore[index]
    assert time.monotonic() - reached >= window - 1
    await deliveries.settle(2.0)
    assert [m.wa_id for m in sandbox.state.messages].count(BOB.lstrip("+")) == 1
