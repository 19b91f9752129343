"""Latency: event to SendRequest, and event to the sandbox receiving the call.

A journey without a wait (entry condition, condition, WhatsApp step, end) runs on an
engine worker; a connector worker (its own process and consumer group) sends to the
sandbox, capped at 1,000 calls/s on one number. First the journey's own maximum is
measured (events written first, engine alone); then a paced producer publishes at
1,000 events/s and at 80% of that maximum. The share of events that enter the journey
(and so send) keeps sends at 80% of the connector's cap, so the sandbox leg measures
latency, not a queue behind the cap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    PHONE_NUMBER_IDS,
    ROOT,
    BenchError,
    BenchStack,
    Broker,
    OffsetWatch,
    Process,
    Sandbox,
    callback_profile,
    commit_to_end,
    deploy,
    edge_timestamps,
    machine_busy_seconds,
    paced_produce,
    percentile,
    preload,
    read_topic,
    received_at,
    worker,
)
from tests.support.builders import event_record, now_iso
from tests.support.journeys import cart_recovery

# examples/journeys/cart-recovery.yaml without its wait: an event is sent on at once.
JOURNEY = cart_recovery("bench-now", wait=None)

CAP = 1000.0  # the connector's per-number cap (Meta's highest tier)


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    max_events: int = 20_000  # events for the journey's maximum
    seconds: float = 15.0  # per paced phase
    rates: tuple[float, ...] = (1000.0,)  # plus 80% of the measured maximum
    drain_timeout: float = 120.0
    root: Path = ROOT  # the source tree the workers run from


def _entering(i: int, share: float) -> bool:
    return (i % 1000) < share * 1000


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else float("nan"),
    }


async def measure_max(
    broker: Broker, stack: BenchStack, count: int, engine: Process
) -> dict[str, Any]:
    """The journey's events/s on the engine alone: all events written first."""
    settings = stack.settings
    run_id = f"{stack.unique}-max"
    stamp = now_iso()
    await preload(
        broker.bootstrap,
        settings.topic_profile_events,
        (event_record(i, run_id, occurred_at=stamp) for i in range(count)),
        settings.topic_partitions,
    )
    async with OffsetWatch(broker.bootstrap, settings.topic_whatsapp_requests) as sends:
        got, _ = await sends.wait_for(count, timeout=600, watch=[engine])
    if got < count:
        raise BenchError(f"engine produced {got} of {count} send requests in time")
    first_step = await edge_timestamps(broker.bootstrap, settings.topic_journey_steps)
    last_send = await edge_timestamps(broker.bootstrap, settings.topic_whatsapp_requests)
    assert first_step is not None and last_send is not None
    seconds = (last_send[1] - first_step[0]) / 1000
    return {"events": count, "seconds": seconds, "per_second": count / seconds}


async def paced_phase(
    broker: Broker,
    stack: BenchStack,
    sandbox: Sandbox,
    rate: float,
    cfg: LatencyConfig,
    watch: list[Process],
    label: str,
) -> dict[str, Any]:
    settings = stack.settings
    run_id = f"{stack.unique}-{label}"
    share = min(1.0, 0.8 * CAP / rate)
    prefix = f"p-{run_id}-".encode()

    def make(i: int) -> tuple[bytes, bytes]:
        total = 50 if _entering(i, share) else 10  # the entry condition is cart_total > 20
        return event_record(
            i, run_id, occurred_at=now_iso(), data={"cart_total": total, "items": 1}
        )

    engine, connector = watch[0], watch[1]
    async with OffsetWatch(broker.bootstrap, settings.topic_whatsapp_requests) as sends:
        before = await sends.total()
        cpu_engine, cpu_connector = engine.cpu_seconds(), connector.cpu_seconds()
        busy_before = machine_busy_seconds()
        sent, took = await paced_produce(
            broker.bootstrap, settings.topic_profile_events, make, rate=rate, seconds=cfg.seconds
        )
        engine_cpu = (engine.cpu_seconds() - cpu_engine) / took if took else 0.0
        connector_cpu = (connector.cpu_seconds() - cpu_connector) / took if took else 0.0
        # Cores the whole machine kept busy meanwhile (workers, sandbox, broker, producer).
        machine_busy = (machine_busy_seconds() - busy_before) / took if took else 0.0
        expected = sum(1 for i in range(sent) if _entering(i, share))
        got, drained = await sends.wait_for(
            before + expected, timeout=cfg.drain_timeout, watch=watch
        )
    # The sandbox leg: wait until the connector has sent them all (bounded).
    deadline = time.monotonic() + cfg.drain_timeout
    while time.monotonic() < deadline:
        stats = await sandbox.get("/sandbox/stats")
        if int(stats["accepted"]) >= expected:
            break
        for process in watch:
            process.check()
        await asyncio.sleep(1.0)
    messages = [
        m
        for m in await sandbox.get("/sandbox/messages")
        if (callback_profile(m) or "").startswith(prefix.decode())
    ]

    def ours(key: bytes | None, _: bytes | None) -> bool:
        return key is not None and key.startswith(prefix)

    events = await read_topic(broker.bootstrap, settings.topic_profile_events, keep=ours)
    event_ts = {r.key: r.timestamp_ms for r in events}
    requests = await read_topic(broker.bootstrap, settings.topic_whatsapp_requests, keep=ours)
    to_send = [
        float(r.timestamp_ms - event_ts[r.key])
        for r in requests
        if r.key is not None and r.key in event_ts
    ]
    # Per second of the phase (by event time): median and max event → SendRequest, to tell
    # a stall that never drains from a slow start or a burst.
    start_ms = min(event_ts.values(), default=0)
    by_second: dict[int, list[float]] = {}
    for r in requests:
        if r.key is not None and r.key in event_ts:
            second = int((event_ts[r.key] - start_ms) // 1000)
            by_second.setdefault(second, []).append(float(r.timestamp_ms - event_ts[r.key]))
    timeline = [
        {"second": sec, "p50_ms": percentile(vals, 50), "max_ms": max(vals)}
        for sec, vals in sorted(by_second.items())
    ]
    to_sandbox = [
        received_at(m) * 1000 - event_ts[key.encode()]
        for m in messages
        if (key := callback_profile(m)) is not None and key.encode() in event_ts
    ]
    await sandbox.reset()
    return {
        "rate": rate,
        "offered_per_second": sent / took if took else 0.0,
        "events": sent,
        "entering_share": share,
        "send_requests": len(to_send),
        "send_requests_expected": expected,
        "drain_seconds": drained,
        "event_to_send_request": summary(to_send),
        "event_to_sandbox": summary(to_sandbox),
        "event_to_send_request_by_second": timeline,
        "sandbox_received": len(to_sandbox),
        "complete": got >= before + expected and len(to_sandbox) >= expected,
        "engine_cpu_share": engine_cpu,
        "connector_cpu_share": connector_cpu,
        "machine_busy_cores": machine_busy,
    }


async def run(broker: Broker, cfg: LatencyConfig, log_dir: Path) -> dict[str, Any]:
    stack = BenchStack(broker.bootstrap, "latency")
    settings = stack.settings
    sandbox: Sandbox | None = None
    processes: list[Process] = []
    try:
        await deploy(stack, JOURNEY, root=cfg.root)
        engine = worker(stack, log_dir, name="latency-engine", root=cfg.root)
        processes.append(engine)
        maximum = await measure_max(broker, stack, cfg.max_events, engine)
        sandbox = Sandbox(log_dir, rate=CAP, numbers=PHONE_NUMBER_IDS[:1], name="latency-sandbox")
        await sandbox.ready()
        connector_group = stack.app_id + "-wa"
        # The connector starts after the maximum's backlog: it only sends the paced events.
        await commit_to_end(broker.bootstrap, connector_group, settings.topic_whatsapp_requests)
        connector = worker(
            stack,
            log_dir,
            role="whatsapp",
            name="latency-connector",
            root=cfg.root,
            extra_env={
                "APP_ID": connector_group,
                "WHATSAPP_RATE_PER_SECOND": str(int(CAP)),
                **sandbox.worker_env,
            },
        )
        processes.append(connector)
        watch = [engine, connector, sandbox.process]
        # Warm up every leg (group joins, HTTP connections) with a short paced run.
        await paced_phase(broker, stack, sandbox, 100.0, cfg_warmup(cfg), watch, "warmup")
        phases = []
        rates = sorted({*cfg.rates, round(0.8 * maximum["per_second"])})
        for n, rate in enumerate(rates):
            phases.append(await paced_phase(broker, stack, sandbox, rate, cfg, watch, f"r{n}"))
        return {"journey_max": maximum, "phases": phases, "cap": CAP}
    finally:
        for process in reversed(processes):
            process.stop()
        if sandbox is not None:
            sandbox.stop()
        await stack.delete_topics()


def cfg_warmup(cfg: LatencyConfig) -> LatencyConfig:
    return LatencyConfig(
        max_events=cfg.max_events,
        seconds=2.0,
        rates=cfg.rates,
        drain_timeout=60.0,
        root=cfg.root,
    )
