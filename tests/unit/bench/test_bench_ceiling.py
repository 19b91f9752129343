"""The engine bench's ceiling: the record path's CPU plus the cheapest I/O's, per event."""

from __future__ import annotations

from typing import Any

import pytest

from bench import engine_bench
from bench.run import _ceiling_lines, cores_for_caps, engine_ceiling, targets


def _engine(core: list[float] | None, io_ms: list[float] | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "engine_per_second": 2500.0,
        "ratio": 0.08,
        "baseline_per_second": 30_000.0,
        "baseline_batched": [
            {"per_second": 19_000.0, "cpu_per_event_ms": ms} for ms in io_ms or []
        ],
        "core": [{"total": us - 30, "runtime_total": us} for us in core or []],
    }
    result["core_path_us"] = engine_bench.median_of(result["core"], "runtime_total")
    result["core_pure_us"] = engine_bench.median_of(result["core"], "total")
    return result


def test_the_ceiling_is_one_second_over_the_path_and_the_io() -> None:
    assert engine_bench.ceiling(160.0, 0.04) == pytest.approx(5000.0)
    assert engine_bench.ceiling(60.0, 0.04) == pytest.approx(10_000.0)


def test_the_report_takes_the_medians_of_the_runs() -> None:
    engine = _engine([180.0, 200.0, 190.0], [0.05, 0.03, 0.04])
    assert engine_ceiling(engine) == pytest.approx(1e6 / (190.0 + 40.0))
    text = " ".join(_ceiling_lines(engine))
    assert "run 3 times after the loops" in text
    assert "runs: 180 / 200 / 190 µs" in text
    assert "190 µs per event" in text
    assert "4,348 events/s" in text
    assert "67 µs (50% of the baseline)" in text


def test_the_5000_target_row_names_the_ceiling() -> None:
    row = targets({"engine": _engine([200.0, 200.0], [0.05, 0.05])})[0]
    assert row == (
        ">= 5,000 events/s per worker",
        "2,500 events/s (at most 4,000 here: see 1.)",
        False,
    )


@pytest.mark.parametrize(("core", "io_ms"), [(None, [0.04]), ([190.0], None)])
def test_a_run_without_both_measurements_has_no_ceiling(
    core: list[float] | None, io_ms: list[float] | None
) -> None:
    engine = _engine(core, io_ms)
    assert engine_ceiling(engine) is None
    assert _ceiling_lines(engine) == []
    assert targets({"engine": engine})[0][1] == "2,500 events/s"


def _connector_phase(numbers: int, connector_ms: float, sandbox_ms: float | None) -> dict[str, Any]:
    phase: dict[str, Any] = {
        "numbers": numbers,
        "cap_per_second": 1000.0 * numbers,
        "per_number_per_second": {str(n): 800.0 for n in range(numbers)},
        "rate_limited_130429": 0,
        "connector_cpu_per_send_ms": connector_ms,
    }
    if sandbox_ms is not None:
        phase["sandbox_cpu_per_send_ms"] = sandbox_ms
    return phase


def test_the_cores_the_caps_need_are_the_cpu_per_send_times_the_caps() -> None:
    assert cores_for_caps(_connector_phase(4, 0.40, 0.28)) == pytest.approx(2.72)
    assert cores_for_caps(_connector_phase(1, 0.61, 0.42)) == pytest.approx(1.03)
    assert cores_for_caps(_connector_phase(4, 0.40, None)) is None
    assert cores_for_caps(_connector_phase(4, 0.40, float("nan"))) is None


def test_a_many_number_target_row_names_the_cores_the_caps_need() -> None:
    results = {
        "connector": {
            "bare_http": {"per_second": 3933.0},
            "phases": [_connector_phase(1, 0.61, 0.42), _connector_phase(4, 0.40, 0.28)],
        }
    }
    one, four, cpu = targets(results)
    assert "cores" not in one[1]
    assert cpu == ("connector CPU per send <= 0.15 ms (4 numbers)", "0.400 ms", False)
    assert four[1] == (
        "80% of 1,000/s per number, 0 answers 130429 (bare HTTP here: 3,933 calls/s, 98% of "
        "the caps; the connector and sandbox alone need 2.72 cores at the caps)"
    )
    assert four[2] is False
