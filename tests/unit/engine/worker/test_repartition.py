"""Where a profile event goes when it is read on another partition than its key's.

From profile-events it becomes one record for the repartition topic, as it was, and
changes no state; from the repartition topic it is processed, or dead-lettered when it is
on the wrong partition there too. The runtime without a broker (tests/unit/runtime_support.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.worker.batch import Pending
from engine.worker.runtime import EngineRuntime
from tests.unit import ANA, at, event
from tests.unit.runtime_support import Event, Message, engine_runtime

WHEN = "1m"


@pytest.fixture
def runtime(tmp_path: Path) -> EngineRuntime:
    return engine_runtime(tmp_path, "hop")


def _record(rt: EngineRuntime, topic: str, *, right: bool, key: bytes = b"p-hop") -> Event:
    signup = event("signup", WHEN, event_id="e-1", profile_id="p-hop", attributes=ANA)
    home = rt._partition_of(b"p-hop")
    partition = home if right else (home + 1) % rt.partitions
    return Event(Message(topic, key, signup.model_dump_json().encode(), partition))


def _process(rt: EngineRuntime, record: Event) -> Pending:
    pending = Pending()
    rt._process_record(record, at(WHEN), pending)  # type: ignore[arg-type]
    return pending


def test_a_record_on_another_partition_is_moved_as_it_was(runtime: EngineRuntime) -> None:
    record = _record(runtime, runtime.topics.profile_events.get_topic_name(), right=False)
    pending = _process(runtime, record)
    assert pending.effects == [
        (runtime.topics.profile_events_repartition, b"p-hop", record.message.value)
    ]
    assert pending.states == {}


def test_a_moved_record_is_processed_on_its_partition(runtime: EngineRuntime) -> None:
    topic = runtime.topics.profile_events_repartition.get_topic_name()
    pending = _process(runtime, _record(runtime, topic, right=True))
    assert "p-hop" in pending.states
    assert runtime.topics.profile_events_repartition not in {t for t, _, _ in pending.effects}


def test_records_that_cannot_be_moved_are_dead_lettered(runtime: EngineRuntime) -> None:
    topic = runtime.topics.profile_events.get_topic_name()
    moved_topic = runtime.topics.profile_events_repartition.get_topic_name()
    reasons = []
    for record in (
        _record(runtime, moved_topic, right=False),
        _record(runtime, topic, right=False, key=b"someone-else"),
    ):
        [(target, _, value)] = _process(runtime, record).effects
        assert target is runtime.topics.dead_letter
        reasons.append(value)
    assert b"wrong partition of the repartition topic" in reasons[0]
    assert b"record key does not match profile_id" in reasons[1]
