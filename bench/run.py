"""`make bench`: every benchmark on the real local broker, each beside its baseline.

    python -m bench.run                  # full run, writes docs/BENCHMARKS.md (~15 min)
    python -m bench.run --quick          # a few minutes, writes artifacts/bench/BENCHMARKS-quick.md
    python -m bench.run --only engine --profile
    BENCH_SCALE=0.5 make bench           # every count and duration halved

Benchmarks: engine, latency, timers, recovery (kill -9 and restart per store,
bench/recovery_bench.py), connector, report (bench/report_bench.py, if present),
console (bench/console_bench.py), repartition, ingest, import (bench/ingest_bench.py).
Starts its own broker on free ports unless KAFKA_BOOTSTRAP_SERVERS names one; stops every
process it started. The output is generated whole, except the short hand-kept table of
dated changes that moved a figure (between the `changes` markers), which is carried over.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    connector_bench,
    console_bench,
    cpu_targets,
    engine_bench,
    ingest_bench,
    latency_bench,
    recovery_bench,
    timers_bench,
)
from bench.common import (
    ARTIFACTS,
    ROOT,
    BenchError,
    Broker,
    machine_info,
    other_load,
    stop_all,
)
from bench.profile_report import categories, summarize

NAMES = (
    "engine",
    "latency",
    "timers",
    "recovery",
    "connector",
    "report",
    "console",
    "repartition",
    "ingest",
    "import",
)
DOC = ROOT / "docs" / "BENCHMARKS.md"
KEEP_START = "<!-- changes:start -->"
KEEP_END = "<!-- changes:end -->"
DEFAULT_KEPT = f"""{KEEP_START}
## Changes that moved a figure

Hand-kept, one row per change (`bench/run.py` carries this table over as it is); how
each was measured is in its commit's body.

| date | change | figure: before → after |
| --- | --- | --- |
{KEEP_END}"""


@dataclass
class Plan:
    """Counts and durations of one invocation, from the mode and BENCH_SCALE."""

    quick: bool
    scale: float
    only: tuple[str, ...]
    profile: bool
    root: Path
    compare_root: Path | None
    runs: int
    timers_instances: int | None
    output: Path
    command: str
    render_from: Path | None = None
    source: str | None = None  # the tree measured (`_git_state`), taken as the run starts
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def count(self, full: int, quick: int) -> int:
        return max(1, int((quick if self.quick else full) * self.scale))

    def duration(self, full: float, quick: float) -> float:
        return max(1.0, (quick if self.quick else full) * self.scale)


def parse_args(argv: list[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", default=_env_flag("BENCH_QUICK"))
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        help=f"run only these benchmarks (repeat or comma-separate): {', '.join(NAMES)}",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("BENCH_SCALE", "1")),
        help="multiply every count and duration (default BENCH_SCALE or 1)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="engine runs (baseline + worker each)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on an extra engine run and connector phase"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="run the engine worker from this source tree (default: this checkout)",
    )
    parser.add_argument(
        "--compare-root",
        type=Path,
        default=None,
        help="also run the engine worker from this source tree (before/after in one run)",
    )
    parser.add_argument(
        "--timers-instances", type=int, default=None, help="waiting instances (e.g. 1000000)"
    )
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only write the report again from a run's results.json (no benchmark runs)",
    )
    args = parser.parse_args(argv)
    only_raw = args.only or [os.environ.get("BENCH_ONLY", "")]
    only = tuple(n.strip() for item in only_raw for n in item.split(",") if n.strip())
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(NAMES)}")
    if args.scale <= 0:
        parser.error("--scale must be greater than zero")
    partial = args.quick or bool(only) or args.scale != 1 or args.root.resolve() != ROOT
    if args.render is not None:
        partial = args.output is None and "--quick" in args.render.read_text()[:2000]
    if args.output is not None:
        output = args.output
    elif partial:
        label = "quick" if args.quick else "partial"
        output = ARTIFACTS / f"BENCHMARKS-{label}.md"
    else:
        output = DOC
    command = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "-m", "bench.run", *sys.argv[1:]]
    )
    for name in ("BENCH_SCALE", "BENCH_QUICK", "BENCH_ONLY", "KAFKA_BOOTSTRAP_SERVERS"):
        if os.environ.get(name):
            command = f"{name}={shlex.quote(os.environ[name])} {command}"
    return Plan(
        quick=args.quick,
        scale=args.scale,
        only=only or NAMES,
        profile=args.profile,
        root=args.root.resolve(),
        compare_root=args.compare_root.resolve() if args.compare_root else None,
        runs=args.runs or (2 if args.quick else 1),
        timers_instances=args.timers_instances,
        output=output,
        command=command,
        render_from=args.render,
    )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


# --- running --------------------------------------------------------------------------


async def run_all(plan: Plan, broker: Broker, log_dir: Path) -> None:
    results = plan.results
    engine_rate: float | None = None
    if "engine" in plan.only:
        cfg = engine_bench.EngineConfig(
            profiles=plan.count(100_000, 10_000),
            runs=plan.runs,
            profiler="py-spy" if plan.profile else None,
            root=plan.root,
            compare_root=plan.compare_root,
        )
        await _timed(plan, "engine", engine_bench.run(broker, cfg, log_dir))
        if "engine" in results and "error" not in results["engine"]:
            engine_rate = float(results["engine"]["engine_per_second"])
    if "latency" in plan.only:
        lat = latency_bench.LatencyConfig(
            max_events=plan.count(20_000, 5_000),
            seconds=plan.duration(15, 5),
            root=plan.root,
        )
        await _timed(plan, "latency", latency_bench.run(broker, lat, log_dir))
    if "timers" in plan.only:
        # Timers fall due at half the engine's measured pace: the lag of the timer
        # mechanism, not of a worker that is behind.
        lag_rate = min(2000.0, 0.5 * engine_rate) if engine_rate else 300.0
        lag_instances = min(plan.count(20_000, 3_000), int(lag_rate * plan.duration(30, 10)))
        tim = timers_bench.TimersConfig(
            instances=plan.timers_instances or plan.count(100_000, 10_000),
            lag_instances=max(100, lag_instances),
            lag_rate=lag_rate,
            root=plan.root,
        )
        await _timed(plan, "timers", timers_bench.run(broker, tim, log_dir))
    if "recovery" in plan.only:
        rec = recovery_bench.RecoveryConfig(
            profiles=plan.timers_instances or plan.count(100_000, 10_000), root=plan.root
        )
        await _timed(plan, "recovery", recovery_bench.run(broker, rec, log_dir))
    if "connector" in plan.only:
        con = connector_bench.ConnectorConfig(
            seconds=plan.duration(10, 3),
            bare_calls=plan.count(10_000, 3_000),
            root=plan.root,
            profiler="py-spy" if plan.profile else None,
        )
        await _timed(plan, "connector", connector_bench.run(broker, con, log_dir))
    if "report" in plan.only:
        await _timed(plan, "report", report_bench(plan.count(1_000_000, 100_000)))
    if "console" in plan.only:
        profiles = plan.count(20_000, 5_000)
        await _timed(plan, "console", asyncio.to_thread(console_bench.measure, profiles))
    upstream = ingest_bench.IngestConfig(
        events=plan.count(50_000, 10_000),
        import_rows=plan.count(1_000_000, 100_000),
        runs=plan.runs,
    )
    for name, phase in (
        ("repartition", ingest_bench.run_repartition),
        ("ingest", ingest_bench.run_ingest),
        ("import", ingest_bench.run_import),
    ):
        if name in plan.only:
            await _timed(plan, name, phase(broker, upstream, log_dir))


async def _timed(plan: Plan, name: str, coro: Any) -> None:
    print(f"bench: {name} ...", flush=True)
    started = time.monotonic()
    try:
        plan.results[name] = await coro
    except (BenchError, OSError, TimeoutError, ValueError, RuntimeError) as exc:
        plan.results[name] = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
        print(f"bench: {name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        stop_all()
    plan.seconds[name] = time.monotonic() - started
    print(f"bench: {name} done in {plan.seconds[name]:.0f}s", flush=True)


async def report_bench(n: int) -> dict[str, Any]:
    """bench/report_bench.py's run(n), written by the report's authors, if it exists."""
    try:
        module = importlib.import_module("bench.report_bench")
    except ModuleNotFoundError:
        return {"skipped": "bench/report_bench.py does not exist"}
    runner = getattr(module, "run", None)
    if runner is None:
        return {"skipped": "bench/report_bench.py has no run(n)"}
    if inspect.iscoroutinefunction(runner):
        result = await runner(n)
    else:  # in a thread: it may run an event loop of its own
        result = await asyncio.to_thread(runner, n)
    if inspect.isawaitable(result):
        result = await result
    return dict(result) if isinstance(result, dict) else {"result": result}


# --- the report -----------------------------------------------------------------------


def _cpu_ms(runs: list[dict[str, Any]]) -> str:
    """The median CPU per event of a bare loop's runs; blank for runs from before it."""
    cpu = engine_bench.median_of(runs, "cpu_per_event_ms")
    return f"{cpu:.2f} ms" if cpu is not None else ""


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**FAIL**")


def _git_state() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(  # noqa: S603 (read-only git queries)
            ["git", *args],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    changed = [line for line in dirty if not line[3:].startswith(("bench/", "docs/BENCH"))]
    return f"{commit}" + (f" with {len(changed)} uncommitted changes" if changed else "")


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    engine = results.get("engine", {})
    if "engine_per_second" in engine:
        rate = engine["engine_per_second"]
        most = engine_ceiling(engine)
        bound = f" (at most {most:,.0f} here: see 1.)" if most is not None else ""
        rows.append((">= 5,000 events/s per worker", f"{rate:,.0f} events/s{bound}", rate >= 5000))
        ratio = engine["ratio"]
        rows.append((">= 50% of the bare-client baseline", f"{ratio:.1%}", ratio >= 0.5))
    rows += cpu_targets.engine_rows(engine)
    latency = results.get("latency", {})
    at_1000 = [p for p in latency.get("phases", []) if p["rate"] == 1000]
    if at_1000:
        p99 = at_1000[0]["event_to_send_request"]["p99_ms"]
        rows.append(
            ("p99 event-to-SendRequest < 250 ms at 1,000 events/s", f"{p99:,.0f} ms", p99 < 250)
        )
    connector = results.get("connector", {})
    for phase in connector.get("phases", []):
        per_number = [v for v in phase["per_number_per_second"].values() if not math.isnan(v)]
        share = min(per_number) / 1000 if per_number else 0.0
        limited = phase["rate_limited_130429"]
        ceiling = connector.get("bare_http", {}).get("per_second")
        need = cores_for_caps(phase)
        bare = (
            f" (bare HTTP here: {_num(ceiling)} calls/s, {ceiling / phase['cap_per_second']:.0%} "
            "of the caps"
            + (
                f"; the connector and sandbox alone need {need:.2f} cores at the caps"
                if need is not None
                else ""
            )
            + ")"
            if ceiling and phase["numbers"] > 1
            else ""
        )
        workers = phase.get("workers", 1)
        scaled = f", {workers} connector workers sharing the cap" if workers > 1 else ""
        rows.append(
            (
                f">= 95% of the per-number cap, zero 130429 ({phase['numbers']} number"
                f"{'s' if phase['numbers'] > 1 else ''}{scaled})",
                f"{share:.0%} of 1,000/s per number, {limited} answers 130429{bare}",
                share >= 0.95 and limited == 0,
            )
        )
    rows += cpu_targets.connector_rows(connector)
    state = results.get("timers", {}).get("state", {})
    if state.get("value_bytes_mean") is not None:
        size = state["value_bytes_mean"]
        rows.append(("<= 1 KB per waiting instance in the store", f"{size:,.0f} B", size <= 1024))
    lag = results.get("timers", {}).get("lag", {})
    if "lag_p99_seconds" in lag:
        p99 = lag["lag_p99_seconds"]
        rows.append(("timer lag p99 < 2 s", f"{p99:.2f} s", p99 < 2))
    return rows


def render(plan: Plan, machine: dict[str, Any], broker: Broker, started: datetime) -> str:
    r = plan.results
    total = sum(plan.seconds.values())
    shared = machine.get("shared_with") or []
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run.py` on {started:%Y-%m-%d %H:%M} UTC in {total / 60:.1f} min"
        f" ({'quick mode' if plan.quick else 'full run'}"
        f"{f', scale {plan.scale:g}' if plan.scale != 1 else ''}).",
        "",
        f"Command: `{plan.command}` (`make bench` runs `.venv/bin/python -m bench.run`; "
        "`--quick`, `--only NAME`, `BENCH_SCALE=0.1` make it shorter).",
        "",
        f"Source: commit {plan.source or _git_state()}. Broker: Apache Kafka {broker.version}, one node"
        f" (KRaft) on 127.0.0.1, {'started by the run' if broker.started else broker.bootstrap}"
        ". Topics: 8 partitions, replication 1. Everything on loopback.",
        "",
        "## Machine",
        "",
        "| cores | memory | CPU | OS | Python | faust-streaming | aiokafka | Kafka | orjson | pydantic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {machine['cores']} | {machine['memory_gib']} GiB | {machine['cpu']} | {machine['os']} "
        f"| {machine['python']} | {machine['faust-streaming']} | {machine['aiokafka']} "
        f"| {broker.version} | {machine['orjson']} | {machine['pydantic']} |",
        "",
    ]
    if shared:
        lines += [
            f"**The machine was shared** during this run (running: {', '.join(shared)}; "
            f"load average {machine['loadavg'][0]:.1f} at the start, "
            f"{machine.get('loadavg_end', (0.0,))[0]:.1f} at the end). Every figure is "
            "measured beside its baseline in the same run, so compare ratios rather than "
            "absolute numbers across runs.",
            "",
        ]
    else:
        lines += [
            f"Load average at the start {machine['loadavg'][0]:.1f}, at the end "
            f"{machine.get('loadavg_end', (0.0,))[0]:.1f}; no other broker or test run seen.",
            "",
        ]
    rows = targets(r)
    if rows:
        lines += ["## Targets", "", "| target | measured | result |", "| --- | --- | --- |"]
        lines += [f"| {t} | {m} | {_verdict(ok)} |" for t, m, ok in rows]
        lines.append("")
    lines += _engine_section(r.get("engine"), plan)
    lines += cpu_targets.engine_phases_section(r.get("engine"))
    lines += _latency_section(r.get("latency"))
    lines += _timers_section(r.get("timers"))
    lines += recovery_bench.section(r.get("recovery"))
    lines += _connector_section(r.get("connector"))
    lines += _report_section(r.get("report"))
    lines += console_bench.section(r.get("console"))
    lines += ingest_bench.section(r)
    lines += _profile_section(r.get("engine"))
    lines += _profile_section(
        r.get("connector"),
        what="connector worker",
        run="an extra four-number connector phase, not one of the measured phases",
        code=_CONNECTOR_CODE,
    )
    lines += ["## Durations", "", "| benchmark | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {secs:,.0f} |" for name, secs in plan.seconds.items()]
    lines.append("")
    return "\n".join(lines)


def _error(section: dict[str, Any] | None) -> list[str]:
    if section and "error" in section:
        return [f"Not measured: `{section['error'][:500]}`", ""]
    return []


def _engine_section(e: dict[str, Any] | None, plan: Plan) -> list[str]:
    if e is None:
        return []
    out = [
        "## 1. Engine throughput",
        "",
        "One engine worker (`journeyctl worker --role engine --no-web`, memory store) over "
        "profile events written to the topic beforehand, one per profile. The journey "
        "(`examples/journeys/cart-recovery.yaml`, ending at its send: "
        "`tests/support/journeys.py`) has an entry condition, a 1 s wait, a condition on the "
        "profile and a WhatsApp step, so every event costs the engine one record in (the "
        "event; its timer fires from a tick record shared by the profiles due on its "
        "partition in that scan, tens at this rate) and about nine out (five step events, "
        "a SendRequest, a phone-index record and two changelog records). Timed from the first "
        "output record to the last SendRequest (record timestamps). Baseline, in the same "
        "run on the same topic: `bench/bare_client.py`, an aiokafka loop that consumes, "
        "parses with orjson, produces one record per event (acks=all) and commits. A second "
        "loop, run as often after the engine runs, writes as many records per event as the "
        "journey does (`--fanout`, one `send()` each): the I/O of this design through the "
        "plain client, with none of the engine's work. A third writes the same records in "
        "whole batches per partition, as the engine writes (`--batched`, "
        "`engine/streaming/produce.py`): the cheapest I/O this design has, so the engine's CPU per "
        "event beyond that loop's is the engine's own work.",
        "",
    ]
    out += _error(e)
    if "engine_per_second" not in e:
        return out
    if e.get("root") and Path(e["root"]) != ROOT:
        out += [f"The worker ran from the source tree `{e['root']}`.", ""]
    out += [
        "| | events | events/s | vs baseline | CPU per event |",
        "| --- | --- | --- | --- | --- |",
        f"| bare aiokafka loop (baseline) | {e['profiles']:,} | "
        f"{_num(e['baseline_per_second'])} | 100% | |",
        f"| engine, whole journey (event to SendRequest) | {e['profiles']:,} | "
        f"{_num(e['engine_per_second'])} | {e['ratio']:.1%} | {e['cpu_per_event_ms']:.2f} ms |",
        f"| engine, until every instance entered (ticks interleaved) | {e['profiles']:,} | "
        f"{_num(e['entry_per_second'])} | "
        f"{e['entry_per_second'] / e['baseline_per_second']:.1%} | |",
    ]
    fanned = e.get("baseline_fanout_per_second")
    if fanned:
        out.insert(
            -2,
            f"| bare aiokafka loop, {e['fanout']} records out per event | {e['profiles']:,} | "
            f"{_num(fanned)} | {fanned / e['baseline_per_second']:.1%} | "
            f"{_cpu_ms(e.get('baseline_fanout') or [])} |",
        )
        out.append(
            f"| engine against the {e['fanout']}-record loop | | | "
            f"{e['engine_per_second'] / fanned:.1%} of it | |"
        )
    batched = e.get("baseline_batched_per_second")
    if batched:
        # The batched loop always reports its CPU (both came in together).
        batched_cpu = engine_bench.median_of(e["baseline_batched"], "cpu_per_event_ms") or 0.0
        out.insert(
            -3 if fanned else -2,
            f"| the same, written in whole batches as the engine writes | {e['profiles']:,} | "
            f"{_num(batched)} | {batched / e['baseline_per_second']:.1%} | "
            f"{batched_cpu:.2f} ms |",
        )
        out.append(
            f"| engine against the batched loop | | | {e['engine_per_second'] / batched:.1%} "
            f"of it | {e['cpu_per_event_ms'] - batched_cpu:.2f} ms "
            "more |"
        )
    if e.get("compare_per_second"):
        out.append(
            f"| engine from `{e['compare_root']}` (compared tree) | {e['profiles']:,} | "
            f"{_num(e['compare_per_second'])} | "
            f"{e['compare_per_second'] / e['baseline_per_second']:.1%} | "
            f"{e['compare_cpu_per_event_ms']:.2f} ms |"
        )
    out += ["", *_ceiling_lines(e)]
    out += [f"Runs ({e['runs']}, medians above):", ""]
    # The fanned loops' columns, where the run had them: (heading, runs).
    loops = [
        (heading, runs)
        for heading, runs in (
            (f"{e['fanout']}-record loop events/s", e.get("baseline_fanout") or []),
            ("batched loop events/s", e.get("baseline_batched") or []),
        )
        if runs
    ]
    out += [
        "| run | baseline events/s | "
        + "".join(f"{heading} | " for heading, _ in loops)
        + "engine events/s | entry events/s | engine CPU s | startup s |"
    ]
    out += ["| --- | --- | --- | --- | --- | --- |" + " --- |" * len(loops)]
    for i, (b, w) in enumerate(zip(e["baseline"], e["engine"], strict=True)):
        fan = "".join(
            f"{_num(runs[i]['per_second'])} | " if i < len(runs) else "| " for _, runs in loops
        )
        out.append(
            f"| {i + 1} | {_num(b['per_second'])} | {fan}{_num(w['per_second'])} | "
            f"{_num(w['entry_per_second'])} | {w['cpu_seconds']:.1f} | "
            f"{w['startup_seconds']:.1f} |"
        )
    for i, c in enumerate(e.get("compare") or []):
        out.append(
            f"| {i + 1} (compared tree) | {'| ' * len(loops)}| {_num(c['per_second'])} | "
            f"{_num(c['entry_per_second'])} | {c['cpu_seconds']:.1f} | "
            f"{c['startup_seconds']:.1f} |"
        )
    out.append("")
    return out


def _ceiling_parts(e: dict[str, Any]) -> tuple[float, float] | None:
    """The record path's µs and the batched loop's CPU ms per event; None for a run
    without both."""
    path = e.get("core_path_us")
    io_cpu = engine_bench.median_of(e.get("baseline_batched") or [], "cpu_per_event_ms")
    if path is None or io_cpu is None:
        return None
    return path, io_cpu


def engine_ceiling(e: dict[str, Any]) -> float | None:
    """The events/s the record path and the batched loop's I/O allow one process; None
    for a run without both."""
    parts = _ceiling_parts(e)
    return engine_bench.ceiling(*parts) if parts is not None else None


def _ceiling_lines(e: dict[str, Any]) -> list[str]:
    parts = _ceiling_parts(e)
    if parts is None:
        return []
    io_cpu = parts[1]
    most = engine_bench.ceiling(*parts)
    runs = " / ".join(f"{c['runtime_total']:.0f}" for c in e["core"])
    half = 1e6 / (0.5 * e["baseline_per_second"])
    return [
        f"**What bounds the engine here.** `bench/core_bench.py`, run {_times(len(e['core']))} "
        "after the loops on the same tree, times the worker's "
        "record path without Kafka or faust (`EngineRuntime._process_record` over the "
        "events, then the due ticks, the states stored as the flush stores them, phone "
        f"numbers new to the process): {e['core_path_us']:.0f} µs per event "
        f"(runs: {runs} µs; the pure core alone {e['core_pure_us']:.0f} µs). With the "
        f"batched loop's I/O, {io_cpu * 1000:.0f} µs per event, that is "
        f"{e['core_path_us'] + io_cpu * 1000:.0f} µs: one process of this design makes at "
        f"most **{most:,.0f} events/s** of this journey here, were faust's delivery, the "
        "flush and the producer free. The targets allow 200 µs per event (5,000 events/s) "
        f"and {half:.0f} µs (50% of the baseline).",
        "",
    ]


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _latency_section(lat: dict[str, Any] | None) -> list[str]:
    if lat is None:
        return []
    out = [
        "## 2. Latency",
        "",
        "A journey without a wait (entry condition, condition, WhatsApp step) on an engine "
        "worker, a connector worker (its own process) and the sandbox capped at 1,000/s on "
        "one number. A paced producer publishes for a fixed time; event to SendRequest is "
        "the SendRequest record's timestamp minus the event record's, event to sandbox is "
        "the sandbox's `received_at` minus the event record's timestamp. The share of "
        "events that pass the entry condition keeps sends at 80% of the connector's cap. "
        "The journey's maximum (its own events/s, engine alone, events written first) sets "
        "the 80% load. CPU columns: share of one core each worker used while the producer ran "
        "(the machine has the cores listed above, shared with the broker and the sandbox); "
        "machine cores busy: CPU the whole machine used meanwhile (workers, sandbox, broker "
        "and this driver; /proc/stat), in cores, out of the cores above.",
        "",
    ]
    out += _error(lat)
    if "phases" not in lat:
        return out
    m = lat["journey_max"]
    out += [
        f"Maximum of this journey: {_num(m['per_second'])} events/s "
        f"({m['events']:,} events in {m['seconds']:.1f} s).",
        "",
        "| load (events/s) | offered | sending share | event → SendRequest p50 / p99 | "
        "event → sandbox p50 / p99 | engine CPU | connector CPU | machine cores busy | "
        "all arrived |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in lat["phases"]:
        s, w = p["event_to_send_request"], p["event_to_sandbox"]
        out.append(
            f"| {_num(p['rate'])} | {_num(p['offered_per_second'])} | "
            f"{p['entering_share']:.0%} | {_num(s['p50_ms'])} / {_num(s['p99_ms'])} ms | "
            f"{_num(w['p50_ms'])} / {_num(w['p99_ms'])} ms | "
            f"{p.get('engine_cpu_share', float('nan')):.0%} | "
            f"{p.get('connector_cpu_share', float('nan')):.0%} | "
            f"{_cores_or_dash(p.get('machine_busy_cores'))} | "
            f"{'yes' if p['complete'] else 'no'} |"
        )
    out.append("")
    return out


def _timers_section(t: dict[str, Any] | None) -> list[str]:
    if t is None:
        return []
    out = ["## 3. Timers", ""]
    out += _error(t)
    s = t.get("state")
    if s:
        out += [
            f"{s['instances']:,} instances waiting 1 d (journey of section 1 with `wait: 1d`), "
            "loaded by one worker from events written beforehand. Store: "
            f"`{s.get('store', 'memory://')}` (`STORE`); the table value per profile is what "
            "the changelog holds.",
            "",
            "| measure | value | per instance |",
            "| --- | --- | --- |",
            f"| table value (stored JSON, mean of {s['values_sampled']:,} read back) | | "
            f"{_num(s['value_bytes_mean'])} B (p99 {_num(s['value_bytes_p99'])} B, "
            f"key {_num(s['key_bytes_mean'])} B) |",
            f"| changelog topic on the broker's disk | "
            f"{_num((s['changelog_disk_bytes'] or 0) / 2**20, 1)} MiB | "
            f"{_num(s['changelog_bytes_per_instance'])} B |",
            f"| worker memory (RSS growth) | {_num(s['rss_empty_mib'])} → "
            f"{_num(s['rss_loaded_mib'])} MiB | {_num(s['rss_bytes_per_instance'])} B |",
            f"| load rate (event to waiting instance) | {_num(s['load_per_second'])} events/s | |",
            "",
            "| restart | seconds to process a new event |",
            "| --- | --- |",
            f"| first worker, empty table (baseline) | {s['start_empty_seconds']:.1f} |",
            f"| worker restarted after a clean stop (same data dir), {s['instances']:,} "
            "profiles in the table | "
            f"{s['restore_seconds']:.1f} |",
            "",
            "A worker killed with SIGKILL is noticed only when its session expires "
            "(`KAFKA_SESSION_TIMEOUT_SECONDS`, 10 s): add that to the restore time.",
            "",
        ]
    lag = t.get("lag")
    if lag:
        out += [
            f"Firing lag: {lag['fired']:,} instances waiting {lag['wait']}, entered at "
            f"{_num(lag['offered_per_second'])} events/s (half the engine's measured rate "
            "when the engine benchmark ran, else 300/s, so the worker is not behind); lag is "
            "the wait step's record timestamp minus "
            "the `due` carried by the timer tick. Floor: the timer scan interval "
            f"({lag['scan_interval_seconds']} s).",
            "",
            "| p50 | p99 | max |",
            "| --- | --- | --- |",
            f"| {lag['lag_p50_seconds']:.3f} s | {lag['lag_p99_seconds']:.3f} s | "
            f"{lag['lag_max_seconds']:.3f} s |",
            "",
        ]
    return out


def _connector_section(c: dict[str, Any] | None) -> list[str]:
    if c is None:
        return []
    out = [
        "## 4. Connector",
        "",
        "SendRequests written to the requests topic while one connector worker "
        "(`--role whatsapp`, `WHATSAPP_RATE_PER_SECOND=1000`) runs; the sandbox caps every "
        "number at 1,000/s and answers 130429 above it. Sustained rate: messages the "
        "sandbox accepted between the first and last 5% of them. Then the four numbers "
        "again with two connector workers in one consumer group, each given the whole cap "
        "(`WHATSAPP_NUMBER_CAP_PER_SECOND=1000`): each takes half the requests topic's "
        "partitions and so paces every number at half the cap. Baseline: "
        "`bench/bare_http.py`, bare aiohttp POSTs (64 in flight) to an uncapped sandbox.",
        "",
    ]
    out += _error(c)
    if "phases" not in c:
        return out
    b = c["bare_http"]
    out += [
        f"Bare HTTP baseline: {_num(b['per_second'])} calls/s ({b['calls']:,} calls).",
        "",
        "| numbers | connector workers | requests | sustained sends/s | per number | "
        "share of cap | vs bare HTTP | 130429 | connector CPU per send | "
        "sandbox CPU per send | machine cores busy | cores the caps need |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in c["phases"]:
        per = [v for v in p["per_number_per_second"].values() if not math.isnan(v)]
        out.append(
            f"| {p['numbers']} | {_workers(p)} | {p['requests']:,} | "
            f"{_num(p['sustained_per_second'])} | "
            f"{' / '.join(_num(v) for v in per)} | "
            f"{p['sustained_per_second'] / p['cap_per_second']:.0%} | "
            f"{p['sustained_per_second'] / b['per_second']:.0%} | "
            f"{p['rate_limited_130429']} | {p['connector_cpu_per_send_ms']:.2f} ms | "
            f"{_ms_or_dash(p.get('sandbox_cpu_per_send_ms'))} | "
            f"{_cores_or_dash(p.get('machine_busy_cores'))} | "
            f"{_cores_or_dash(cores_for_caps(p))} |"
        )
    out += [
        "",
        "\"vs bare HTTP\": the connector's rate over the bare client's, the ceiling of HTTP to "
        "the sandbox on this machine with no Kafka and no connector logic. Where the caps "
        "add up to more than that ceiling, no connector on this machine can reach them. "
        '"machine cores busy": CPU the whole machine used while the phase ran (connector, '
        "sandbox, broker and this driver; /proc/stat), in cores, out of the cores above. "
        '"cores the caps need": the phase\'s connector and sandbox CPU per send times the '
        "caps' sum, the cores those two alone would use at every number's full cap, "
        "before the broker's share.",
        "",
    ]
    return out


def cores_for_caps(phase: dict[str, Any]) -> float | None:
    """Cores the connector workers and the sandbox would use together at the caps' sum,
    at this phase's CPU per send; None without the sandbox's CPU."""
    sandbox = phase.get("sandbox_cpu_per_send_ms")
    if sandbox is None or math.isnan(sandbox):
        return None
    return float(phase["cap_per_second"] * (phase["connector_cpu_per_send_ms"] + sandbox) / 1000)


def _workers(phase: dict[str, Any]) -> str:
    workers = phase.get("workers", 1)
    if workers == 1:
        return "1"
    return f"{workers}, {_num(phase['rate_per_worker'])}/s per number each (its share)"


def _ms_or_dash(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f} ms"


def _cores_or_dash(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _report_section(rep: dict[str, Any] | None) -> list[str]:
    if rep is None:
        return []
    out = ["## 5. Report aggregation (`bench/report_bench.py`)", ""]
    out += _error(rep)
    out += ["| measure | value |", "| --- | --- |"]
    out += [f"| {k} | {_num(v, 3) if isinstance(v, float) else v} |" for k, v in rep.items()]
    out.append("")
    return out


_ENGINE_CODE = ("engine/", "activities/", "schemas/", "pydantic", "orjson")
_CONNECTOR_CODE = ("connectors/", "schemas/", "pydantic", "orjson", "httpx", "aiohttp/")


def _profile_section(
    e: dict[str, Any] | None,
    *,
    what: str = "engine worker",
    run: str = "an extra engine run, not one of the measured runs",
    code: tuple[str, ...] = _ENGINE_CODE,
) -> list[str]:
    if not e or not e.get("profile"):
        return []
    path = Path(e["profile"])
    if not path.exists():
        return []
    out = [
        f"## Profile of the {what}",
        "",
        f"py-spy (`record --native --rate 100`) on {run}; raw stacks in "
        f"`{path.relative_to(ROOT)}` (`python -m bench.profile_report FILE` summarises them). "
        "The main thread runs the event loop that carries the worker's work; the other "
        "threads (faust's consumer thread) mostly wait, which the first column counts.",
        "",
        "| where the samples went | share | share of the main thread |",
        "| --- | --- | --- |",
    ]
    main = dict(categories(path, main_thread=True))
    out += [
        f"| {name} | {share:.1f}% | {main.get(name, 0.0):.1f}% |"
        for name, share in categories(path)
    ]
    summary = summarize(path, top=400)
    ours = [
        (name, n)
        for name, n in summary.inclusive
        if any(p in name for p in code)
        and not any(
            p in name
            for p in (
                "engine/cli/main.py",
                "engine/streaming/app.py",
                "engine/streaming/consumer.py",
                "._agent",
            )
        )
    ][:15]
    if ours:
        out += ["", "| project and library functions (inclusive) | share |", "| --- | --- |"]
        total = max(summary.samples, 1)
        out += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in ours]
    out.append("")
    return out


def kept_section(path: Path) -> str:
    if path.exists():
        text = path.read_text()
        start, end = text.find(KEEP_START), text.find(KEEP_END)
        if 0 <= start < end:
            return text[start : end + len(KEEP_END)]
    if path != DOC and DOC.exists():
        return kept_section(DOC)
    return DEFAULT_KEPT


def write_report(plan: Plan, machine: dict[str, Any], broker: Broker, started: datetime) -> None:
    kept = kept_section(plan.output)
    text = render(plan, machine, broker, started) + "\n" + kept + "\n"
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    plan.output.write_text(text)


# --- entry point ----------------------------------------------------------------------


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def render_again(plan: Plan) -> int:
    """Write the report from a saved results.json (after a change to the report's layout)."""
    assert plan.render_from is not None
    saved = json.loads(plan.render_from.read_text())
    plan.command = saved["plan"]
    plan.quick = " --quick" in plan.command
    plan.results = saved["results"]
    plan.seconds = saved.get("seconds", {})
    # Results saved before the source was: say so rather than name today's commit.
    plan.source = saved.get("source") or f"unknown (report rendered again at {_git_state()})"
    broker = Broker(
        saved["broker"]["bootstrap"],
        None,
        started=saved["broker_started"],
        version=saved["broker"]["version"],
    )
    machine = saved["machine"]
    write_report(plan, machine, broker, datetime.fromisoformat(saved["started"]))
    print(f"bench: wrote {plan.output}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    if plan.render_from is not None:
        return render_again(plan)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    log_dir = ARTIFACTS / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    machine = machine_info()
    plan.source = _git_state()
    print(f"bench: logs and raw results in {log_dir.relative_to(ROOT)}", flush=True)
    broker = Broker.start()
    ours = f"Kafka broker on port {broker.port}"
    machine["shared_with"] = [p for p in other_load() if p != ours]
    try:
        asyncio.run(run_all(plan, broker, log_dir))
    except KeyboardInterrupt:
        print("bench: interrupted; stopping what was started", file=sys.stderr)
        return 130
    finally:
        stop_all()
        broker.stop()
        machine["loadavg_end"] = os.getloadavg()
        (log_dir / "results.json").write_text(
            json.dumps(
                {
                    "plan": plan.command,
                    "source": plan.source,
                    "started": started.isoformat(),
                    "machine": machine,
                    "results": plan.results,
                    "seconds": plan.seconds,
                    "broker": {"bootstrap": broker.bootstrap, "version": broker.version},
                    "broker_started": broker.started,
                },
                indent=1,
                default=str,
            )
        )
    write_report(plan, machine, broker, started)
    print(f"bench: wrote {plan.output}", flush=True)
    failed = [name for name, res in plan.results.items() if "error" in res]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
