"""A record that fails halfway leaves the profile's state as the records before it left it.

The interpreter changes a state in place: `apply_event` marks the event as seen first and
then runs the journeys. When it raises halfway (a bug), the record is dead-lettered, and
the state it started from must not keep half its changes: the next record for the
profile, or the flush, would store them, and the dead letter, replayed once the bug is
fixed, would then be skipped as a duplicate.

The runtime without a broker (tests/unit/runtime_support.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import engine.core.interpreter as interpreter_module
from engine.worker.batch import Pending
from engine.worker.codec import state_to_bytes
from engine.worker.runtime import EngineRuntime
from tests.unit import ANA, at, event
from tests.unit.runtime_support import Event, Message, engine_runtime

PROFILE = "p-half"


@pytest.fixture
def runtime(tmp_path: Path) -> EngineRuntime:
    return engine_runtime(tmp_path, "half")


def _record(rt: EngineRuntime, event_id: str, type_: str, when: str) -> Event:
    profile = event(type_, when, event_id=event_id, profile_id=PROFILE, attributes=ANA)
    key = profile.profile_id.encode()
    topic = rt.topics.profile_events.get_topic_name()
    return Event(Message(topic, key, profile.model_dump_json().encode(), rt._partition_of(key)))


def _process(rt: EngineRuntime, record: Event, when: str, pending: Pending) -> None:
    rt._process_record(record, at(when), pending)  # type: ignore[arg-type]


def _fail_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make apply_event raise after it has marked the event as seen."""

    def boom(run: object) -> None:
        raise RuntimeError("a bug in the interpreter")

    monkeypatch.setattr(interpreter_module, "_fire_due_timers", boom)


def _dead_letters(rt: EngineRuntime, pending: Pending) -> int:
    return sum(1 for topic, _, _ in pending.effects if topic is rt.topics.dead_letter)


def _process_failing(
    rt: EngineRuntime, monkeypatch: pytest.MonkeyPatch, event_id: str, pending: Pending
) -> None:
    """Process a record whose handling raises halfway; it is dead-lettered."""
    with monkeypatch.context() as patch:
        _fail_halfway(patch)
        _process(rt, _record(rt, event_id, "clicked", "2s"), "3s", pending)
    assert _dead_letters(rt, pending) == 1


def test_a_failed_record_leaves_this_batchs_state_as_it_was(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    pending = runtime._pending
    _process(runtime, _record(runtime, "evt-1", "signup", "0s"), "1s", pending)
    [instance] = pending.states[PROFILE][1].instances.values()
    assert instance.waiting == "timer"

    _process_failing(runtime, monkeypatch, "evt-2", pending)

    state = pending.states[PROFILE][1]
    assert state.seen_event_ids == ["evt-1"]  # not evt-2: its record failed
    assert [i.activity_id for i in state.instances.values()] == [instance.activity_id]

    # The dead letter, replayed once the bug is fixed, is processed, not a duplicate.
    _process(runtime, _record(runtime, "evt-2", "clicked", "2s"), "4s", pending)
    assert pending.states[PROFILE][1].seen_event_ids == ["evt-1", "evt-2"]
    assert _dead_letters(runtime, pending) == 1


def test_a_failed_record_leaves_a_flushing_batchs_state_as_it_was(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushing = runtime._pending
    _process(runtime, _record(runtime, "evt-1", "signup", "0s"), "1s", flushing)
    # What flush step 1 does: the batch is in flight, records go to the next one.
    runtime._in_flight, runtime._pending = flushing.states, Pending()
    pending = runtime._pending

    _process_failing(runtime, monkeypatch, "evt-2", pending)
    assert PROFILE not in pending.states
    assert runtime._in_flight[PROFILE][1].seen_event_ids == ["evt-1"]

    _process(runtime, _record(runtime, "evt-3", "clicked", "4s"), "5s", pending)
    assert pending.states[PROFILE][1].seen_event_ids == ["evt-1", "evt-3"]


def test_a_failed_record_on_a_stored_state_changes_nothing_held(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Pending()
    _process(runtime, _record(runtime, "evt-1", "signup", "0s"), "1s", first)
    stored = state_to_bytes(first.states[PROFILE][1])
    runtime.profiles.data[PROFILE.encode()] = stored  # as a finished flush leaves it

    pending = runtime._pending
    _process_failing(runtime, monkeypatch, "evt-2", pending)
    assert PROFILE not in pending.states
    assert runtime.profiles.data[PROFILE.encode()] == stored
