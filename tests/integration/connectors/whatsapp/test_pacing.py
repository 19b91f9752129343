"""Pacing to Meta's throughput cap, end to end: requests on Kafka -> connector worker(s) ->
sandbox with its own rate limit. Real broker, real HTTP on loopback.

These tests check what pacing guarantees (every message once, no 130429, never faster
than the cap, a survivor taking the whole cap); how close to the cap the connector gets
is `make bench`'s figure (bench/connector_bench.py), never a timed bound here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.whatsapp.pacing import default_burst
from schemas.messages import SendRequest
from tests.integration.connectors.whatsapp.test_whatsapp_connector import (
    CreateTopics,
    Produce,
    SettingsFactory,
    Start,
    StartWorker,
    record,
    send_request,
)

pytestmark = pytest.mark.integration


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` that fall in any `window` seconds (the pacing bound to check)."""
    ordered, first, most = sorted(times), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] > window:
            first += 1
        most = max(most, last - first + 1)
    return most


def slack_burst(rate: float) -> int:
    """The sandbox bucket's burst in the pacing tests: one second of traffic at `rate`.

    The sandbox runs in this test process and judges calls by when it reads them: when
    the busy 2-core machine stalls it (or a worker), the calls of the stall arrive
    together. A quarter of a second was not enough room under a load average of 15
    (17 130429s in one two-worker run). With a second, the bucket still refuses a burst
    that no pacing held back; a pacer only slightly over the cap shows as a burst
    shorter than the cap allows (the tests' `ideal * 0.95` checks).
    """
    return max(2, int(rate))


def liveness_seconds(count: int, rate: float) -> float:
    """How long a test waits for `count` sends at `rate` before calling pacing stuck.

    A liveness bound, not a performance target: twenty times the ideal plus a minute (a
    burst of 5,000 at 1,000/s took up to 54 s at a load average of 17 on 2 cores), so a
    busy machine does not trip it; throughput at the cap is `make bench`'s figure.
    """
    return count / rate * 20 + 60


def sent_once_without_rate_errors(sandbox: Any, requests: list[SendRequest]) -> None:
    """Every request reached the sandbox exactly once, and it never answered 130429."""
    stats = sandbox.state.stats
    assert stats.rate_limited == 0 and 130429 not in stats.rejected_by_code, stats.to_json()
    assert sorted(sandbox.message_ids()) == sorted(r.message_id for r in requests)


async def run_burst(
    *,
    count: int,
    rate: float,
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_worker: StartWorker,
    create_topics: CreateTopics,
    produce: Produce,
) -> tuple[float, float]:
    """Queue `count` requests, then let one worker send them at `rate`; check that each went
    out once and that the sandbox, whose bucket refuses more than `rate` * W + its burst in
    any W seconds, never answered 130429; return (seconds, ideal)."""
    sandbox_burst = slack_burst(rate)
    sandbox = await start_sandbox(rate_per_second=rate, burst=sandbox_burst, webhook_url=None)
    settings = wa_settings(
        whatsapp_rate_per_second=rate, whatsapp_max_in_flight=64, whatsapp_api_url=sandbox.url
    )
    await create_topics(settings)
    requests = [
        send_request(f"burst:{i}", f"p-{i % 997}", f"+346001{i % 100000:05d}") for i in range(count)
    ]
    await produce(settings, settings.topic_whatsapp_requests, [record(r) for r in requests])
    worker = start_worker(settings)
    deadline = time.monotonic() + liveness_seconds(count, rate)
    while len(sandbox.state.messages) < count and time.monotonic() < deadline:
        assert worker.process.poll() is None, worker.log()
        await asyncio.sleep(0.05)
    received = [m.received_at for m in sandbox.state.messages]
    assert len(received) == count, f"{len(received)} of {count} arrived\n{worker.log()}"
    sent_once_without_rate_errors(sandbox, requests)
    burst = default_burst(rate)  # the connector's
    return max(received) - min(received), (count - burst) / rate


@pytest.mark.slow
@pytest.mark.parametrize(("count", "rate"), [(5000, 1000.0), (400, 80.0)])
async def test_a_burst_is_paced_to_the_cap_without_rate_errors(
    count: int,
    rate: float,
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_worker: StartWorker,
    create_topics: CreateTopics,
    produce: Produce,
) -> None:
    seconds, ideal = await run_burst(
        count=count,
        rate=rate,
        wa_settings=wa_settings,
        start_sandbox=start_sandbox,
        start_worker=start_worker,
        create_topics=create_topics,
        produce=produce,
    )
    print(
        f"burst of {count} at {rate:g}/s: {seconds:.3f} s "
        f"(ideal {ideal:.3f} s, {seconds / ideal:.1%})"
    )
    # Pacing is correct when every message goes out once, Meta's rate error never
    # appears (no window above the cap plus the sandbox's slack) and the whole burst is
    # never faster than the cap allows (run_burst checks the first two). How close it
    # gets to the cap (the 10% target) is a performance figure, measured by
    # `make bench` (bench/connector_bench.py), because a timed upper bound fails whenever
    # the 2-core machine is busy; run_burst only waits a liveness bound (liveness_seconds).
    assert seconds >= ideal * 0.95, f"faster than the cap: {seconds:.3f} s for ideal {ideal:.3f} s"


def _shares_logged(worker: Any, owned: int, rate: float) -> bool:
    """Whether the worker said it paces at `rate` owning `owned` request partitions."""
    return any(
        f"partitions_owned={owned}" in line and f"rate_per_second={rate!r}" in line
        for line in worker.log(100_000).splitlines()
        if "whatsapp.pacing_share" in line
    )


async def _wait_for(done: Callable[[], bool], workers: list[Any], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        for worker in workers:
            assert worker.process.poll() is None, worker.log()
        assert time.monotonic() < deadline, "\n---\n".join(w.log() for w in workers)
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_workers_share_a_numbers_cap_and_a_survivor_takes_all_of_it(
    wa_settings: SettingsFactory,
    start_sandbox: Start,
    start_worker: StartWorker,
    create_topics: CreateTopics,
    produce: Produce,
    tmp_path: Any,
) -> None:
    """WHATSAPP_NUMBER_CAP_PER_SECOND: two workers in one group pace at half the cap each
    (they own half of the requests topic's partitions), together never above it; when one
    stops, the other owns every partition and paces at the whole cap.

    No stopwatch: the survivor's pace is compared with one worker's share, at a cap low
    enough (120/s) for a busy 2-core machine to reach; the waits are liveness bounds."""
    cap = 120.0
    sandbox_burst = slack_burst(cap)
    sandbox = await start_sandbox(rate_per_second=cap, burst=sandbox_burst, webhook_url=None)
    settings = wa_settings(
        whatsapp_number_cap_per_second=cap,
        whatsapp_max_in_flight=64,
        whatsapp_api_url=sandbox.url,
    )
    await create_topics(settings)
    partitions = settings.topic_partitions
    first = start_worker(settings)
    second = start_worker(settings, WA_WORKER_DATADIR=str(tmp_path / "second-data"))
    workers = [first, second]
    half = partitions // 2
    share = cap * half / partitions
    await _wait_for(lambda: all(_shares_logged(w, half, share) for w in workers), workers, 90)

    count = 480
    requests = [send_request(f"share:{i}", f"p-{i % 997}", f"+346003{i:05d}") for i in range(count)]
    await produce(settings, settings.topic_whatsapp_requests, [record(r) for r in requests])
    await _wait_for(
        lambda: len(sandbox.state.messages) >= count, workers, liveness_seconds(count, cap)
    )
    received = [m.received_at for m in sandbox.state.messages]
    sent_once_without_rate_errors(sandbox, requests)
    # Together at the cap, never above it: each worker's burst at most comes on top.
    ideal = (count - 2 * default_burst(share)) / cap
    seconds = max(received) - min(received)
    assert seconds >= ideal * 0.95, f"faster than the cap: {seconds:.3f} s for {ideal:.3f} s"

    second.stop()
    await _wait_for(lambda: _shares_logged(first, partitions, cap), [first], 60)
    more = 360
    later = [send_request(f"alone:{i}", f"p-{i % 997}", f"+346004{i:05d}") for i in range(more)]
    await produce(settings, settings.topic_whatsapp_requests, [record(r) for r in later])
    await _wait_for(
        lambda: len(sandbox.state.messages) >= count + more, [first], liveness_seconds(more, cap)
    )
    sent_once_without_rate_errors(sandbox, requests + later)
    alone = [m.received_at for m in sandbox.state.messages[count:]]
    # A worker still paced at its share puts at most share * 2 + its burst into any two
    # seconds; the survivor beats that, and stays within the cap. Two seconds rather than
    # one so that a pause of this process (which runs the sandbox), bunching arrivals,
    # is less likely to make a share-paced worker look faster than it is.
    busiest = most_in_window(alone, 2.0)
    print(f"survivor: {busiest} in its busiest 2 s; share {share:g}/s, cap {cap:g}/s")
    assert share * 2 + default_burst(share) + 1 < busiest <= cap * 2 + sandbox_burst + 1
