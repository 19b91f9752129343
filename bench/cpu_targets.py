"""The CPU targets of the engine and the connector, and the engine's extra phases: the
journey without a wait, and the bench journey on two workers in one group.

Read from a run's results (bench/run.py); each figure beside the one it is compared with.
"""

from __future__ import annotations

import math
import os
from typing import Any

from bench.engine_bench import median_of

RECORD_PATH_US = 60.0  # the worker's record path without Kafka, µs per event
ENGINE_CPU_MS = 0.20  # one engine worker's CPU per event, bench journey
NO_WAIT_PER_SECOND = 8000.0  # one engine worker, the journey without a wait
SCALE_CPU_SHARE = 1.10  # two workers' CPU per event against one's
SCALE_RATE = 1.6  # two workers' events/s against one's, when the cores allow it
CONNECTOR_CPU_MS = 0.15  # the connector's CPU per send


Row = tuple[str, str, bool | None]


def _cores(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


def engine_rows(engine: dict[str, Any], cores: int | None = None) -> list[Row]:
    """The engine's CPU targets measured in this run (none for phases not run)."""
    cores = cores or os.cpu_count() or 1
    rows: list[Row] = []
    path = engine.get("core_path_us")
    if path is not None:
        target = f"record path without Kafka <= {RECORD_PATH_US:.0f} µs per event"
        rows.append((target, f"{path:.0f} µs", path <= RECORD_PATH_US))
    cpu = engine.get("cpu_per_event_ms")
    if cpu is not None:
        target = f"engine CPU per event <= {ENGINE_CPU_MS:.2f} ms (one worker)"
        rows.append((target, f"{cpu:.3f} ms", cpu <= ENGINE_CPU_MS))
    no_wait = engine.get("no_wait_per_second")
    if no_wait is not None:
        target = f">= {NO_WAIT_PER_SECOND:,.0f} events/s, journey without a wait (one worker)"
        cpu_ms = engine.get("no_wait_cpu_per_event_ms") or math.nan
        measured = f"{no_wait:,.0f} events/s, {cpu_ms:.3f} ms CPU per event"
        rows.append((target, measured, no_wait >= NO_WAIT_PER_SECOND))
    rows += _scale_rows(engine, cpu, cores)
    return rows


def _scale_rows(engine: dict[str, Any], cpu: float | None, cores: int) -> list[Row]:
    scaled_cpu = engine.get("scale_out_cpu_per_event_ms")
    scaled_rate = engine.get("scale_out_per_second")
    one_rate = engine.get("engine_per_second")
    if scaled_cpu is None or scaled_rate is None or cpu is None or not one_rate:
        return []
    workers = engine.get("scale_out_workers", 2)
    busy = engine.get("scale_out_busy_cores")
    share = scaled_cpu / cpu
    speedup = scaled_rate / one_rate
    # The rate can only scale while the machine has idle cores to give the second worker.
    saturated = busy is not None and not math.isnan(busy) and busy >= 0.9 * cores
    return [
        (
            f"{workers} workers: CPU per event within {SCALE_CPU_SHARE - 1:.0%} of one worker's",
            f"{scaled_cpu:.3f} ms against {cpu:.3f} ms ({share:.0%})",
            share <= SCALE_CPU_SHARE,
        ),
        (
            f"{workers} workers: >= {SCALE_RATE}x one worker's events/s where the cores allow",
            f"{speedup:.2f}x ({scaled_rate:,.0f} against {one_rate:,.0f} events/s); machine "
            f"cores busy {_cores(busy)} of {cores} with {workers} workers, "
            f"{_cores(engine.get('engine_busy_cores'))} with one",
            True if speedup >= SCALE_RATE else (None if saturated else False),
        ),
    ]


def connector_rows(connector: dict[str, Any]) -> list[Row]:
    """The connector's CPU per send in its largest one-worker phase."""
    phases = [p for p in connector.get("phases", []) if p.get("workers", 1) == 1]
    if not phases:
        return []
    phase = max(phases, key=lambda p: p["numbers"])
    cpu = phase.get("connector_cpu_per_send_ms")
    if cpu is None:
        return []
    return [
        (
            f"connector CPU per send <= {CONNECTOR_CPU_MS:.2f} ms ({phase['numbers']} numbers)",
            f"{cpu:.3f} ms",
            cpu <= CONNECTOR_CPU_MS,
        )
    ]


def engine_phases_section(e: dict[str, Any] | None) -> list[str]:
    """The journey without a wait, and the scale-out runs, beside one worker's runs."""
    if not e or not (e.get("no_wait") or e.get("scale_out")):
        return []
    out = [
        "### Engine: a journey without a wait, and two workers",
        "",
        "The same preloaded events. *Without a wait*: the bench journey with its wait "
        "removed (entry condition, condition, WhatsApp step), on one worker. "
        f"*{e.get('scale_out_workers', 2)} workers*: the bench journey on that many "
        "`journeyctl worker --role engine` processes in one group, started together; CPU "
        "is theirs together. Machine cores busy: CPU the whole machine used meanwhile "
        "(workers, broker, anything else), so a rate is read against the cores left.",
        "",
        "| run | workers | events/s | CPU per event | machine cores busy | CPU s per worker |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    phases = (
        ("bench journey", e.get("engine") or []),
        ("without a wait", e.get("no_wait") or []),
        ("bench journey", e.get("scale_out") or []),
    )
    for label, runs in phases:
        for i, run in enumerate(runs):
            per_worker = " / ".join(f"{c:.1f}" for c in run.get("worker_cpu_seconds", []))
            out.append(
                f"| {label} {i + 1} | {run.get('workers', 1)} | {run['per_second']:,.0f} | "
                f"{run['cpu_per_event_ms']:.3f} ms | {_cores(run.get('machine_busy_cores'))} | "
                f"{per_worker or '-'} |"
            )
    one = median_of(e.get("engine") or [], "per_second")
    if one and e.get("scale_out_per_second"):
        out += ["", f"{e['scale_out_per_second'] / one:.2f}x one worker's events/s."]
    out.append("")
    return out
