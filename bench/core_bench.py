"""The engine's per-event CPU without Kafka: decoding, the interpreter, state (de)serialization.

Runs, in one process, what the worker does per profile for the journey of the engine
benchmark: decode the event, enter the journey (until the wait), store the state; then
load the state, fire the timer (condition, WhatsApp step, end), store it again; plus the
JSON of every effect. `python -m bench.core_bench [--profiles N] [--cprofile]`, with the
working directory set to the source tree to measure (bench itself comes from PYTHONPATH).
Prints one JSON line of microseconds per profile for each stage: CPU time of this
process (`CLOCK`), the figure a deployment is sized by, and one that other programs on
a shared machine change far less than they change elapsed time.

Then the same profiles again through the worker's own record path, still without Kafka or
faust's streams: `EngineRuntime._process_record` takes each event, and later due ticks
naming the profiles (fifty per tick), in batches as the agent takes them, and each
batch's states are stored as flush stores them (serialized, written to the table,
their timers indexed), with the worker's garbage-collector settings. `runtime_*` is that
path per profile: the pure core plus the worker's checks, lookups, metrics and effect
records, but not producing them.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.engine_bench import journey
from tests.support.builders import event_record

CLOCK = time.process_time


def _deployment(wait: str) -> Any:
    from engine.core.loader import parse_journey
    from engine.streaming.registry import next_deployment

    deployment = next_deployment(parse_journey(journey(wait), "<bench>"), None, source="bench")
    assert deployment is not None
    return deployment


def _catalog(wait: str) -> Any:
    from engine.core.catalog import JourneyCatalog

    catalog = JourneyCatalog()
    catalog.apply(_deployment(wait))
    return catalog


def _effects_json(effects: Any) -> list[bytes]:
    """What the runtime's _collect serializes per effect."""
    models = (*effects.sends, *effects.steps)
    import schemas.common

    # record_json, json_bytes or model_dump: whichever the measured tree has.
    def dumped(model: Any) -> bytes:
        return orjson.dumps(model.model_dump(mode="json"))

    dump: Callable[[Any], bytes] = getattr(
        schemas.common, "record_json", getattr(schemas.common, "json_bytes", dumped)
    )
    return [dump(model) for model in models]


def measure(profiles: int) -> dict[str, float]:
    from engine.core.interpreter import apply_event, apply_timers, new_profile_state
    from engine.worker.codec import state_from_bytes, state_to_bytes
    from schemas.events import ProfileEvent

    catalog = _catalog("1s")
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    raw = [event_record(i, "core", occurred_at=stamp)[1] for i in range(profiles)]
    now = datetime.now(UTC)
    later = now + timedelta(seconds=2)
    clock = CLOCK
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


@dataclass(frozen=True, slots=True)
class _Message:
    """The fields of a consumed record the runtime reads."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class _Record:
    message: _Message


def _runtime(data_dir: Path) -> Any:
    """An engine worker's runtime, never started, with the benchmark journey deployed."""
    from engine.streaming.app import create_app
    from schemas.settings import Settings

    settings = Settings(data_dir=data_dir, app_id="core-bench")
    runtime = create_app(settings, frozenset({"engine"}), web=False).runtime  # type: ignore[attr-defined]
    runtime.catalog.apply(_deployment("1s"))
    runtime.definitions.ready.set()
    return runtime


def measure_runtime(runtime: Any, profiles: int, run: str, first: int) -> dict[str, float]:
    """Profiles `first` to `first + profiles`: numbers from another range than the pure
    core's, so each phone number is new to the process, as it is in the worker."""
    from engine.worker.batch import BATCH_MAX, Pending
    from engine.worker.codec import state_record

    decoded = getattr(runtime, "_decoded", None)  # a tree from before it keeps none

    def store(pending: Any) -> None:
        stored = [(pid, *state_record(st), st) for pid, (_, st) in pending.states.items()]
        for pid, raw, _, state in stored:
            runtime.profiles.data[pid.encode()] = raw
            if decoded is not None:  # as flush keeps the committed states decoded
                decoded.keep(pid, raw, state)
        for pid, _, due_at, _ in stored:
            runtime.timers.schedule(pid, due_at)

    events_topic = runtime.settings.topic_profile_events
    timers_topic = runtime.topics.timers.get_topic_name()
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    now = datetime.now(UTC)
    due_at = (now + timedelta(seconds=1)).timestamp()
    records = []
    due: dict[int, list[list[Any]]] = {}  # the due ticks' items, per partition
    for i in range(first, first + profiles):
        key, value = event_record(i, run, occurred_at=stamp)
        partition = runtime._partition_of(key)
        records.append(_Record(_Message(events_topic, key, value, partition, i)))
        due.setdefault(partition, []).append([key.decode(), due_at])
    ticks = [
        _Record(_Message(timers_topic, None, orjson.dumps({"due": items[i : i + 50]}), part))
        for part, items in due.items()
        for i in range(0, len(items), 50)
    ]
    clock = CLOCK
    t0 = clock()
    for start in range(0, profiles, BATCH_MAX):
        pending = Pending()
        for record in records[start : start + BATCH_MAX]:
            runtime._process_record(record, now, pending)
        store(pending)
    t1 = clock()
    later = now + timedelta(seconds=2)
    sends = 0
    for start in range(0, len(ticks), 10):
        pending = Pending()
        for record in ticks[start : start + 10]:
            runtime._process_record(record, later, pending)
        sends += sum(
            1 for topic, _, _ in pending.effects if topic is runtime.topics.whatsapp_requests
        )
        store(pending)
    t2 = clock()
    if sends != profiles:
        raise SystemExit(f"runtime: expected {profiles} sends, got {sends}")
    return {
        "runtime_enter": (t1 - t0) / profiles * 1e6,
        "runtime_fire": (t2 - t1) / profiles * 1e6,
        "runtime_total": (t2 - t0) / profiles * 1e6,
    }


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
    try:
        import engine.worker.codec
        from engine.worker.gctuning import tune_gc

        engine.worker.codec.state_record  # noqa: B018 (a tree from before it has no such path)
    except (ImportError, AttributeError):
        pass
    else:
        with tempfile.TemporaryDirectory() as tmp:
            runtime = _runtime(Path(tmp))
            # The worker's collector settings (engine/streaming/app.py): a batch's states outlive
            # many young collections, which at Python's defaults cost a third of this path.
            tune_gc()
            # Phone numbers cycle every 10,000,000 profiles (bench/common.py).
            measure_runtime(runtime, min(2000, args.profiles), "warm", 7_000_000)
            result |= measure_runtime(runtime, args.profiles, "runtime", 3_000_000)
    sys.stdout.write(orjson.dumps({k: round(v, 1) for k, v in result.items()}).decode() + "\n")


if __name__ == "__main__":
    main()
