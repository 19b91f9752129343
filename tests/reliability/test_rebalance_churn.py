"""Early rebalance churn: connector workers join and leave the group while a burst starts, and
every event still becomes its send request.

Given the promotion journey (one WhatsApp message per entry, no wait), an engine worker and a
connector worker, and 12,000 entry events produced at once, extra connector workers join the
consumer group 0.3-1.2 s apart and leave it with SIGTERM a few seconds later. Each join and
leave rebalances the engine's partitions before and while it commits its first offsets: the
moment faust's post-rebalance seek used to empty stream buffers and ack the records in them
unprocessed (`SeekingConsumer` in engine/streaming/consumer.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from tests.reliability.conftest import OpenTail, StartSandbox, StartWorker
from tests.reliability.support import (
    check_alive,
    deploy,
    partition_of,
    reliability_stack,
    report,
)
from tests.reliability.test_load import PROMO, distinct_message_ids, promo_events
from tests.support.kafka import Stack, Worker, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("RELIABILITY_CHURN_EVENTS", "12000"))
CHURN_WORKERS = int(os.environ.get("RELIABILITY_CHURN_WORKERS", "6"))
# The join and stay times are drawn at random; a seed replays one schedule.
SEED = int(os.environ.get("RELIABILITY_CHURN_SEED", str(random.randrange(1_000_000))))
JOIN_GAP_S = (0.3, 1.2)
STAY_S = (2.5, 6.0)
# From the first worker's start until every request must be on the topic.
REQUESTS_SECONDS = float(os.environ.get("RELIABILITY_CHURN_SECONDS", "75"))
PARTITIONS = 8
RATE = 80.0


def assignments(worker: Worker) -> int:
    """How many partition assignments the engine worker took (one log line per rebalance)."""
    return worker.log_text().count('"timer index rebuilt"')


def coordinator_crashed(worker: Worker) -> bool:
    """Whether the worker's group coordinator died: the process lives on, but consumes nothing
    more (aiokafka logs this once, e.g. when faust's assignor rejects an assignment)."""
    return "Unexpected error in coordinator routine" in worker.log_text()


async def test_connector_workers_joining_and_leaving_early_lose_no_event(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: StartSandbox,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    sandbox = await start_sandbox(rate_per_second=RATE)
    stack: Stack = reliability_stack(
        kafka_bootstrap,
        unique,
        {"WHATSAPP_API_URL": sandbox.url, "WHATSAPP_RATE_PER_SECOND": str(RATE)},
        partitions=PARTITIONS,
    )
    await deploy(stack, PROMO)
    requests_topic = stack.env["TOPIC_WHATSAPP_REQUESTS"]
    requests = await tail(stack, "TOPIC_WHATSAPP_REQUESTS")
    rng = random.Random(SEED)
    schedule: list[tuple[float, float]] = []  # (join at, stay for), seconds
    join_at = 0.0
    for _ in range(CHURN_WORKERS):
        join_at += rng.uniform(*JOIN_GAP_S)
        schedule.append((join_at, rng.uniform(*STAY_S)))

    started = time.monotonic()
    engine = workers(stack, "engine", role="engine")
    connector = workers(stack, "connector", role="whatsapp")
    extras: list[Worker] = []
    churn: dict[int, dict[str, float | int | None]] = {}

    async def join_and_leave(i: int, at: float, stay: float) -> None:
        await asyncio.sleep(at)
        extra = workers(stack, f"extra{i}", role="whatsapp")
        extras.append(extra)
        joined = round(time.monotonic() - started, 1)
        await asyncio.sleep(stay)
        # Off the loop: a stopping connector drains, and the sandbox it drains into runs here.
        await asyncio.to_thread(extra.stop)
        left = round(time.monotonic() - started, 1)
        assert extra.proc is not None
        churn[i] = {"joined_s": joined, "left_s": left, "exit": extra.proc.returncode}

    producing = asyncio.create_task(
        produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], promo_events(EVENTS))
    )
    churning = [
        asyncio.create_task(join_and_leave(i, at, stay)) for i, (at, stay) in enumerate(schedule)
    ]
    seen_ids: set[str] = set()
    read = 0
    try:
        deadline = started + REQUESTS_SECONDS
        while len(seen_ids) < EVENTS and time.monotonic() < deadline:
            check_alive([engine, connector])
            await requests.poll()
            seen_ids.update(r.value["message_id"] for r in requests.records[read:])
            read = len(requests.records)
        all_requests_s = round(time.monotonic() - started, 1)
        # Both finished long before the deadline unless something hangs; bound them anyway.
        await asyncio.wait_for(producing, timeout=30)
        await asyncio.wait_for(asyncio.gather(*churning), timeout=45)
        check_alive([engine, connector])
        alive = {"engine": engine.alive(), "connector": connector.alive()}
    finally:
        for task in [producing, *churning]:
            task.cancel()
        await asyncio.gather(producing, *churning, return_exceptions=True)
        for w in [engine, connector, *extras]:
            w.kill()  # SIGKILL: a draining connector would hold this loop, and the sandbox

    count, ids = await distinct_message_ids(stack.bootstrap, requests_topic)
    expected = {f"promo:1:c-{i}:send:1" for i in range(EVENTS)}
    missing = sorted(expected - ids, key=lambda m: int(m.split(":")[2][2:]))
    rebalances = assignments(engine)
    report(
        "rebalance_churn",
        events=EVENTS,
        churn_workers=CHURN_WORKERS,
        seed=SEED,
        churn=[churn[i] for i in sorted(churn)],
        engine_assignments=rebalances,
        all_requests_s=all_requests_s,
        seconds=round(time.monotonic() - started, 1),
        requests_on_topic=count,
        distinct_request_ids=len(ids),
        missing=len(missing),
        missing_examples=missing[:10],
        missing_partitions=sorted({partition_of(m.split(":")[2], PARTITIONS) for m in missing}),
        workers_alive=alive,
        sandbox_messages=len(sandbox.state.messages),
        coordinator_crashed={
            "engine": coordinator_crashed(engine),
            "connector": coordinator_crashed(connector),
            "extras": sum(coordinator_crashed(w) for w in extras),
        },
    )
    assert not missing, f"{len(missing)} events never became requests, e.g. {missing[:10]}"
    assert ids == expected
    assert all(alive.values()), f"a worker died during the churn: {alive}"
    assert rebalances > 1, "the churn never moved the engine's partitions"
    # A worker whose coordinator died lives on but consumes nothing (app.py: standbys).
    crashed = [w.log_path.name for w in (engine, connector, *extras) if coordinator_crashed(w)]
    assert not crashed, f"group coordinator died in {crashed}"
