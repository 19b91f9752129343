"""Kill -9 in the middle of a run: nothing is lost, nobody is messaged twice, no timer fires twice.

What "twice" means for step records (delivered at least once): see Outcome.check.

Given the welcome journey (wait 3s, then a message) and the cart-recovery example (a cart
over 20 waits 2s, then a reminder) and four events per profile (sign-up, cart, a page view nobody
listens to, the sign-up published again), a worker running the engine and the WhatsApp
connector is killed with SIGKILL while timers are pending and sends are in flight.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.reliability.conftest import OpenTail, StartReceiver, StartSandbox, StartWorker
from tests.reliability.support import (
    duplicates_by_kill,
    finish,
    first_after,
    first_send_after,
    journeys_with_waits,
    partition_of,
    report,
)
from tests.support.kafka import produce, shared_by
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 5,000 profiles x 4 events = 20,000 events, 7,500 instances, 7,500 messages.
PROFILES = int(os.environ.get("RELIABILITY_PROFILES", "5000"))
# Two workers: 10,000 events (the takeover, not the volume, is the point).
SHARED_PROFILES = int(os.environ.get("RELIABILITY_SHARED_PROFILES", "2500"))
# The duplicate-rate run: fewer profiles, several kills.
REPEAT_PROFILES = int(os.environ.get("RELIABILITY_REPEAT_PROFILES", "2000"))
REPEAT_KILLS = int(os.environ.get("RELIABILITY_REPEAT_KILLS", "3"))


async def test_kill_9_and_restart_loses_nothing_and_sends_once(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    stack, sandbox, records, expected = await journeys_with_waits(
        kafka_bootstrap, unique, start_sandbox, PROFILES, start_receiver=start_receiver
    )
    steps = await tail(stack, "TOPIC_JOURNEY_STEPS")
    first = workers(stack, "first")
    started = time.monotonic()
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

    # In the middle: a third of the messages are out, timers pending, sends in flight.
    await sandbox.wait_count(len(expected.messages) // 3, seconds=120, watch=[first])
    first.kill()
    killed_at, at_kill = time.time(), len(sandbox.accepted_ids())
    second = workers(stack, "second")
    outcome = await finish(steps, sandbox, expected, [second], started)

    report(
        "kill_9_single_worker",
        events=len(records),
        messages_at_kill=at_kill,
        restart_to_first_step_s=first_after(steps, killed_at),
        restart_to_first_send_s=first_send_after(sandbox, killed_at),
        **duplicates_by_kill(sandbox, [killed_at]),
        **outcome.figures(expected),
    )
    assert second.alive()
    outcome.check(expected, kills=1)


async def test_two_workers_one_killed_the_other_takes_over(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    stack, sandbox, records, expected = await journeys_with_waits(
        kafka_bootstrap, unique, start_sandbox, SHARED_PROFILES, start_receiver=start_receiver
    )
    steps = await tail(stack, "TOPIC_JOURNEY_STEPS")
    a = workers(stack, "a")
    b = workers(stack, "b")
    started = time.monotonic()
    # Both must own partitions before the kill, or there is nothing to take over: wait
    # for the rebalance that splits them (each log's last assignment, disjoint, complete).
    await wait_until(
        lambda: shared_by(a, b, stack.partitions),
        60,
        what="a and b sharing the partitions",
        watch=[a, b],
    )
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

    await sandbox.wait_count(len(expected.messages) // 3, seconds=120, watch=[a, b])
    b_owned = b.owned_partitions()
    b.kill()
    killed_at, at_kill = time.time(), len(sandbox.accepted_ids())
    outcome = await finish(steps, sandbox, expected, [a], started)

    # The killed worker's profiles: when did their journeys move again?
    takeover = first_after(steps, killed_at, b_owned)
    report(
        "kill_9_one_of_two_workers",
        events=len(records),
        killed_owned_partitions=sorted(b_owned),
        survivor_owns_now=sorted(a.owned_partitions()),
        messages_at_kill=at_kill,
        takeover_to_first_step_s=takeover,
        takeover_to_first_send_s=first_send_after(sandbox, killed_at),
        **duplicates_by_kill(sandbox, [killed_at]),
        **outcome.figures(expected),
    )
    assert a.alive()
    assert a.owned_partitions() == set(range(stack.partitions))
    profiles_of_b = {pid for pid, _ in records if partition_of(pid, stack.partitions) in b_owned}
    assert profiles_of_b, "the killed worker owned no profile"
    outcome.check(expected, kills=1)


async def test_duplicate_rate_over_repeated_kills(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    """The same worker killed REPEAT_KILLS times in one run; each time a new one starts."""
    stack, sandbox, records, expected = await journeys_with_waits(
        kafka_bootstrap, unique, start_sandbox, REPEAT_PROFILES, start_receiver=start_receiver
    )
    steps = await tail(stack, "TOPIC_JOURNEY_STEPS")
    current = workers(stack, "w0")
    started = time.monotonic()
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)
    kills = []
    for k in range(1, REPEAT_KILLS + 1):
        target = len(expected.messages) * k // (REPEAT_KILLS + 1)
        await sandbox.wait_count(target, seconds=120, watch=[current])
        current.kill()
        kills.append((time.time(), len(sandbox.accepted_ids())))
        current = workers(stack, f"w{k}")
    outcome = await finish(steps, sandbox, expected, [current], started)

    figures = outcome.figures(expected)
    report(
        "duplicate_rate_repeated_kills",
        events=len(records),
        kills=len(kills),
        messages_at_each_kill=[n for _, n in kills],
        restart_to_first_step_s=[first_after(steps, at) for at, _ in kills],
        restart_to_first_send_s=[first_send_after(sandbox, at) for at, _ in kills],
        **duplicates_by_kill(sandbox, [at for at, _ in kills]),
        duplicate_send_rate=round(figures["duplicate_sends"] / len(expected.messages), 5),
        **figures,
    )
    outcome.check(expected, kills=len(kills))
