"""What profile lookups cost the engine: the refusal record at entry, and a lookup when asked.

`journeyctl inspect` and the console compute everything on request; the only per-event work
they add is the refusal at entry (engine/core/interpreter.py `_refuse`: a counter and the
latest refusal in the profile's journey history). This phase runs the worker's per-event
core path (decode the event, load the stored state, interpret, store the state) for a
journey that nobody enters (its entry condition is false for every event), twice per
profile, with the refusal recorded and with `_refuse` made a no-op, alternating runs in one
process; then times one `GET /api/profiles/{id}` body (`profile_view`) per profile.
`python -m bench.console_bench [--profiles N]` prints one JSON line.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from statistics import median
from typing import Any

import orjson

from tests.support.builders import event_record

NOBODY_ENTERS = """
id: bench-nobody
name: Nobody enters
entry: {event: cart.abandoned, condition: 'event.data.cart_total > 100000'}
start: done
activities:
  done: {type: end}
"""
RUNS = 3


def _pass(raw: list[bytes], catalog: Any, now: datetime) -> tuple[float, float, int]:
    """(seconds, CPU seconds, bytes of the last state) of two events per profile."""
    from engine.core.interpreter import apply_event, new_profile_state
    from engine.worker.codec import state_from_bytes, state_to_bytes
    from schemas.events import ProfileEvent

    stored: dict[str, bytes] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for value in raw:
        event = ProfileEvent.model_validate_json(value)
        before = stored.get(event.profile_id)
        state = state_from_bytes(before) if before else new_profile_state(event.profile_id)
        result = apply_event(state, event, catalog, now)
        if result.effects.steps:
            raise SystemExit("somebody entered the journey nobody enters")
        stored[event.profile_id] = state_to_bytes(result.state)
    last = stored[event.profile_id]
    return time.perf_counter() - wall, time.process_time() - cpu, len(last)


def measure(profiles: int) -> dict[str, Any]:
    from engine.console.profile import profile_view
    from engine.core import interpreter
    from engine.core.catalog import JourneyCatalog
    from engine.core.loader import parse_journey
    from engine.streaming.registry import next_deployment
    from engine.worker.codec import state_from_bytes, state_to_bytes

    deployment = next_deployment(parse_journey(NOBODY_ENTERS, "<bench>"), None, source="bench")
    assert deployment is not None
    catalog = JourneyCatalog()
    catalog.apply(deployment)
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    raw = [
        event_record(i, "console", occurred_at=stamp, seq=seq)[1]
        for seq in (0, 1)
        for i in range(profiles)
    ]
    now = datetime.now(UTC)
    recording = interpreter._refuse
    runs: dict[str, list[tuple[float, float, int]]] = {"with": [], "without": []}
    for _ in range(RUNS):
        for mode in ("with", "without"):
            interpreter._refuse = recording if mode == "with" else (lambda *a, **k: None)
            try:
                runs[mode].append(_pass(raw, catalog, now))
            finally:
                interpreter._refuse = recording
    events = len(raw)
    out: dict[str, Any] = {"profiles": profiles, "events": events, "runs": RUNS}
    for mode, got in runs.items():
        out[f"{mode}_events_per_second"] = round(events / median(g[0] for g in got))
        out[f"{mode}_cpu_us_per_event"] = round(median(g[1] for g in got) / events * 1e6, 2)
        out[f"{mode}_state_bytes"] = got[-1][2]
    out["extra_cpu_us_per_event"] = round(
        out["with_cpu_us_per_event"] - out["without_cpu_us_per_event"], 2
    )
    # One lookup per profile, as the owning worker answers it from its table.
    states = []
    for value in raw[:profiles]:
        profile_id = orjson.loads(value)["profile_id"]
        state = interpreter.new_profile_state(profile_id)
        from schemas.events import ProfileEvent

        interpreter.apply_event(state, ProfileEvent.model_validate_json(value), catalog, now)
        states.append(state_to_bytes(state))
    started = time.process_time()
    for stored in states:
        orjson.dumps(profile_view(state_from_bytes(stored), catalog, now))
    out["lookup_cpu_us"] = round((time.process_time() - started) / len(states) * 1e6, 1)
    return out


def section(result: dict[str, Any] | None) -> list[str]:
    """The BENCHMARKS.md section of this phase."""
    if result is None:
        return []
    out = ["## Profile lookups: the per-event cost of recording refusals", ""]
    if "error" in result:
        return [*out, f"**Failed:** {result['error']}", ""]
    out += [
        f"`bench/console_bench.py`: {result['profiles']:,} profiles, two events each, of a "
        "journey nobody enters (entry condition false), through the worker's core path "
        "(decode, load state, interpret, store state) in one process, median of "
        f"{result['runs']} alternating runs. The console and `journeyctl inspect` add no "
        "other per-event work; a lookup is computed when asked.",
        "",
        "| | events/s | CPU per event | stored state |",
        "| --- | --- | --- | --- |",
    ]
    for mode, label in (("with", "refusals recorded"), ("without", "`_refuse` a no-op")):
        out.append(
            f"| {label} | {result[f'{mode}_events_per_second']:,} "
            f"| {result[f'{mode}_cpu_us_per_event']} µs "
            f"| {result[f'{mode}_state_bytes']:,} bytes |"
        )
    out += [
        "",
        f"Extra CPU per refused event: {result['extra_cpu_us_per_event']} µs. One "
        f"`GET /api/profiles/{{id}}` body costs {result['lookup_cpu_us']} µs of CPU on the "
        "worker that owns the profile. Figures from a shared machine are noisy.",
        "",
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", type=int, default=10_000)
    args = parser.parse_args()
    print(orjson.dumps(measure(args.profiles)).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
