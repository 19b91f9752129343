"""Scale out in the middle of a burst: a second worker joins, the partitions move, and every
event still becomes exactly the send request it implies.

Given the promotion journey (one WhatsApp message per entry, no wait) and 20,000 entry
events, one engine worker starts on them; a few seconds in a second engine worker joins the
group (a rebalance while batches are in flight), later a third one leaves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.reliability.conftest import StartWorker
from tests.reliability.support import (
    check_alive,
    deploy,
    partition_of,
    reliability_stack,
    report,
)
from tests.reliability.test_load import PROMO, EndOffsets, distinct_message_ids, promo_events
from tests.support.kafka import Stack, consumed_to_end, produce
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("RELIABILITY_SCALE_EVENTS", "20000"))
# When the second worker joins: after this many requests (early: before the first commit).
JOIN_AT = int(os.environ.get("RELIABILITY_SCALE_JOIN_AT", "300"))
SECOND_ROLE = os.environ.get("RELIABILITY_SCALE_SECOND_ROLE", "engine")


async def committed(stack: Stack, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(stack.env["APP_ID"])
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def test_workers_joining_and_leaving_mid_burst_lose_no_event(
    kafka_bootstrap: str, unique: str, workers: StartWorker
) -> None:
    stack = reliability_stack(kafka_bootstrap, unique, {}, partitions=8)
    await deploy(stack, PROMO)
    requests_topic = stack.env["TOPIC_WHATSAPP_REQUESTS"]
    first = workers(stack, "first", role="engine")
    started = time.monotonic()
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], promo_events(EVENTS))

    moves: list[tuple[str, float, int]] = []
    async with EndOffsets(stack.bootstrap, requests_topic) as requests:
        # A second worker joins as soon as the first has started on the burst.
        while (queued := await requests.total()) < JOIN_AT:
            check_alive([first])
            assert time.monotonic() - started < 120, f"{queued} requests after 120s"
            await asyncio.sleep(0.05)
        second = workers(stack, "second", role=SECOND_ROLE)
        moves.append(("second joins", round(time.monotonic() - started, 1), queued))
        while (queued := await requests.total()) < EVENTS // 2:
            check_alive([first, second])
            assert time.monotonic() - started < 180, f"{queued} requests after 180s"
            await asyncio.sleep(0.2)
        second.stop()  # leaves the group cleanly: another rebalance mid-burst
        moves.append(("second leaves", round(time.monotonic() - started, 1), queued))
        deadline = time.monotonic() + 120
        while (queued := await requests.total()) < EVENTS and time.monotonic() < deadline:
            check_alive([first])
            await asyncio.sleep(0.5)
    # The last commits land; a group still behind is left to the report of what is missing.
    with contextlib.suppress(AssertionError):
        await wait_until(
            lambda: consumed_to_end(
                stack.bootstrap, stack.env["APP_ID"], stack.env["TOPIC_PROFILE_EVENTS"]
            ),
            30,
            interval=0.5,
        )
    count, ids = await distinct_message_ids(stack.bootstrap, requests_topic)
    expected = {f"promo:1:c-{i}:send:1" for i in range(EVENTS)}
    missing = sorted(expected - ids, key=lambda m: int(m.split(":")[2][2:]))
    missing_partitions = sorted({partition_of(m.split(":")[2], 8) for m in missing})
    offsets = await committed(stack, stack.env["TOPIC_PROFILE_EVENTS"])
    report(
        "scale_out_mid_burst",
        events=EVENTS,
        moves=moves,
        seconds=round(time.monotonic() - started, 1),
        requests_on_topic=count,
        distinct_request_ids=len(ids),
        missing=len(missing),
        missing_examples=missing[:10],
        missing_partitions=missing_partitions,
        committed_profile_event_offsets=offsets,
    )
    assert not missing, f"{len(missing)} events never became requests, e.g. {missing[:10]}"
    assert ids == expected
