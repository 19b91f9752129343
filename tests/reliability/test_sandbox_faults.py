"""Meta fails for a while (5xx, timeouts): sends are retried and all arrive once it recovers.

Given a connector worker, the sandbox and the webhook receiver, each phase turns a fault on
(POST /sandbox/faults) and queues 200 send requests. When the fault is over every message
must have reached the sandbox exactly once, and no `accepted` or `delivered` event may name
a message the sandbox does not have.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from engine.streaming.topics import ensure_topics
from schemas.messages import RenderedParameters, SendRequest
from tests.reliability.conftest import OpenTail, StartReceiver, StartSandbox, StartWorker
from tests.reliability.support import (
    TopicTail,
    duplicates,
    reliability_stack,
    report,
)
from tests.support.builders import phone
from tests.support.kafka import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_PHASE = int(os.environ.get("RELIABILITY_FAULT_REQUESTS", "200"))
CALL_TIMEOUT = 2.0  # WHATSAPP_TIMEOUT_SECONDS for this worker

# name -> POST /sandbox/faults body. Every fault lasts a few seconds, well within the
# connector's retries (6, with backoff 0.25 s doubling up to 8 s: ~16 s in all).
PHASES: list[tuple[str, dict[str, Any]]] = [
    ("http_500_for_3s", {"status": 500, "seconds": 3}),
    ("http_503_for_3s", {"status": 503, "seconds": 3}),
    # The call times out (2 s); the answer would have been a 503 after 3 s.
    ("timeout_then_503_for_3s", {"status": 503, "delay_seconds": 3, "seconds": 3}),
    # The call times out (2 s); the sandbox would have answered after 3 s. It reads the
    # body only after the delay, so a call its client gave up on is never taken. "Meta took
    # it but the answer was lost" is the sandbox's `answer_delay` (test_whatsapp_connector).
    ("timeout_for_2s", {"delay_seconds": 3, "seconds": 2}),
]


def send_request(phase: str, i: int) -> SendRequest:
    pid = f"{phase}-{i}"
    return SendRequest(
        message_id=f"faults:1:{pid}:send:1",
        journey_id="faults",
        journey_version=1,
        activity_id="send",
        profile_id=pid,
        to=phone(i),
        consent="opted_in",
        template="welcome",
        language="es",
        parameters=RenderedParameters(body=[f"N{i}"]),
        requested_at=datetime.now(UTC),
    )


def accepted_pairs(deliveries: TopicTail) -> set[tuple[str, str]]:
    return {(d["message_id"], d["wamid"]) for d in deliveries.values() if d["status"] == "accepted"}


async def test_sends_are_retried_through_5xx_and_timeouts_and_arrive(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    stack = reliability_stack(
        kafka_bootstrap, unique, {"WHATSAPP_TIMEOUT_SECONDS": str(CALL_TIMEOUT)}
    )
    await ensure_topics(stack.settings)
    receiver_url = await start_receiver(stack.settings)
    sandbox = await start_sandbox(webhook_url=receiver_url)
    stack.extra["WHATSAPP_API_URL"] = sandbox.url
    deliveries = await tail(stack, "TOPIC_DELIVERY_EVENTS")
    worker = workers(stack, "connector", role="whatsapp")

    figures: dict[str, dict[str, Any]] = {}
    for phase, fault in PHASES:
        requests = [send_request(phase, i) for i in range(PER_PHASE)]
        wanted = {r.message_id for r in requests}
        faults_before = sandbox.state.stats.faults_injected
        await sandbox.fault(**fault)
        started = time.monotonic()
        await produce(
            stack.bootstrap,
            stack.env["TOPIC_WHATSAPP_REQUESTS"],
            [(r.profile_id, r.model_dump_json().encode()) for r in requests],
        )

        def all_accepted(t: TopicTail, wanted: set[str] = wanted) -> bool:
            return wanted <= {m for m, _ in accepted_pairs(t)}

        await deliveries.until(
            all_accepted,
            seconds=60,
            watch=[worker],
            what=f"{phase}: every message accepted",
        )
        sent = Counter({m: n for m, n in sandbox.accepted_ids().items() if m in wanted})
        figures[phase] = {
            "requests": PER_PHASE,
            "fault": fault,
            "calls_refused_or_delayed": sandbox.state.stats.faults_injected - faults_before,
            "all_accepted_after_s": round(time.monotonic() - started, 1),
            "distinct_arrived": len(sent),
            "duplicate_sends": sum(n - 1 for n in sent.values()),
        }
    await deliveries.settle(2.0)  # the last statuses (sent, delivered, read)

    report("sandbox_faults", phases=figures)
    everything = {f"faults:1:{p}-{i}:send:1" for p, _ in PHASES for i in range(PER_PHASE)}
    sandbox_pairs = {
        (mid, m.wamid)
        for m in sandbox.state.messages
        if m.biz_opaque_callback_data
        for mid in [m.biz_opaque_callback_data.split('"message_id":"')[1].split('"')[0]]
    }
    statuses = Counter(d["status"] for d in deliveries.values())
    assert worker.alive()
    assert everything <= sandbox.accepted_ids().keys(), "a message was lost"
    assert statuses["failed"] == 0, "a retriable fault ended as failed"
    # Nothing is marked accepted or delivered that the sandbox does not have.
    assert accepted_pairs(deliveries) <= sandbox_pairs
    for d in deliveries.values():
        if d["status"] in ("sent", "delivered", "read"):
            assert (d["message_id"], d["wamid"]) in sandbox_pairs, d
            assert d["status"] in sandbox.state.by_wamid[d["wamid"]].statuses, d
    # Nobody is messaged twice: the target, whatever the fault.
    twice = duplicates(sandbox.accepted_ids())
    assert not twice, {p: f["duplicate_sends"] for p, f in figures.items()}
