"""A burst far beyond the WhatsApp cap: requests wait in Kafka, none are dropped, memory stays flat.

Given a promotion journey (one WhatsApp message, no wait) and 100,000 entry events at once,
one worker (engine + connector, paced at 80 messages/s like Meta's default tier) turns every
event into a SendRequest on whatsapp-requests, while the connector drains them at the cap.
Draining all 100,000 at 80/s takes ~21 minutes, so the drain is measured over a window.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from tests.reliability.conftest import StartSandbox, StartWorker
from tests.reliability.support import (
    RssSampler,
    check_alive,
    deploy,
    reliability_stack,
    report,
    topic_partitions,
)
from tests.support.builders import phone, profile_event
from tests.support.kafka import Stack, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("RELIABILITY_BURST_EVENTS", "100000"))
RATE = 80.0
ENGINE_SECONDS = float(os.environ.get("RELIABILITY_BURST_SECONDS", "300"))
STALL_SECONDS = 20
DRAIN_WINDOW = float(os.environ.get("RELIABILITY_DRAIN_SECONDS", "30"))
# The worker's peak resident memory must stay under this (MiB).
RSS_LIMIT_MIB = 768

PROMO = """\
id: promo
name: Black Friday promotion
entry: {event: promo.targeted}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""


class EndOffsets:
    """How many records a topic holds (the sum of its end offsets), with one reused client."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

    async def __aenter__(self) -> EndOffsets:
        await self.consumer.start()
        self.tps = await topic_partitions(self.bootstrap, self.topic)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def total(self) -> int:
        return sum((await self.consumer.end_offsets(self.tps)).values())


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def distinct_message_ids(bootstrap: str, topic: str) -> tuple[int, set[str]]:
    """Every record of the requests topic, and the distinct message ids among them."""
    tps = await topic_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        count, ids = 0, set()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                for r in batch:
                    count += 1
                    # The id is the first field; no need to parse 100,000 whole records.
                    assert r.value is not None and r.value.startswith(b'{"message_id":"')
                    ids.add(r.value[15 : r.value.index(b'"', 15)].decode())
        return count, ids
    finally:
        await consumer.stop()


def promo_events(count: int) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for i in range(count):
        pid = f"c-{i}"
        attributes = {"phone": phone(i), "first_name": f"N{i}", "whatsapp_consent": "opted_in"}
        out.append(
            (pid, profile_event(f"{pid}:promo", "promo.targeted", pid, attributes=attributes))
        )
    return out


# "split": the engine and the connector in two workers (role engine, role whatsapp);
# "all": both in one worker (role all), where the connector's backlog holds the engine back.
TOPOLOGY = os.environ.get("RELIABILITY_BURST_TOPOLOGY", "split")


async def test_a_burst_waits_in_kafka_and_drains_at_the_cap(
    kafka_bootstrap: str, unique: str, start_sandbox: StartSandbox, workers: StartWorker
) -> None:
    sandbox = await start_sandbox(rate_per_second=RATE)  # Meta's default tier, enforced
    stack: Stack = reliability_stack(
        kafka_bootstrap,
        unique,
        {"WHATSAPP_API_URL": sandbox.url, "WHATSAPP_RATE_PER_SECOND": str(RATE)},
        partitions=8,
    )
    await deploy(stack, PROMO)
    requests_topic = stack.env["TOPIC_WHATSAPP_REQUESTS"]
    if TOPOLOGY == "all":
        engine = connector = workers(stack, "burst", role="all")
    else:
        engine = workers(stack, "engine", role="engine")
        connector = workers(stack, "connector", role="whatsapp")
    both = [engine] if engine is connector else [engine, connector]
    samplers = [RssSampler(w.proc.pid).start() for w in both if w.proc is not None]
    try:
        records = promo_events(EVENTS)
        started = time.monotonic()
        await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)
        produced_s = time.monotonic() - started

        # Every event becomes a request on Kafka, whatever the connector's pace.
        deadline = time.monotonic() + ENGINE_SECONDS
        progress: list[tuple[float, int]] = []
        async with EndOffsets(stack.bootstrap, requests_topic) as requests:
            while (queued := await requests.total()) < EVENTS:
                progress.append((round(time.monotonic() - started, 1), queued))
                check_alive(both)
                assert time.monotonic() < deadline, (
                    f"only {queued} of {EVENTS} requests in {ENGINE_SECONDS:.0f}s; "
                    f"progress (s, requests): {progress[::10]}"
                )
                # Nothing new for STALL_SECONDS with almost all done: the rest is not coming.
                stalled = len(progress) > STALL_SECONDS and progress[-STALL_SECONDS][1] == queued
                if stalled and queued >= EVENTS * 0.99:
                    break
                await asyncio.sleep(1.0)
        engine_s = time.monotonic() - started
        engine_cpu_s = samplers[0].cpu_seconds()
        rss_after_engine = [r.samples[-1][1] / 1024 for r in samplers]

        # The connector keeps draining at the cap: measure a window once the engine is idle.
        await asyncio.sleep(2.0)
        window_start, sent_before = time.monotonic(), len(sandbox.state.messages)
        await asyncio.sleep(DRAIN_WINDOW)
        sent_in_window = len(sandbox.state.messages) - sent_before
        window = time.monotonic() - window_start
        check_alive(both)
        sent_total = len(sandbox.state.messages)
        committed = await committed_total(stack.bootstrap, stack.env["APP_ID"], requests_topic)
        rss_end = [r.samples[-1][1] / 1024 for r in samplers]
    finally:
        for sampler in samplers:
            await sampler.stop()
        for w in both:
            w.kill()  # SIGTERM would block this loop, and the sandbox in it, while it drains

    count, ids = await distinct_message_ids(stack.bootstrap, requests_topic)
    rate = sent_in_window / window
    stats = sandbox.state.stats
    peaks = [round(r.peak_mib, 1) for r in samplers]
    missing = sorted({f"promo:1:c-{i}:send:1" for i in range(EVENTS)} - ids)
    report(
        "burst",
        topology=TOPOLOGY,
        events=EVENTS,
        produce_s=round(produced_s, 1),
        engine_all_requests_queued_s=round(engine_s, 1),
        engine_events_per_s=round(EVENTS / engine_s),
        engine_worker_cpu_s=engine_cpu_s,
        requests_queued_by_second=progress[::15],
        requests_on_topic=count,
        distinct_request_ids=len(ids),
        missing_requests=len(missing),
        missing_examples=missing[:10],
        drain_window_s=round(window, 1),
        sent_in_window=sent_in_window,
        drain_rate_per_s=round(rate, 1),
        sent_total=sent_total,
        requests_committed_by_connector=committed,
        waiting_in_kafka_at_stop=count - committed,
        sandbox_rate_limited=stats.rate_limited,
        rss_peak_mib=peaks,
        rss_after_engine_mib=[round(m, 1) for m in rss_after_engine],
        rss_end_of_drain_mib=[round(m, 1) for m in rss_end],
    )
    assert not missing, f"{len(missing)} events never became requests, e.g. {missing[:10]}"
    assert count == EVENTS and len(ids) == EVENTS, "a request was repeated"
    assert abs(rate - RATE) <= RATE * 0.05, f"drained at {rate:.1f}/s, cap {RATE}/s"
    assert stats.rate_limited == 0, "the connector went over the cap"
    assert max(peaks) < RSS_LIMIT_MIB
    # Waiting requests are in Kafka, not in a worker: memory does not grow while draining.
    for before, after in zip(rss_after_engine, rss_end, strict=True):
        assert after <= before * 1.1 + 16
