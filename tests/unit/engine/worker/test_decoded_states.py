"""States the engine committed are read again without parsing, and never a state that a
record was handed meanwhile, or that no longer is the table's bytes.

The runtime without a broker (tests/unit/runtime_support.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.worker.codec import state_to_bytes
from engine.worker.decoded import DecodedStates
from engine.worker.runtime import EngineRuntime
from schemas.state import ProfileState
from tests.unit import ANA, at, event
from tests.unit.runtime_support import Event, KafkaStub, Message, StreamStub, engine_runtime

PROFILE = "p-kept"


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EngineRuntime:
    rt = engine_runtime(tmp_path, "kept")
    KafkaStub().install(rt, monkeypatch)
    return rt


def _state(profile_id: str, seen: list[str]) -> ProfileState:
    return ProfileState(profile_id=profile_id, seen_event_ids=seen)


def test_a_kept_state_is_handed_out_once_and_only_for_its_own_bytes() -> None:
    states = DecodedStates(2)
    state = _state("a", ["e1"])
    raw = state_to_bytes(state)
    states.keep("a", raw, state)
    assert states.take("a", raw) is state and states.hits == 1
    again = states.take("a", raw)  # taken: the next read parses
    assert again is not state and again == state
    states.keep("a", raw, state)
    newer = _state("a", ["e1", "e2"])
    assert states.take("a", state_to_bytes(newer)) == newer  # the table moved on
    assert states.hits == 1


def test_the_oldest_kept_state_goes_first_and_size_zero_keeps_none() -> None:
    states = DecodedStates(2)
    for name in ("a", "b", "c"):
        state = _state(name, [])
        states.keep(name, state_to_bytes(state), state)
    assert len(states) == 2
    stored = state_to_bytes(_state("a", []))
    assert states.take("a", stored) == _state("a", []) and states.hits == 0
    off = DecodedStates(0)
    off.keep("a", stored, _state("a", []))
    assert len(off) == 0


def _record(rt: EngineRuntime, event_id: str, type_: str, when: str) -> Event:
    profile = event(type_, when, event_id=event_id, profile_id=PROFILE, attributes=ANA)
    key = profile.profile_id.encode()
    topic = rt.topics.profile_events.get_topic_name()
    return Event(Message(topic, key, profile.model_dump_json().encode(), rt._partition_of(key)))


async def _commit(rt: EngineRuntime, record: Event, when: str) -> None:
    rt._process_record(record, at(when), rt._pending)  # type: ignore[arg-type]
    rt._batch.append(record)  # type: ignore[arg-type]
    await rt.flush(StreamStub())  # type: ignore[arg-type]


async def test_a_committed_state_is_read_back_without_parsing(runtime: EngineRuntime) -> None:
    await _commit(runtime, _record(runtime, "evt-1", "signup", "0s"), "1s")
    kept = runtime._decoded.take(PROFILE, runtime.profiles.data[PROFILE.encode()])
    assert runtime._decoded.hits == 1
    runtime._decoded.keep(PROFILE, runtime.profiles.data[PROFILE.encode()], kept)

    await _commit(runtime, _record(runtime, "evt-2", "clicked", "2s"), "3s")
    assert runtime._decoded.hits == 2  # the second record started from the kept state
    stored = runtime.profiles.data[PROFILE.encode()]
    assert state_to_bytes(runtime._decoded.take(PROFILE, stored)) == stored
    assert runtime._decoded.hits == 3


async def test_a_state_handed_to_a_record_during_its_flush_is_not_kept(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = KafkaStub()
    kafka.gate.clear()
    kafka.install(runtime, monkeypatch)
    first = _record(runtime, "evt-1", "signup", "0s")
    runtime._process_record(first, at("1s"), runtime._pending)  # type: ignore[arg-type]
    runtime._batch.append(first)  # type: ignore[arg-type]
    flushing = asyncio.ensure_future(runtime.flush(StreamStub()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    # The next batch's record changes the flushing batch's state object meanwhile.
    second = _record(runtime, "evt-2", "clicked", "2s")
    runtime._process_record(second, at("3s"), runtime._pending)  # type: ignore[arg-type]
    kafka.gate.set()
    await flushing
    assert len(runtime._decoded) == 0  # its object holds evt-2, which the table does not
    stored = runtime.profiles.data[PROFILE.encode()]
    assert runtime._decoded.take(PROFILE, stored).seen_event_ids == ["evt-1"]
