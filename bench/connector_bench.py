"""Connector: sustained sends per second against the sandbox at a 1,000/s cap per number.

SendRequests (each naming its business number in phone_number_id) are written to the
requests topic while one connector worker runs; the sandbox caps every number at the
same 1,000/s and answers 130429 above it. One number, then four. The baseline in the
same run is a bare aiohttp client posting the same messages to an uncapped sandbox:
the ceiling of HTTP on loopback on this machine, without Kafka or the connector.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PHONE_NUMBER_IDS,
    ROOT,
    SANDBOX_TOKEN,
    BenchStack,
    Broker,
    OffsetWatch,
    Process,
    Sandbox,
    json_result,
    machine_busy_seconds,
    preload,
    received_at,
    send_request,
    worker,
)
from bench.engine_bench import start_profiler, stop_profiler


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    seconds: float = 15.0  # of traffic at the cap, per phase
    cap: float = 1000.0
    numbers: tuple[int, ...] = (1, 4)
    bare_calls: int = 10_000
    timeout: float = 300.0
    root: Path = ROOT  # the source tree the connector runs from
    profiler: str | None = None  # "py-spy": an extra, unmeasured four-number phase under it
    # Then the largest phase again with this many connector workers in one group, each
    # paced at cap / workers (the README's scale-out rule); 0 or 1: no such phase.
    scale_out_workers: int = 2


def sustained_rate(times: list[float], trim: float = 0.05) -> float:
    """Messages per second between the first and last `trim` share (warm-up, tail)."""
    if len(times) < 20:
        return float("nan")
    ordered = sorted(times)
    lo, hi = int(len(ordered) * trim), int(len(ordered) * (1 - trim)) - 1
    span = ordered[hi] - ordered[lo]
    return (hi - lo) / span if span > 0 else float("nan")


async def bare_http(log_dir: Path, calls: int) -> dict[str, Any]:
    sandbox = Sandbox(log_dir, rate=0, numbers=PHONE_NUMBER_IDS, name="bare-http-sandbox")
    try:
        await sandbox.ready()
        args = [sys.executable, "-m", "bench.bare_http", "--url", sandbox.url]
        args += ["--calls", str(calls)]
        for number in PHONE_NUMBER_IDS:
            args += ["--number", number]
        return await json_result(
            args,
            300,
            "the bare HTTP client",
            env={**os.environ, "WA_SANDBOX_TOKEN": SANDBOX_TOKEN},
        )
    finally:
        sandbox.stop()


async def phase(
    broker: Broker,
    stack: BenchStack,
    sandbox: Sandbox,
    connectors: Sequence[Process],
    numbers: int,
    count: int,
    label: str,
    timeout: float,
) -> dict[str, Any]:
    settings = stack.settings
    ids = PHONE_NUMBER_IDS[:numbers]
    run_id = f"{stack.unique}-{label}"
    async with OffsetWatch(broker.bootstrap, settings.topic_delivery_events) as outcomes:
        before = await outcomes.total()
        cpu_before = sum(c.cpu_seconds() for c in connectors)
        sandbox_before = sandbox.process.cpu_seconds()
        busy_before, wall_before = machine_busy_seconds(), time.monotonic()
        await preload(
            broker.bootstrap,
            settings.topic_whatsapp_requests,
            (send_request(i, run_id, ids[i % numbers]) for i in range(count)),
            settings.topic_partitions,
        )
        got, waited = await outcomes.wait_for(
            before + count, timeout=timeout, watch=[*connectors, sandbox.process]
        )
        cpu = sum(c.cpu_seconds() for c in connectors) - cpu_before
        sandbox_cpu = sandbox.process.cpu_seconds() - sandbox_before
        busy = machine_busy_seconds() - busy_before
        wall = time.monotonic() - wall_before
    stats = await sandbox.get("/sandbox/stats")
    messages = await sandbox.get("/sandbox/messages")
    await sandbox.reset()
    times = [received_at(m) for m in messages]
    per_number = {
        number: sustained_rate([received_at(m) for m in messages if m["phone_number_id"] == number])
        for number in ids
    }
    rejected = stats.get("rejected_by_code", {})
    overall = (max(times) - min(times)) if len(times) > 1 else 0.0
    return {
        "numbers": numbers,
        "workers": len(connectors),
        "requests": count,
        "outcomes": got - before,
        "accepted": int(stats["accepted"]),
        "complete": got - before >= count,
        "seconds": waited,
        "sustained_per_second": sustained_rate(times),
        "overall_per_second": len(times) / overall if overall else 0.0,
        "per_number_per_second": per_number,
        "cap_per_second": 1000.0 * numbers,
        "rate_limited_130429": int(rejected.get("130429", 0)),
        "rejected_by_code": rejected,
        "connector_cpu_seconds": cpu,
        "connector_cpu_per_send_ms": cpu / max(1, len(times)) * 1000,
        "sandbox_cpu_per_send_ms": sandbox_cpu / max(1, len(times)) * 1000,
        # Cores the whole machine kept busy while the phase ran (connector, sandbox, the
        # broker, this driver): how close the phase came to the machine's own ceiling.
        "machine_busy_cores": busy / wall if wall > 0 else float("nan"),
    }


async def scale_out(
    broker: Broker,
    stack: BenchStack,
    sandbox: Sandbox,
    cfg: ConnectorConfig,
    log_dir: Path,
    workers: list[Process],
) -> dict[str, Any]:
    """The largest phase with `cfg.scale_out_workers` connector workers sharing the cap.

    The workers share the requests topic's partitions (one consumer group), so each sees
    about 1/N of every number's traffic. Each is given the number's whole cap
    (`WHATSAPP_NUMBER_CAP_PER_SECOND`) and paces at its share of the partitions, 1/N of
    it here; a tree from before that setting reads `WHATSAPP_RATE_PER_SECOND`, cap / N.
    `workers` is filled as they start, so the caller stops them whatever happens here.
    """
    count_workers = cfg.scale_out_workers
    rate = cfg.cap / count_workers
    for n in range(count_workers):
        workers.append(
            worker(
                stack,
                log_dir,
                role="whatsapp",
                name=f"connector-worker-{n + 1}-of-{count_workers}",
                root=cfg.root,
                extra_env={
                    "WHATSAPP_NUMBER_CAP_PER_SECOND": str(cfg.cap),
                    "WHATSAPP_RATE_PER_SECOND": str(rate),
                    **sandbox.worker_env,
                },
            )
        )
    # Warm up: both join the group (a rebalance) and open their HTTP pools.
    await phase(broker, stack, sandbox, workers, 1, 200, "warmup-scale-out", 120)
    numbers = max(cfg.numbers)
    count = int(cfg.cap * numbers * cfg.seconds)
    result = await phase(
        broker, stack, sandbox, workers, numbers, count, f"n{numbers}w{count_workers}", cfg.timeout
    )
    result["rate_per_worker"] = rate
    return result


async def run(broker: Broker, cfg: ConnectorConfig, log_dir: Path) -> dict[str, Any]:
    from engine.streaming.topics import ensure_topics

    stack = BenchStack(broker.bootstrap, "connector")
    settings = stack.settings
    sandbox: Sandbox | None = None
    connector: Process | None = None
    workers: list[Process] = []
    try:
        baseline = await bare_http(log_dir, cfg.bare_calls)
        await ensure_topics(settings)
        sandbox = Sandbox(log_dir, rate=cfg.cap, numbers=PHONE_NUMBER_IDS, name="wa-sandbox")
        await sandbox.ready()
        connector = worker(
            stack,
            log_dir,
            role="whatsapp",
            name="connector-worker",
            root=cfg.root,
            extra_env={"WHATSAPP_RATE_PER_SECOND": str(int(cfg.cap)), **sandbox.worker_env},
        )
        # Warm up: group join and the HTTP pool, below the cap.
        await phase(broker, stack, sandbox, [connector], 1, 200, "warmup", 120)
        phases = []
        for numbers in cfg.numbers:
            count = int(cfg.cap * numbers * cfg.seconds)
            phases.append(
                await phase(
                    broker, stack, sandbox, [connector], numbers, count, f"n{numbers}", cfg.timeout
                )
            )
        profile = None
        if cfg.profiler == "py-spy":
            # A phase of its own: the sampler slows the worker, so it is never a measured one.
            numbers = max(cfg.numbers)
            out = log_dir / "connector-py-spy.txt"
            spy = start_profiler(connector.pid, out)
            try:
                await phase(
                    broker,
                    stack,
                    sandbox,
                    [connector],
                    numbers,
                    int(cfg.cap * numbers * cfg.seconds),
                    f"prof{numbers}",
                    cfg.timeout,
                )
            finally:
                stop_profiler(spy)
            profile = str(out)
        if cfg.scale_out_workers > 1:
            connector.stop()
            connector = None
            phases.append(await scale_out(broker, stack, sandbox, cfg, log_dir, workers))
        return {
            "bare_http": baseline,
            "phases": phases,
            "cap_per_number": cfg.cap,
            "profile": profile,
        }
    finally:
        for process in [connector, *workers]:
            if process is not None:
                process.stop()
        if sandbox is not None:
            sandbox.stop()
        await stack.delete_topics()
