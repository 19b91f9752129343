"""A call whose answer never comes (read timeout) may have reached Meta: no second send.

The sandbox takes each message at once (its status webhooks go out) but answers later than
the connector's call timeout, as an overloaded API or network does. The connector must not
retry such a call blindly: its status webhook shows Meta took it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.integration.connectors.whatsapp.test_whatsapp_connector import (
    ANA,
    CreateTopics,
    Produce,
    ReadTopic,
    SettingsFactory,
    Start,
    StartWorker,
    record,
    send_request,
)

pytestmark = pytest.mark.integration


async def test_a_call_that_timed_out_after_meta_took_it_is_not_sent_again(
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_receiver: Start,
    start_worker: StartWorker,
    read_topic: ReadTopic,
    create_topics: CreateTopics,
    produce: Produce,
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    await produce(settings, settings.topic_profile_phones, [(ANA.encode(), b'{"profile_id": "a"}')])
    receiver = await start_receiver(settings)
    sandbox = await start_sandbox(webhook_url=receiver.webhook_url, answer_delay=2.0)
    settings = wa_settings(
        whatsapp_api_url=sandbox.url,
        whatsapp_timeout_seconds=0.5,
        whatsapp_in_doubt_seconds=20,
    )
    requests = [send_request(f"lost:{i}", f"p-{i}", f"+346003{i:05d}") for i in range(20)]
    await produce(settings, settings.topic_whatsapp_requests, [record(r) for r in requests])
    deliveries = await read_topic(settings, settings.topic_delivery_events)
    worker = start_worker(settings)

    expected = {r.message_id for r in requests}
    deadline = time.monotonic() + 40
    while True:
        accepted = {
            e["message_id"]: e["wamid"] for e in deliveries.values() if e["status"] == "accepted"
        }
        if expected <= accepted.keys():
            break
        copies = sum(n - 1 for n in Counter(sandbox.message_ids()).values())
        assert time.monotonic() < deadline, f"not all accepted; {copies} sent again"
        assert worker.process.poll() is None, worker.log(80)
        await deliveries.poll()
    await asyncio.sleep(3.0)  # a retry would reach the sandbox by now
    sent = Counter(sandbox.message_ids())
    twice = sorted(mid for mid, n in sent.items() if n > 1)
    assert set(sent) == expected
    assert not twice, f"{len(twice)} of {len(expected)} sent twice, e.g. {twice[:5]}"
    # Each accepted event names the wamid of the one message the sandbox took.
    wamids = {m.wamid for m in sandbox.state.messages}
    assert set(accepted.values()) <= wamids
    assert "read timeout" in worker.log(100_000)  # the calls did time out
