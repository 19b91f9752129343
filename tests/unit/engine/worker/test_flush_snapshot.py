"""A batch's stored states are the states its own records left, whatever comes after.

While a flush waits for Kafka (step 2), the agent goes on with the next batch, and a
record for a profile of the flushing batch starts from that batch's state object. What
the flush then stores (step 3) must still be its own batch's state: a state that already
holds the next batch's records would, after a crash before that batch's effects are
produced, mark those records as seen and lose their effects on re-read.

The runtime without a broker (tests/unit/runtime_support.py): the app is built, never started;
Kafka's writes are captured.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from engine.worker.runtime import EngineRuntime
from tests.unit import ANA, at, event
from tests.unit.runtime_support import Event, KafkaStub, Message, StreamStub, engine_runtime


@pytest.fixture
def runtime(tmp_path: Path) -> EngineRuntime:
    return engine_runtime(tmp_path, "snap")


def _record(rt: EngineRuntime, event_id: str, type_: str, when: str) -> Event:
    profile = event(type_, when, event_id=event_id, profile_id="p-snap", attributes=ANA)
    key = profile.profile_id.encode()
    topic = rt.topics.profile_events.get_topic_name()
    return Event(Message(topic, key, profile.model_dump_json().encode(), rt._partition_of(key)))


async def test_a_flush_stores_its_own_batch_state_not_the_next_batchs(
    runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = KafkaStub()
    kafka.gate.clear()  # Kafka is slow to acknowledge this batch's effects
    kafka.install(runtime, monkeypatch)
    stored = kafka.stored
    stream = StreamStub()

    first = _record(runtime, "evt-first", "signup", "0s")
    runtime._process_record(first, at("1s"), runtime._pending)  # type: ignore[arg-type]
    runtime._batch.append(first)  # type: ignore[arg-type]
    flushing = asyncio.ensure_future(runtime.flush(stream))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert not flushing.done()  # waiting in step 2

    # The next batch's record for the same profile, processed meanwhile.
    second = _record(runtime, "evt-second", "clicked", "2s")
    runtime._process_record(second, at("3s"), runtime._pending)  # type: ignore[arg-type]
    assert "p-snap" in runtime._pending.states
    kafka.gate.set()
    await flushing

    [(_, key, value)] = stored
    assert key == b"p-snap" and value is not None
    state = orjson.loads(value)["state"]
    assert state["seen_event_ids"] == ["evt-first"]  # not evt-second: its batch is unflushed
    assert runtime.profiles.data[b"p-snap"] == value
    assert stream.acked == [first]

    # The next batch stores both, and its own effects went through its own flush.
    stored.clear()
    runtime._batch.append(second)  # type: ignore[arg-type]
    await runtime.flush(stream)  # type: ignore[arg-type]
    [(_, _, value)] = stored
    assert value is not None
    assert orjson.loads(value)["state"]["seen_event_ids"] == ["evt-first", "evt-second"]
