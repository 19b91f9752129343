"""The engine's per-event CPU without Kafka: decoding, the interpreter, state (de)serialization.

Runs, in one process, what the worker does per profile for the journey of the engine
benchmark: decode the event, enter the journey (until the wait), store the state; then
load the state, fire the timer (condition, WhatsApp step, end), store it again; plus the
JSON of every effect. `python -m bench.core_bench [--profiles N] [--cprofile]`, with the
working directory set to the source tree to measure (bench itself comes from PYTHONPATH).
Prints one JSON line of microseconds per profile for each stage.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.common import profile_event
from bench.engine_bench import journey


def _catalog(wait: str) -> Any:
    from engine.catalog import JourneyCatalog
    from engine.loader import parse_journey
    from engine.registry import next_deployment

    catalog = JourneyCatalog()
    deployment = next_deployment(parse_journey(journey(wait), "<bench>"), None, source="bench")
    assert deployment is not None
    catalog.apply(deployment)
    return catalog


def _effects_json(effects: Any) -> list[bytes]:
    """What the runtime's _collect serializes per effect."""
    models = (*effects.sends, *effects.steps)
    try:
        from schemas.common import json_bytes
    except ImportError:  # a tree from before json_bytes
        return [orjson.dumps(model.model_dump(mode="json")) for model in models]
    return [json_bytes(model) for model in models]


def measure(profiles: int) -> dict[str, float]:
    from engine.interpreter import apply_event, apply_timers, new_profile_state
    from engine.runtime import state_from_bytes, state_to_bytes
    from schemas.events import ProfileEvent

    catalog = _catalog("1s")
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    raw = [profile_event(i, "core", occurred_at=stamp)[1] for i in range(profiles)]
    now = datetime.now(UTC)
    later = now + timedelta(seconds=2)
    clock = time.perf_counter
    spent = dict.fromkeys(
        ("decode", "enter", "store", "load", "fire", "store_again", "effects"), 0.0
    )
    sends = 0
    for value in raw:
        t0 = clock()
        event = ProfileEvent.model_validate_json(value)
        t1 = clock()
        result = apply_event(new_profile_state(event.profile_id), event, catalog, now)
        t2 = clock()
        stored = state_to_bytes(result.state)
        t3 = clock()
        effects = _effects_json(result.effects)
        t4 = clock()
        state = state_from_bytes(stored)
        t5 = clock()
        fired = apply_timers(state, catalog, later)
        t6 = clock()
        state_to_bytes(fired.state)
        t7 = clock()
        effects += _effects_json(fired.effects)
        t8 = clock()
        sends += len(fired.effects.sends)
        spent["decode"] += t1 - t0
        spent["enter"] += t2 - t1
        spent["store"] += t3 - t2
        spent["load"] += t5 - t4
        spent["fire"] += t6 - t5
        spent["store_again"] += t7 - t6
        spent["effects"] += (t4 - t3) + (t8 - t7)
    if sends != profiles:
        raise SystemExit(f"expected {profiles} sends, got {sends}: the journey did not run")
    per = {k: v / profiles * 1e6 for k, v in spent.items()}
    per["total"] = sum(per.values())
    per["state_bytes"] = float(len(stored))
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profiles", type=int, default=20_000)
    parser.add_argument("--cprofile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    measure(min(2000, args.profiles))  # warm up: imports, caches
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        result = measure(args.profiles)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    else:
        result = measure(args.profiles)
    sys.stdout.write(orjson.dumps({k: round(v, 1) for k, v in result.items()}).decode() + "\n")


if __name__ == "__main__":
    main()
