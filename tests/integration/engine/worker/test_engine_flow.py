"""The engine on the real broker: deploy through the topic, publish events, watch effects.

Given a journey and events, these send requests and step events appear; a worker killed
during a wait fires that wait exactly once after restart; two workers share the work.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.core.loader import parse_journey
from engine.streaming.registry import next_deployment, publish_deployments
from engine.streaming.topics import ensure_topics
from tests.support.builders import profile_event
from tests.support.kafka import (
    Stack,
    Worker,
    collect,
    consumed_to_end,
    produce,
    shared_by,
    stored_profiles,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

WELCOME = """\
id: welcome
name: Welcome
entry: {event: user.signed_up}
start: settle
activities:
  settle: {type: wait, duration: WAIT, next: pick}
  pick:
    type: condition
    branches: [{when: 'profile.language == "es"', next: send-es}]
    else: send-en
  send-es: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  send-en: {type: whatsapp, template: welcome, language: en, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""


async def deploy(stack: Stack, yaml_text: str) -> None:
    settings = stack.settings
    await ensure_topics(settings)
    dep = next_deployment(parse_journey(yaml_text), None)
    assert dep is not None
    await publish_deployments(settings, [dep])


def signup(i: int, lang: str) -> tuple[str, dict[str, Any]]:
    pid = f"p-{i}"
    return pid, profile_event(
        f"signup-{i}",
        "user.signed_up",
        pid,
        attributes={
            "phone": f"+3460011{i:04d}",
            "first_name": f"Name{i}",
            "language": lang,
            "whatsapp_consent": "opted_in",
        },
    )


@pytest.fixture
def stack(kafka_bootstrap: str, unique: str) -> Stack:
    return Stack(kafka_bootstrap, unique)


@pytest.fixture
def workers(tmp_path: Path):
    started: list[Worker] = []

    def make(stack: Stack, name: str = "worker") -> Worker:
        w = Worker(stack, tmp_path, name=name)
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.kill()


def sends_by_id(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["message_id"] for r in records)


async def test_journey_runs_end_to_end(stack: Stack, workers: Any) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "1s"))
    worker = workers(stack)
    await produce(
        stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], [signup(1, "es"), signup(2, "en")]
    )
    # A duplicate of the first event is processed once.
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], [signup(1, "es")])

    sends = await collect(
        stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: len(r) >= 2, 90
    )
    assert worker.alive(), worker.log_text()[-3000:]
    by_profile = {s["profile_id"]: s for s in sends}
    assert set(by_profile) == {"p-1", "p-2"}
    assert by_profile["p-1"]["message_id"] == "welcome:1:p-1:send-es:1"
    assert by_profile["p-1"]["language"] == "es"
    assert by_profile["p-1"]["parameters"]["body"] == ["Name1"]
    assert by_profile["p-2"]["message_id"] == "welcome:1:p-2:send-en:1"
    assert by_profile["p-2"]["to"] == "+34600110002"

    steps = await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "exited") >= 2,
        30,
    )
    exited = {s["profile_id"]: s["reason"] for s in steps if s["kind"] == "exited"}
    assert exited == {"p-1": "completed", "p-2": "completed"}
    entered = [s for s in steps if s["kind"] == "entered"]
    assert len(entered) == 2
    await asyncio.sleep(1.0)
    again = await collect(stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: False, 2)
    assert sends_by_id(again) == Counter(
        {"welcome:1:p-1:send-es:1": 1, "welcome:1:p-2:send-en:1": 1}
    )


async def test_bad_records_go_to_dead_letter_and_the_stream_goes_on(
    stack: Stack, workers: Any
) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "1s"))
    workers(stack)
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    bad_type = profile_event("e-2", "user.signed_up", "p-bad")
    bad_type["occurred_at"] = "yesterday"
    await produce(
        stack.bootstrap,
        topic,
        [
            ("p-x", b"{not json"),
            ("p-bad", bad_type),
            ("p-big", profile_event("e-3", "user.signed_up", "p-big", data={"blob": "x" * 70_000})),
            ("other", profile_event("e-4", "user.signed_up", "p-mismatch")),
            (
                "p-old",
                profile_event("e-5", "user.signed_up", "p-old", occurred_at="2020-01-01T00:00:00Z"),
            ),
            signup(7, "es"),
        ],
    )
    dead = await collect(stack.bootstrap, stack.env["TOPIC_DEAD_LETTER"], lambda r: len(r) >= 5, 90)
    reasons = [d["reason"] for d in dead]
    assert len(dead) == 5, reasons
    assert "malformed JSON" in reasons
    assert any(r.startswith("invalid profile event: occurred_at") for r in reasons), reasons
    assert any(r.startswith("event too large") for r in reasons), reasons
    assert "record key does not match profile_id" in reasons
    assert any(
        r.startswith("event 'e-5' occurred at 2020-01-01") and "more than 91d before" in r
        for r in reasons
    ), reasons
    assert any(d["reason"] == "malformed JSON" and d["value_text"] == "{not json" for d in dead)
    sends = await collect(
        stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: len(r) >= 1, 60
    )
    assert [s["profile_id"] for s in sends] == ["p-7"]


async def test_wait_survives_a_killed_worker_and_fires_once(stack: Stack, workers: Any) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "6s"))
    first = workers(stack, "first")
    await produce(
        stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], [signup(i, "es") for i in range(20)]
    )
    steps = await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "entered") >= 20,
        90,
    )
    assert sum(1 for s in steps if s["kind"] == "entered") == 20
    # Kill once the waiting states are in the changelog: the second worker restores them.
    await stored_profiles(stack, [f"p-{i}" for i in range(20)], 60, watch=[first])
    first.kill(signal.SIGKILL)
    workers(stack, "second")
    sends = await collect(
        stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: len(r) >= 20, 120
    )
    await asyncio.sleep(2)
    sends = await collect(stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: False, 2)
    counts = sends_by_id(sends)
    assert len(counts) == 20
    assert set(counts.values()) == {1}, counts


async def test_two_workers_share_partitions_and_one_stopping_loses_nothing(
    stack: Stack, workers: Any
) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "8s"))
    a = workers(stack, "a")
    b = workers(stack, "b")
    await wait_until(
        lambda: shared_by(a, b, stack.partitions),
        60,
        what="a and b sharing the partitions",
        watch=[a, b],
    )
    await produce(
        stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], [signup(i, "en") for i in range(40)]
    )
    await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "entered") >= 40,
        90,
    )
    await stored_profiles(stack, [f"p-{i}" for i in range(40)], 60, watch=[a, b])
    b.stop()
    sends = await collect(
        stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: len(r) >= 40, 120
    )
    assert a.alive(), a.log_text()[-3000:]
    counts = sends_by_id(sends)
    assert len(counts) == 40
    assert max(counts.values()) == 1


async def set_status(stack: Stack, journey_id: str, status: str) -> None:
    from engine.streaming.registry import read_deployments, with_status

    current = await read_deployments(stack.settings)
    await publish_deployments(stack.settings, [with_status(current[journey_id], status)])  # type: ignore[arg-type]


async def test_archive_ends_waiting_instances_and_pause_admits_nobody(
    stack: Stack, workers: Any
) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "1h"))
    worker = workers(stack)
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    await produce(stack.bootstrap, topic, [signup(i, "es") for i in range(5)])
    await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "entered") >= 5,
        60,
        watch=[worker],
    )
    await set_status(stack, "welcome", "paused")
    await wait_until(lambda: worker.applied("welcome", status="paused"), 30, watch=[worker])
    await produce(stack.bootstrap, topic, [signup(i, "es") for i in range(5, 8)])
    await wait_until(
        lambda: consumed_to_end(stack.bootstrap, stack.env["APP_ID"], topic),
        60,
        what="the worker taking the sign-ups sent while paused",
        interval=0.5,
        watch=[worker],
    )
    await set_status(stack, "welcome", "archived")
    steps = await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "exited") >= 5,
        30,
        watch=[worker],
    )
    entered = sorted(s["profile_id"] for s in steps if s["kind"] == "entered")
    assert entered == [f"p-{i}" for i in range(5)]  # nobody entered while paused
    exits = {s["profile_id"]: s["reason"] for s in steps if s["kind"] == "exited"}
    assert exits == {f"p-{i}": "archived" for i in range(5)}


async def test_live_instances_keep_their_version(stack: Stack, workers: Any) -> None:
    await deploy(stack, WELCOME.replace("WAIT", "4s"))
    worker = workers(stack)
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    await produce(stack.bootstrap, topic, [signup(1, "es")])
    await collect(
        stack.bootstrap, stack.env["TOPIC_JOURNEY_STEPS"], lambda r: len(r) >= 1, 60, watch=[worker]
    )
    v2 = WELCOME.replace("WAIT", "1s").replace(
        "template: welcome, language: es", "template: cart_reminder, language: es"
    )
    from engine.streaming.registry import read_deployments

    current = await read_deployments(stack.settings)
    dep = next_deployment(parse_journey(v2), current["welcome"])
    assert dep is not None and dep.version == 2
    await publish_deployments(stack.settings, [dep])
    await wait_until(lambda: worker.applied("welcome", version=2), 30, watch=[worker])
    await produce(stack.bootstrap, topic, [signup(2, "es")])
    sends = await collect(
        stack.bootstrap,
        stack.env["TOPIC_WHATSAPP_REQUESTS"],
        lambda r: len(r) >= 2,
        60,
        watch=[worker],
    )
    by_profile = {s["profile_id"]: (s["message_id"], s["template"]) for s in sends}
    assert by_profile == {
        "p-1": ("welcome:1:p-1:send-es:1", "welcome"),
        "p-2": ("welcome:2:p-2:send-es:1", "cart_reminder"),
    }


async def test_rocksdb_store_survives_a_restart(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = Stack(kafka_bootstrap, unique, extra={"STORE": "rocksdb://"})
    await deploy(stack, WELCOME.replace("WAIT", "5s"))
    first = workers(stack, "rocks")
    await produce(
        stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], [signup(i, "en") for i in range(10)]
    )
    await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda r: sum(1 for s in r if s["kind"] == "entered") >= 10,
        60,
        watch=[first],
    )
    await stored_profiles(stack, [f"p-{i}" for i in range(10)], 60, watch=[first])
    first.stop()
    again = workers(stack, "rocks")  # same data dir: the RocksDB files are reused
    sends = await collect(
        stack.bootstrap,
        stack.env["TOPIC_WHATSAPP_REQUESTS"],
        lambda r: len(r) >= 10,
        90,
        watch=[again],
    )
    assert sorted(sends_by_id(sends).values()) == [1] * 10
    assert list((again.data_dir).rglob("*.sst")) or list((again.data_dir).rglob("CURRENT"))
