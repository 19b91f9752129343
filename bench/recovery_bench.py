"""Recovery: how long a worker killed with kill -9 takes to process a new event again,
with N profiles in its table, for each store.

N profiles enter a journey that waits a day (written to the topic first, one worker
loads them). The worker is killed (SIGKILL: no flush, no commit) and a new one started on
the same DATA_DIR, as a pod of the StatefulSet comes back on its volume claim. The figure
is the time from the new worker's start until it has processed a new event. With
`memory://` the new worker replays the whole changelog; with `rocksdb://` it finds the
table on disk and reads only what was written after its last flush.

    python -m bench.recovery_bench --profiles 20000        # both stores, JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    BenchError,
    BenchStack,
    Broker,
    OffsetWatch,
    Process,
    preload,
    worker,
)
from bench.common import deploy as deploy_journeys
from bench.engine_bench import journey
from bench.timers_bench import _probe_seconds, _wait_quiet
from tests.support.builders import event_record, now_iso

STORES = ("memory://", "rocksdb://")


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    profiles: int = 100_000
    stores: tuple[str, ...] = STORES
    timeout: float = 1800.0
    root: Path = ROOT


async def restart_after_kill(
    broker: Broker, cfg: RecoveryConfig, store: str, log_dir: Path
) -> dict[str, Any]:
    """Load `cfg.profiles` with `store`, kill -9 the worker, time its successor."""
    tag = store.split(":")[0]
    stack = BenchStack(broker.bootstrap, f"recovery-{tag}", extra={"STORE": store})
    settings = stack.settings
    # Fresh per run: a RocksDB left by another run refuses a changelog it does not match.
    data_dir = {"DATA_DIR": str(log_dir / f"recovery-{tag}-{stack.unique}-data")}
    processes: list[Process] = []
    try:
        await deploy_journeys(stack, journey("1d"), root=cfg.root)
        stamp = now_iso()
        await preload(
            broker.bootstrap,
            settings.topic_profile_events,
            (event_record(i, stack.unique, occurred_at=stamp) for i in range(cfg.profiles)),
            settings.topic_partitions,
        )
        started = time.monotonic()
        first = worker(stack, log_dir, name=f"recovery-{tag}-1", extra_env=data_dir, root=cfg.root)
        processes.append(first)
        async with OffsetWatch(broker.bootstrap, settings.topic_journey_steps) as steps:
            got, _ = await steps.wait_for(cfg.profiles, timeout=cfg.timeout, watch=[first])
        if got < cfg.profiles:
            raise BenchError(f"{got} of {cfg.profiles} profiles entered in time")
        load_seconds = time.monotonic() - started
        await _wait_quiet(first)
        first.kill()
        processes.remove(first)
        started = time.monotonic()
        second = worker(stack, log_dir, name=f"recovery-{tag}-2", extra_env=data_dir, root=cfg.root)
        processes.append(second)
        seconds = await _probe_seconds(broker, settings, second, started, f"{stack.unique}-probe")
        return {
            "store": store,
            "profiles": cfg.profiles,
            "load_seconds": round(load_seconds, 1),
            "restart_after_kill_to_first_event_seconds": round(seconds, 2),
            "rss_restarted_mib": round(second.rss_bytes() / 2**20, 1),
        }
    finally:
        for process in processes:
            process.kill()
        await stack.delete_topics()


async def run(broker: Broker, cfg: RecoveryConfig, log_dir: Path) -> dict[str, Any]:
    return {
        store.split(":")[0]: await restart_after_kill(broker, cfg, store, log_dir)
        for store in cfg.stores
    }


def section(r: dict[str, Any] | None) -> list[str]:
    """The BENCHMARKS.md section of this phase."""
    if r is None:
        return []
    if "error" in r:
        return ["## 3b. Recovery after kill -9", "", f"Error: {r['error']}", ""]
    rows = [
        f"| `{m['store']}` | {m['profiles']:,} | "
        f"{m['restart_after_kill_to_first_event_seconds']:.1f} | {m['rss_restarted_mib']:.0f} |"
        for m in r.values()
    ]
    return [
        "## 3b. Recovery after kill -9",
        "",
        "Profiles each waiting in a journey (`wait: 1d`); the worker is killed with SIGKILL "
        "and a new one started on the same DATA_DIR (a StatefulSet pod on its volume "
        "claim). Seconds from the new worker's start until it has processed a new event; "
        "this includes the dead member's session timeout (`KAFKA_SESSION_TIMEOUT_SECONDS`).",
        "",
        "| store | profiles | seconds to first event | RSS after (MiB) |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--store", action="append", choices=STORES, help="default: both")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "build" / "bench-recovery")
    args = parser.parse_args()
    cfg = RecoveryConfig(profiles=args.profiles, stores=tuple(args.store or STORES))
    broker = Broker.start()
    try:
        print(json.dumps(asyncio.run(run(broker, cfg, args.log_dir)), indent=2))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
