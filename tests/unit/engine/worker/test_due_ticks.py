"""Due ticks: one journey-timers record per partition names the profiles due there.

The runtime's own handling, without a broker: the app is built but never started, the
ticks `_fire_timers` would produce are captured, and records are handed to
`_process_record` as the agent would.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

import engine.worker.batch as batch_module
import engine.worker.ticks as ticks_module
from engine.core.interpreter import apply_event, new_profile_state
from engine.worker.batch import Pending
from engine.worker.runtime import EngineRuntime
from engine.worker.ticks import DUE_TICK_MAX
from tests.unit import ANA, at, event
from tests.unit.runtime_support import Event, Message, engine_runtime


@pytest.fixture
def runtime(tmp_path: Path) -> EngineRuntime:
    return engine_runtime(tmp_path, "due")


def _waiting(rt: EngineRuntime, profile_id: str, pending: Pending) -> None:
    """A profile that entered the journey at T0 and waits until T0 + 1m."""
    signup = event("signup", "0s", profile_id=profile_id, attributes=ANA)
    result = apply_event(new_profile_state(profile_id), signup, rt.catalog, at("0s"))
    tick = Event(Message("elsewhere", profile_id.encode(), b"", 0))
    pending.states[profile_id] = (cast(Any, tick), result.state)


def _due_tick(rt: EngineRuntime, items: list[Any], partition: int) -> Event:
    value = orjson.dumps({"due": items})
    return Event(Message(rt.topics.timers.get_topic_name(), b"due", value, partition))


def _profiles_on(rt: EngineRuntime, partition: int, count: int) -> list[str]:
    found = (f"p-{i}" for i in range(100_000))
    return [p for p in found if rt._partition_of(p.encode()) == partition][:count]


async def test_a_scan_sends_one_tick_per_partition_on_that_partition(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[list[Any], list[Any]]] = []

    async def produce(producer: Any, records: Any, partitions: Any) -> list[Any]:
        sent.append((list(records), list(partitions)))
        return []

    monkeypatch.setattr(ticks_module, "produce_batched", produce)
    monkeypatch.setattr(runtime, "_producer", lambda: None)
    crowded = _profiles_on(runtime, 3, DUE_TICK_MAX + 2)
    alone = _profiles_on(runtime, 5, 1)
    for i, pid in enumerate([*crowded, *alone]):
        runtime.timers.schedule(pid, 1.0 + i)
    await runtime._fire_timers()
    [(records, partitions)] = sent
    assert partitions == [3, 3, 5]  # the crowded partition's ticks split at DUE_TICK_MAX
    named: list[tuple[int, str]] = []
    for (topic, key, value), partition in zip(records, partitions, strict=True):
        assert topic == runtime.topics.timers.get_topic_name() and key == b"due"
        assert value.startswith(ticks_module.DUE_TICK_PREFIX)
        named += [(partition, pid) for pid, _ in orjson.loads(value)["due"]]
    assert sorted(named) == sorted([(3, p) for p in crowded] + [(5, p) for p in alone])
    assert len(orjson.loads(records[0][2])["due"]) == DUE_TICK_MAX


def test_a_due_tick_fires_each_profile_it_names(runtime: EngineRuntime) -> None:
    pending = Pending()
    first, second = _profiles_on(runtime, 2, 2)
    _waiting(runtime, first, pending)
    _waiting(runtime, second, pending)
    due = at("1m").timestamp()
    tick = _due_tick(runtime, [[first, due], [second, due]], partition=2)
    runtime._process_record(cast(Any, tick), at("1m") + timedelta(seconds=1), pending)
    requests = [v for t, _, v in pending.effects if t is runtime.topics.whatsapp_requests]
    assert sorted(orjson.loads(v)["profile_id"] for v in requests) == sorted([first, second])
    for pid in (first, second):
        stored_by, state = pending.states[pid]
        assert (
            cast(Any, stored_by) is tick
        )  # its state goes to the changelog under the tick's partition
        assert "nudge" not in state.instances  # sent, then ended
    assert not [e for e in pending.effects if e[0] is runtime.topics.dead_letter]


def test_an_early_due_tick_fires_nothing_and_keeps_the_timer(runtime: EngineRuntime) -> None:
    pending = Pending()
    [pid] = _profiles_on(runtime, 1, 1)
    _waiting(runtime, pid, pending)
    tick = _due_tick(runtime, [[pid, at("1m").timestamp()]], partition=1)
    runtime._process_record(cast(Any, tick), at("30s"), pending)
    assert pending.effects == []
    assert runtime.timers.pop_due(at("2m").timestamp()) == [(pid, at("1m").timestamp())]


def test_bad_entries_of_a_due_tick_are_dead_lettered_alone(runtime: EngineRuntime) -> None:
    pending = Pending()
    good, other = _profiles_on(runtime, 4, 1)[0], _profiles_on(runtime, 6, 1)[0]
    _waiting(runtime, good, pending)
    due = at("1m").timestamp()
    items = [["", due], [other, due], "junk", [good, due]]
    runtime._process_record(cast(Any, _due_tick(runtime, items, partition=4)), at("2m"), pending)
    dead = [orjson.loads(v) for t, _, v in pending.effects if t is runtime.topics.dead_letter]
    assert [d["reason"] for d in dead] == [
        "due tick entry is not [profile_id, due]",
        "due tick names a profile of another partition",
        "due tick entry is not [profile_id, due]",
    ]
    assert "nudge" not in pending.states[good][1].instances  # the good one still fired


@pytest.mark.parametrize(
    ("value", "reasons"),
    [
        (b'{"due":[1', ['due tick is not {"due": [[profile_id, due], ...]}']),
        (b'{"due":["p-1",5]}', ["due tick entry is not [profile_id, due]"] * 2),
        (b'{"due":[]}', []),
    ],
)
def test_a_malformed_due_tick_is_dead_lettered(
    runtime: EngineRuntime, value: bytes, reasons: list[str]
) -> None:
    pending = Pending()
    tick = Event(Message(runtime.topics.timers.get_topic_name(), b"due", value, 0))
    runtime._process_record(cast(Any, tick), at("0s"), pending)
    dead = [orjson.loads(v) for t, _, v in pending.effects if t is runtime.topics.dead_letter]
    assert [d["reason"] for d in dead] == reasons


def test_a_tick_of_the_earlier_format_still_fires(runtime: EngineRuntime) -> None:
    pending = Pending()
    [pid] = _profiles_on(runtime, 0, 1)
    _waiting(runtime, pid, pending)
    value = orjson.dumps({"profile_id": pid, "due": at("1m").timestamp()})
    tick = Event(Message(runtime.topics.timers.get_topic_name(), pid.encode(), value, 0))
    runtime._process_record(cast(Any, tick), at("1m"), pending)
    requests = [v for t, _, v in pending.effects if t is runtime.topics.whatsapp_requests]
    assert len(requests) == 1


def test_a_batch_is_full_at_batch_max_records_or_changed_profiles(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One due tick can change hundreds of profiles: the batch is bounded by those too, so
    # a kill between its effects and its changelog repeats a bounded number of steps.
    monkeypatch.setattr(batch_module, "BATCH_MAX", 3)
    staged = Pending()
    profiles = _profiles_on(runtime, 4, 3)
    for pid in profiles:
        _waiting(runtime, pid, staged)
    # Their stored states, as the table would give them.
    monkeypatch.setattr(runtime, "_lookup", lambda profile_id, _: staged.states[profile_id][1])
    due = at("1m").timestamp()
    tick = _due_tick(runtime, [[pid, due] for pid in profiles[:2]], partition=4)
    runtime._process_record(cast(Any, tick), at("1m") + timedelta(seconds=1), runtime._pending)
    runtime._batch.append(cast(Any, tick))
    assert len(runtime._pending.states) == 2 and not runtime._batch_full()
    tick = _due_tick(runtime, [[profiles[2], due]], partition=4)
    runtime._process_record(cast(Any, tick), at("1m") + timedelta(seconds=1), runtime._pending)
    runtime._batch.append(cast(Any, tick))
    assert len(runtime._batch) == 2 and runtime._batch_full()  # three profiles changed
    runtime._pending = Pending()
    runtime._batch = [cast(Any, tick)] * 3
    assert runtime._batch_full()  # three records


def test_table_scans_agree_with_the_partition_cache_without_filling_it(
    runtime: EngineRuntime,
) -> None:
    keys = [f"p-{i}".encode() for i in range(200)]
    scanned = [runtime._scanned_partition_of(key) for key in keys]
    assert runtime._key_hashes == {}  # a pass over the table leaves the cache alone
    assert scanned == [runtime._partition_of(key) for key in keys]
    assert len(set(scanned)) == runtime.partitions  # 200 ids reach every partition
    assert len(runtime._key_hashes) == len(keys)
