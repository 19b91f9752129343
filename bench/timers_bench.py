"""Timers: state size and restore time with many waiting instances, and firing lag.

Part 1: N profiles enter a journey that waits a day (written to the topic first, one
worker loads them). Bytes per instance are measured in the table (the stored value of
each profile, read back from the changelog topic), on the broker's disk (the changelog
topic's log segments), and in the worker's memory (RSS growth). Then the worker is
stopped and a new one started: restore time is from its start until it has processed a
new event, beside the same figure for the first worker with an empty table.

Part 2: instances that wait 10 s, entered by a paced producer, so their timers fall due
at the same pace; firing lag is the time from `due` (carried by the timer tick) to the
wait step's record, beside the floor of the timer scan interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    ROOT,
    BenchError,
    BenchStack,
    Broker,
    OffsetWatch,
    Process,
    paced_produce,
    percentile,
    preload,
    read_topic,
    worker,
)
from bench.common import deploy as deploy_journeys
from bench.engine_bench import journey
from schemas.settings import Settings
from tests.support.builders import event_record, now_iso


@dataclass(frozen=True, slots=True)
class TimersConfig:
    instances: int = 100_000
    lag_instances: int = 20_000
    lag_rate: float = 2000.0
    lag_wait: str = "10s"
    value_sample: int = 50_000  # changelog values read back for the average size
    timeout: float = 1800.0
    root: Path = ROOT  # the source tree the workers run from


async def _probe_seconds(
    broker: Broker, settings: Settings, process: Process, started: float, run_id: str
) -> float:
    """Write one new event now; seconds from `started` until its `entered` step appears."""
    async with OffsetWatch(broker.bootstrap, settings.topic_journey_steps) as steps:
        before = await steps.total()
        await preload(
            broker.bootstrap,
            settings.topic_profile_events,
            [event_record(0, run_id, occurred_at=now_iso())],
            settings.topic_partitions,
        )
        got, _ = await steps.wait_for(before + 1, timeout=600, watch=[process], interval=0.1)
    if got < before + 1:
        raise BenchError("the restarted worker did not process a new event in time")
    return time.monotonic() - started


async def state_size(broker: Broker, cfg: TimersConfig, log_dir: Path) -> dict[str, Any]:
    stack = BenchStack(broker.bootstrap, "timers")
    settings = stack.settings
    processes: list[Process] = []
    try:
        await deploy_journeys(stack, journey("1d"), root=cfg.root)
        run_id = stack.unique
        stamp = now_iso()
        await preload(
            broker.bootstrap,
            settings.topic_profile_events,
            (event_record(i, run_id, occurred_at=stamp) for i in range(cfg.instances)),
            settings.topic_partitions,
        )
        started = time.monotonic()
        first = worker(stack, log_dir, name="timers-worker-1", root=cfg.root)
        processes.append(first)
        async with OffsetWatch(broker.bootstrap, settings.topic_journey_steps) as steps:
            await steps.wait_for(1, timeout=120, watch=[first], interval=0.1)
            empty_start = time.monotonic() - started
            rss_empty = first.rss_bytes()
            load_started = time.monotonic()
            got, _ = await steps.wait_for(cfg.instances, timeout=cfg.timeout, watch=[first])
            load_seconds = time.monotonic() - load_started
        if got < cfg.instances:
            raise BenchError(f"{got} of {cfg.instances} instances entered in time")
        await _wait_quiet(first)
        rss_loaded = first.rss_bytes()
        first.stop()
        processes.remove(first)

        changelog = stack.changelog_topic
        disk = broker.topic_disk_bytes(changelog)
        values = await read_topic(broker.bootstrap, changelog, limit=cfg.value_sample)
        sizes = [len(r.value) for r in values if r.value]
        keys = [len(r.key) for r in values if r.key]
        sample = orjson.loads(values[0].value) if values and values[0].value else None

        started = time.monotonic()
        # The same data dir: a restart on the same host (a RocksDB store keeps its files).
        second = worker(
            stack,
            log_dir,
            name="timers-worker-2",
            root=cfg.root,
            extra_env={"DATA_DIR": str(log_dir / "timers-worker-1-data")},
        )
        processes.append(second)
        restore = await _probe_seconds(broker, settings, second, started, f"{run_id}-probe")
        rss_restored = second.rss_bytes()
        return {
            "instances": cfg.instances,
            "load_seconds": load_seconds,
            "load_per_second": cfg.instances / load_seconds if load_seconds else 0.0,
            "value_bytes_mean": sum(sizes) / len(sizes) if sizes else None,
            "value_bytes_p99": percentile([float(s) for s in sizes], 99),
            "key_bytes_mean": sum(keys) / len(keys) if keys else None,
            "values_sampled": len(sizes),
            "changelog_disk_bytes": disk,
            "changelog_bytes_per_instance": disk / cfg.instances if disk else None,
            "rss_empty_mib": rss_empty / 2**20,
            "rss_loaded_mib": rss_loaded / 2**20,
            "rss_bytes_per_instance": (rss_loaded - rss_empty) / cfg.instances,
            "rss_restored_mib": rss_restored / 2**20,
            "start_empty_seconds": empty_start,
            "restore_seconds": restore,
            "sample_value": sample,
            "store": settings.store,
        }
    finally:
        for process in processes:
            process.stop()
        await stack.delete_topics()


async def _wait_quiet(process: Process, seconds: float = 2.0) -> None:
    """Let the worker finish its last batch and table writes (CPU falls to near idle)."""
    import asyncio

    for _ in range(30):
        before = process.cpu_seconds()
        await asyncio.sleep(seconds)
        if process.cpu_seconds() - before < 0.2 * seconds:
            return


async def firing_lag(broker: Broker, cfg: TimersConfig, log_dir: Path) -> dict[str, Any]:
    stack = BenchStack(broker.bootstrap, "lag")
    settings = stack.settings
    process: Process | None = None
    try:
        await deploy_journeys(stack, journey(cfg.lag_wait), root=cfg.root)
        process = worker(stack, log_dir, name="lag-worker", root=cfg.root)
        run_id = stack.unique
        async with OffsetWatch(broker.bootstrap, settings.topic_whatsapp_requests) as sends:
            # Warm up: one instance through the whole journey (group join, definitions).
            await preload(
                broker.bootstrap,
                settings.topic_profile_events,
                [event_record(0, f"warmup{run_id}", occurred_at=now_iso())],
                settings.topic_partitions,
            )
            await sends.wait_for(1, timeout=180, watch=[process], interval=0.2)
            sent, took = await paced_produce(
                broker.bootstrap,
                settings.topic_profile_events,
                lambda i: event_record(i, run_id, occurred_at=now_iso()),
                rate=cfg.lag_rate,
                seconds=cfg.lag_instances / cfg.lag_rate,
            )
            got, _ = await sends.wait_for(1 + sent, timeout=cfg.timeout, watch=[process])
        if got < 1 + sent:
            raise BenchError(f"{got - 1} of {sent} timers fired in time")
        from engine.worker.ticks import DUE_TICK_PREFIX

        prefix = f"p-{run_id}-".encode()

        def ours(key: bytes | None, _: bytes | None) -> bool:
            return key is not None and key.startswith(prefix)

        def tick(key: bytes | None, value: bytes | None) -> bool:
            return ours(key, value) or (value is not None and value.startswith(DUE_TICK_PREFIX))

        # A tick names one profile (key; `due` in the value; trees before the due ticks) or
        # a partition's due profiles (`{"due": [[profile_id, due], ...]}`).
        due: dict[bytes, float] = {}
        for record in await read_topic(broker.bootstrap, settings.topic_timers, keep=tick):
            if not record.value:
                continue
            body = orjson.loads(record.value)
            if isinstance(body.get("due"), list):
                for profile_id, at in body["due"]:
                    if profile_id.startswith(prefix.decode()):
                        due.setdefault(profile_id.encode(), float(at))
            elif record.key is not None:
                due.setdefault(record.key, float(body["due"]))

        def wait_step(key: bytes | None, value: bytes | None) -> bool:
            # The wait activity's own step (the `entered` step names the wait too).
            return (
                ours(key, value)
                and value is not None
                and b'"kind":"activity"' in value
                and b'"activity_id":"wait"' in value
            )

        fired = await read_topic(broker.bootstrap, settings.topic_journey_steps, keep=wait_step)
        lags = [
            r.timestamp_ms / 1000 - due[r.key] for r in fired if r.key is not None and r.key in due
        ]
        return {
            "instances": sent,
            "offered_per_second": sent / took if took else 0.0,
            "wait": cfg.lag_wait,
            "scan_interval_seconds": settings.timer_scan_interval_seconds,
            "fired": len(lags),
            "lag_p50_seconds": percentile(lags, 50),
            "lag_p99_seconds": percentile(lags, 99),
            "lag_max_seconds": max(lags) if lags else float("nan"),
        }
    finally:
        if process is not None:
            process.stop()
        await stack.delete_topics()


async def run(broker: Broker, cfg: TimersConfig, log_dir: Path) -> dict[str, Any]:
    return {
        "state": await state_size(broker, cfg, log_dir),
        "lag": await firing_lag(broker, cfg, log_dir),
    }
