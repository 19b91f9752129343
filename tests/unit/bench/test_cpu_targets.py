"""The CPU targets read a run's results: each verdict from its figure and its comparison."""

from __future__ import annotations

from typing import Any

from bench.cpu_targets import connector_rows, engine_phases_section, engine_rows


def _run(per_second: float, cpu_ms: float, busy: float, workers: int = 1) -> dict[str, Any]:
    return {
        "per_second": per_second,
        "cpu_per_event_ms": cpu_ms,
        "machine_busy_cores": busy,
        "workers": workers,
        "worker_cpu_seconds": [cpu_ms * 5] * workers,
    }


def _engine(scaled_rate: float, scaled_cpu: float, scaled_busy: float) -> dict[str, Any]:
    return {
        "core_path_us": 55.0,
        "cpu_per_event_ms": 0.25,
        "engine_per_second": 4000.0,
        "engine_busy_cores": 1.2,
        "engine": [_run(4000.0, 0.25, 1.2)],
        "no_wait": [_run(9000.0, 0.1, 1.1)],
        "no_wait_per_second": 9000.0,
        "no_wait_cpu_per_event_ms": 0.1,
        "scale_out": [_run(scaled_rate, scaled_cpu, scaled_busy, 2)],
        "scale_out_workers": 2,
        "scale_out_per_second": scaled_rate,
        "scale_out_cpu_per_event_ms": scaled_cpu,
        "scale_out_busy_cores": scaled_busy,
    }


def test_each_engine_target_is_judged_on_its_own_figure() -> None:
    rows = engine_rows(_engine(7000.0, 0.26, 1.5), cores=2)
    verdicts = [ok for _, _, ok in rows]
    # record path 55 <= 60; CPU 0.25 > 0.20; no wait 9,000 >= 8,000; CPU 0.26 within 10%
    # of 0.25; 7,000 >= 1.6 x 4,000
    assert verdicts == [True, False, True, True, True]
    assert "1.75x" in rows[-1][1] and "1.5 of 2" in rows[-1][1]


def test_two_workers_that_cost_more_per_event_fail() -> None:
    rows = engine_rows(_engine(7000.0, 0.30, 1.5), cores=2)
    assert rows[3][2] is False and "120%" in rows[3][1]


def test_a_rate_that_did_not_scale_on_a_busy_machine_is_not_a_failure_but_not_a_pass() -> None:
    saturated = engine_rows(_engine(4400.0, 0.25, 1.95), cores=2)
    idle = engine_rows(_engine(4400.0, 0.25, 1.2), cores=2)
    assert saturated[-1][2] is None  # the machine, not the workers, was the bound
    assert idle[-1][2] is False


def test_a_run_without_the_phases_has_only_what_it_measured() -> None:
    assert engine_rows({"cpu_per_event_ms": 0.19}, cores=2) == [
        ("engine CPU per event <= 0.20 ms (one worker)", "0.190 ms", True)
    ]
    assert engine_phases_section({"engine": [_run(1.0, 1.0, 1.0)]}) == []


def test_the_connector_target_reads_the_largest_one_worker_phase() -> None:
    phases = [
        {"numbers": 1, "workers": 1, "connector_cpu_per_send_ms": 0.1},
        {"numbers": 4, "workers": 1, "connector_cpu_per_send_ms": 0.3},
        {"numbers": 4, "workers": 2, "connector_cpu_per_send_ms": 0.12},
    ]
    assert connector_rows({"phases": phases}) == [
        ("connector CPU per send <= 0.15 ms (4 numbers)", "0.300 ms", False)
    ]


def test_the_section_lists_every_run_beside_one_workers() -> None:
    lines = engine_phases_section(_engine(7000.0, 0.26, 1.5))
    table = [line for line in lines if line.startswith("| bench") or line.startswith("| with")]
    assert len(table) == 3
    assert "| without a wait 1 | 1 | 9,000 | 0.100 ms | 1.1 |" in "\n".join(table)
    assert "1.75x one worker's events/s." in lines
