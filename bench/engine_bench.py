"""Engine throughput: profile events per second through one worker, beside a bare client.

The events are written to the topic first; then a bare aiokafka loop (consume, orjson
parse, produce one record, commit) and the engine worker each read all of them. The
engine runs a realistic journey to its end: entry condition, a 1 s wait (a durable timer
and its tick), a condition on the profile, a WhatsApp step (a SendRequest), end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
    deploy,
    edge_timestamps,
    json_result,
    machine_busy_seconds,
    median,
    preload,
    read_topic,
    worker,
)
from tests.support.builders import event_record, now_iso
from tests.support.journeys import cart_recovery


def journey(wait: str) -> str:
    """examples/journeys/cart-recovery.yaml with a `wait` long wait, ending at the send."""
    return cart_recovery("bench-cart", wait=wait)


# The bench journey without its wait: entry condition, condition, WhatsApp step, end.
NO_WAIT = cart_recovery("bench-nowait", wait=None)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    profiles: int = 100_000
    wait: str = "1s"
    runs: int = 1
    timeout: float = 900.0
    # Records the journey writes per event (five steps, a SendRequest, a phone-index record,
    # two changelog records): a second baseline writes that many per event. 1: none.
    fanout: int = 9
    profiler: str | None = None  # "py-spy" to record the worker while it runs
    root: Path = ROOT  # the source tree the worker runs from
    compare_root: Path | None = None  # another source tree, run beside this one
    # Then, as often as `runs`: the journey without its wait (entry condition, condition,
    # WhatsApp step), and the bench journey on this many workers in one group (0 or 1:
    # neither phase is run, respectively).
    no_wait: bool = True
    scale_out_workers: int = 2


# Profiles per run of bench/core_bench.py: ~10 s, enough for a steady figure.
CORE_PROFILES = 20_000


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of `key` over runs that have it; None without any (a loop not run)."""
    values = [run[key] for run in runs if key in run]
    return median(values) if values else None


async def bare_client(
    broker: Broker,
    source: str,
    target: str,
    group: str,
    count: int,
    timeout: float,
    fanout: int = 1,
    batched: bool = False,
) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "bench.bare_client",
        "--bootstrap",
        broker.bootstrap,
        "--source",
        source,
        "--target",
        target,
        "--group",
        group,
        "--count",
        str(count),
        "--timeout",
        str(timeout),
        "--fanout",
        str(fanout),
        *(["--batched"] if batched else []),
    ]
    result = await json_result(args, timeout + 30, "the bare client")
    if result["records"] < count:
        raise BenchError(f"bare client read {result['records']} of {count} records")
    return result


async def core_path(root: Path, profiles: int, timeout: float) -> dict[str, Any]:
    """`bench/core_bench.py` on the tree at `root`: µs per profile of the pure core (`total`)
    and of the worker's record path without Kafka or faust (`runtime_total`)."""
    result = await json_result(
        [sys.executable, "-m", "bench.core_bench", "--profiles", str(profiles)],
        timeout,
        "bench.core_bench",
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if "runtime_total" not in result:
        raise BenchError(f"bench.core_bench measured no record path: {result}")
    return result


def ceiling(record_path_us: float, io_cpu_ms: float) -> float:
    """Events/s one process can make at most if each event costs the record path's CPU
    plus the cheapest I/O's (the batched loop's), and nothing else."""
    return 1e6 / (record_path_us + io_cpu_ms * 1000)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    args = [str(spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
    args += ["--native", "--output", str(out)]
    return subprocess.Popen(  # noqa: S603 (py-spy from the virtualenv)
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def engine_run(
    broker: Broker,
    base: BenchStack,
    cfg: EngineConfig,
    log_dir: Path,
    run_no: int,
    profile_out: Path | None,
    root: Path = ROOT,
    label: str = "",
    *,
    text: str | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """`workers` workers in one group over the preloaded events, to the last SendRequest,
    running the journey `text` (default: the bench journey with `cfg.wait`).

    CPU is the workers' together; `machine_busy_cores` is what the whole machine kept busy
    meanwhile (workers, broker, anything else), so a rate is read against the cores left."""
    stack = BenchStack(
        broker.bootstrap,
        f"engine{label}-r{run_no}",
        extra={"TOPIC_PROFILE_EVENTS": base.env["TOPIC_PROFILE_EVENTS"]},
    )
    settings = stack.settings
    processes: list[Process] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        await deploy(stack, text if text is not None else journey(cfg.wait), root=root)
        started = time.monotonic()
        for n in range(workers):
            name = f"engine{label}-worker{n or ''}-r{run_no}"
            processes.append(worker(stack, log_dir, name=name, root=root))
        process = processes[0]
        async with (
            OffsetWatch(broker.bootstrap, settings.topic_journey_steps) as steps,
            OffsetWatch(broker.bootstrap, settings.topic_whatsapp_requests) as sends,
        ):
            # Wait for the first output (startup: group join, table recovery, definitions).
            got, _ = await steps.wait_for(1, timeout=180, watch=processes, interval=0.2)
            if got < 1:
                raise BenchError(f"the worker produced nothing:\n{process.log_tail(3000)}")
            first_output = time.monotonic() - started
            cpu_at_start = [p.cpu_seconds() for p in processes]
            busy_at_start, wall_at_start = machine_busy_seconds(), time.monotonic()
            if profile_out is not None:
                spy = start_profiler(process.pid, profile_out)
            count, _ = await sends.wait_for(
                cfg.profiles, timeout=cfg.timeout, watch=processes, interval=0.5
            )
        wall = time.monotonic() - wall_at_start
        busy = machine_busy_seconds() - busy_at_start
        worker_cpu = [p.cpu_seconds() - c for p, c in zip(processes, cpu_at_start, strict=True)]
        cpu = sum(worker_cpu)
        rss = sum(p.rss_bytes() for p in processes)
        if spy is not None:
            stop_profiler(spy)
            spy = None
        if count < cfg.profiles:
            raise BenchError(f"engine produced {count} of {cfg.profiles} send requests in time")
        for p in processes:
            p.stop()
        first_step = await edge_timestamps(broker.bootstrap, settings.topic_journey_steps)
        last_send = await edge_timestamps(broker.bootstrap, settings.topic_whatsapp_requests)
        assert first_step is not None and last_send is not None
        seconds = (last_send[1] - first_step[0]) / 1000
        entered = await read_topic(
            broker.bootstrap,
            settings.topic_journey_steps,
            keep=lambda _, v: v is not None and b'"kind":"entered"' in v,
        )
        entry_seconds = (max(r.timestamp_ms for r in entered) - first_step[0]) / 1000
        return {
            "events": cfg.profiles,
            "seconds": seconds,
            "per_second": cfg.profiles / seconds,
            "entry_seconds": entry_seconds,
            "entry_per_second": len(entered) / entry_seconds if entry_seconds else 0.0,
            "startup_seconds": first_output,
            "cpu_seconds": cpu,
            "cpu_per_event_ms": cpu / cfg.profiles * 1000,
            "rss_mib": rss / 2**20,
            "workers": workers,
            "worker_cpu_seconds": worker_cpu,
            "machine_busy_cores": busy / wall if wall > 0 else float("nan"),
        }
    finally:
        if spy is not None:
            stop_profiler(spy)
        for p in processes:
            p.stop()
        await stack.delete_topics()


async def run(broker: Broker, cfg: EngineConfig, log_dir: Path) -> dict[str, Any]:
    base = BenchStack(broker.bootstrap, "engine")
    settings = base.settings
    try:
        from engine.streaming.topics import ensure_topics

        await ensure_topics(settings)
        stamp = now_iso()
        run_id = base.unique
        t0 = time.monotonic()
        await preload(
            broker.bootstrap,
            settings.topic_profile_events,
            (event_record(i, run_id, occurred_at=stamp) for i in range(cfg.profiles)),
            settings.topic_partitions,
        )
        preload_seconds = time.monotonic() - t0
        baselines: list[dict[str, Any]] = []
        fanned: list[dict[str, Any]] = []
        batched: list[dict[str, Any]] = []
        engines: list[dict[str, Any]] = []
        compared: list[dict[str, Any]] = []
        for run_no in range(cfg.runs):
            # Baseline and engine alternate, so both see the same machine load.
            baselines.append(
                await bare_client(
                    broker,
                    settings.topic_profile_events,
                    f"bare-out-{base.suffix}-{run_no}",
                    f"bare-{base.suffix}-{run_no}",
                    cfg.profiles,
                    cfg.timeout,
                )
            )
            # The two trees take turns going first (with --runs 2 or more): the worker that
            # runs right after the baseline is slower, whichever tree it is.
            other = cfg.compare_root
            if other is not None and run_no % 2 == 1:
                compared.append(
                    await engine_run(broker, base, cfg, log_dir, run_no, None, other, "-cmp")
                )
                other = None
            engines.append(
                await engine_run(broker, base, cfg, log_dir, run_no, None, root=cfg.root)
            )
            if other is not None:
                compared.append(
                    await engine_run(broker, base, cfg, log_dir, run_no, None, other, "-cmp")
                )
        no_wait = [
            await engine_run(
                broker, base, cfg, log_dir, run_no, None, cfg.root, "-nowait", text=NO_WAIT
            )
            for run_no in range(cfg.runs if cfg.no_wait else 0)
        ]
        # One worker's CPU per event and rate are the engine runs' above (same journey).
        scaled = [
            await engine_run(
                broker,
                base,
                cfg,
                log_dir,
                run_no,
                None,
                cfg.root,
                "-scale",
                workers=cfg.scale_out_workers,
            )
            for run_no in range(cfg.runs if cfg.scale_out_workers > 1 else 0)
        ]
        for run_no in range(cfg.runs if cfg.fanout > 1 else 0):
            # The same loop writing as many records per event as the journey does: the I/O
            # of this design through the plain client, with none of its work. After the
            # engine runs, so the broker's work on its many records slows none of them.
            fanned.append(
                await bare_client(
                    broker,
                    settings.topic_profile_events,
                    f"bare-fan-{base.suffix}-{run_no}",
                    f"bare-fan-{base.suffix}-{run_no}",
                    cfg.profiles,
                    cfg.timeout,
                    cfg.fanout,
                )
            )
            # And writing them as the engine does, in whole batches per partition: the
            # cheapest I/O this design can have, so what the engine spends beyond it is
            # its own work.
            batched.append(
                await bare_client(
                    broker,
                    settings.topic_profile_events,
                    f"bare-fanb-{base.suffix}-{run_no}",
                    f"bare-fanb-{base.suffix}-{run_no}",
                    cfg.profiles,
                    cfg.timeout,
                    cfg.fanout,
                    batched=True,
                )
            )
        # The worker's record path alone, on an idle broker: with the batched loop's I/O
        # (so only where that loop ran), the most this design can make here however cheap
        # faust, the flush and the producer.
        core = [
            await core_path(cfg.root, min(CORE_PROFILES, cfg.profiles), cfg.timeout)
            for _ in range(cfg.runs if cfg.fanout > 1 else 0)
        ]
        profiled = None
        if cfg.profiler == "py-spy":
            # A run of its own: the sampler slows the worker, so it is never a measured run.
            profiled = await engine_run(
                broker,
                base,
                cfg,
                log_dir,
                cfg.runs,
                log_dir / "engine-py-spy.txt",
                root=cfg.root,
                label="-prof",
            )
        baseline_rate = median([b["per_second"] for b in baselines])
        engine_rate = median([e["per_second"] for e in engines])
        ratios = [
            e["per_second"] / b["per_second"] for e, b in zip(engines, baselines, strict=True)
        ]
        return {
            "profiles": cfg.profiles,
            "wait": cfg.wait,
            "runs": cfg.runs,
            "preload_seconds": preload_seconds,
            "baseline": baselines,
            "engine": engines,
            "baseline_per_second": baseline_rate,
            "engine_per_second": engine_rate,
            "entry_per_second": median([e["entry_per_second"] for e in engines]),
            "ratio": median(ratios),
            "fanout": cfg.fanout,
            "baseline_fanout": fanned,
            "baseline_fanout_per_second": median_of(fanned, "per_second"),
            "baseline_batched": batched,
            "baseline_batched_per_second": median_of(batched, "per_second"),
            "cpu_per_event_ms": median([e["cpu_per_event_ms"] for e in engines]),
            "core": core,
            "core_pure_us": median_of(core, "total"),
            "core_path_us": median_of(core, "runtime_total"),
            "profile": str(log_dir / "engine-py-spy.txt") if profiled else None,
            "profiled_run": profiled,
            "root": str(cfg.root),
            "compare_root": str(cfg.compare_root) if cfg.compare_root else None,
            "compare": compared,
            "compare_per_second": median_of(compared, "per_second"),
            "compare_entry_per_second": median_of(compared, "entry_per_second"),
            "compare_cpu_per_event_ms": median_of(compared, "cpu_per_event_ms"),
            "engine_busy_cores": median_of(engines, "machine_busy_cores"),
            "no_wait": no_wait,
            "no_wait_per_second": median_of(no_wait, "per_second"),
            "no_wait_cpu_per_event_ms": median_of(no_wait, "cpu_per_event_ms"),
            "scale_out": scaled,
            "scale_out_workers": cfg.scale_out_workers,
            "scale_out_per_second": median_of(scaled, "per_second"),
            "scale_out_cpu_per_event_ms": median_of(scaled, "cpu_per_event_ms"),
            "scale_out_busy_cores": median_of(scaled, "machine_busy_cores"),
        }
    finally:
        await base.delete_topics()
