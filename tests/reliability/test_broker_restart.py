"""The broker stops in the middle of a run and comes back on the same data: workers finish.

Given the welcome and cart journeys and four events per profile, the single local broker
(deploy/kafka/stop, then deploy/kafka/start without KAFKA_WIPE) goes away while timers are
pending and sends are in flight; the worker reconnects by itself, nothing is lost and
nobody is messaged twice.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.reliability.conftest import OpenTail, StartSandbox, StartWorker
from tests.reliability.support import (
    LocalBroker,
    duplicates_by_kill,
    finish,
    first_after,
    first_send_after,
    journeys_with_waits,
    report,
)
from tests.support.kafka import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILES = int(os.environ.get("RELIABILITY_BROKER_PROFILES", "2000"))
DOWN_SECONDS = 5.0


@pytest.fixture
def broker(kafka_bootstrap: str) -> LocalBroker:
    host, _, port = kafka_bootstrap.rpartition(":")
    controller = int(os.environ.get("KAFKA_CONTROLLER_PORT", int(port) + 1))
    local = LocalBroker(int(port), controller)
    if host not in ("127.0.0.1", "localhost") or not local.started_by_script:
        pytest.skip("needs a broker that deploy/kafka/start runs (it is stopped and started)")
    return local


async def test_a_broker_restart_mid_run_loses_nothing(
    kafka_bootstrap: str,
    unique: str,
    broker: LocalBroker,
    start_sandbox: StartSandbox,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    stack, sandbox, records, expected = await journeys_with_waits(
        kafka_bootstrap, unique, start_sandbox, PROFILES
    )
    steps = await tail(stack, "TOPIC_JOURNEY_STEPS")
    worker = workers(stack, "worker")
    started = time.monotonic()
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

    # Early: most timers are still pending, and come due while the broker is away.
    await sandbox.wait_count(len(expected.messages) // 10, seconds=120, watch=[worker])
    stopping = time.time()
    # In threads: the sandbox lives in this event loop and must keep answering meanwhile.
    await asyncio.to_thread(broker.stop)
    stopped = time.time()
    await asyncio.sleep(DOWN_SECONDS)
    starting = time.time()
    await asyncio.to_thread(broker.start)
    back = time.time()
    assert worker.alive(), worker.log_text()[-3000:]
    outcome = await finish(steps, sandbox, expected, [worker], started, seconds=180)

    report(
        "broker_restart",
        events=len(records),
        broker_stop_s=round(stopped - stopping, 1),
        broker_start_s=round(back - starting, 1),
        broker_down_s=round(back - stopped, 1),
        broker_back_to_first_step_s=first_after(steps, back),
        broker_back_to_first_send_s=first_send_after(sandbox, back),
        **duplicates_by_kill(sandbox, [stopping]),
        **outcome.figures(expected),
    )
    assert worker.alive(), "the worker must reconnect, not exit"
    outcome.check(expected, kills=0)
