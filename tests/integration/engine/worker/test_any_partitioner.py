"""Any client's partitioner drives a journey: records on another partition than their key's
murmur2 one are moved there by the engine (the repartition topic) and processed in order.

Each test publishes, per profile, a signup and then an abandoned cart, with one kind of
producer, and checks what the WhatsApp sandbox received: the welcome and the reminder,
once each, for every profile. The reminder only comes if the cart event is processed
after the signup (the instance waits for it), so a profile's order is checked too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from schemas.partitioning import murmur2
from tests.integration.conftest import APP_SECRET, PHONE_NUMBER_ID, TOKEN, SandboxServer
from tests.integration.engine.worker.test_engine_flow import deploy
from tests.support.builders import profile_event
from tests.support.kafka import Stack, Worker, collect, produce

pytestmark = pytest.mark.integration

PARTITIONS = 4
PROFILES = 12

JOURNEY = """\
id: signup-cart
name: Signup then cart
entry: {event: user.signed_up}
start: welcome
activities:
  welcome:
    type: whatsapp
    template: welcome
    language: es
    parameters: {body: ['profile.first_name']}
    next: wait-cart
  wait-cart: {type: wait_for_event, event: cart.abandoned, timeout: 2m, next: remind, on_timeout: done}
  remind:
    type: whatsapp
    template: cart_reminder
    language: es
    parameters: {body: ['profile.first_name', '"20 EUR"']}
    next: done
  done: {type: end}
"""


def phone(i: int) -> str:
    return f"+3460033{i:04d}"


def events() -> list[tuple[str, bytes]]:
    """(profile id, value): every profile's signup, then every profile's cart."""
    out: list[tuple[str, bytes]] = []
    for i in range(PROFILES):
        attributes = {
            "phone": phone(i),
            "first_name": f"Name{i}",
            "language": "es",
            "whatsapp_consent": "opted_in",
        }
        signup = profile_event(f"signup-{i}", "user.signed_up", f"p-{i}", attributes=attributes)
        out.append((f"p-{i}", orjson.dumps(signup)))
    for i in range(PROFILES):
        cart = profile_event(f"cart-{i}", "cart.abandoned", f"p-{i}", data={"total": 20})
        out.append((f"p-{i}", orjson.dumps(cart)))
    return out


def murmur2_partition(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def sandbox_stack(bootstrap: str, unique: str, sandbox: SandboxServer) -> Stack:
    """The test's topics, and a connector that sends to `sandbox`."""
    return Stack(
        bootstrap,
        unique,
        PARTITIONS,
        extra={
            "WHATSAPP_API_URL": sandbox.url,
            "WHATSAPP_TOKEN": TOKEN,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_RATE_PER_SECOND": "1000",
            "TOPIC_CAMPAIGN_RUNS": f"campaign-runs-{unique}",
            # A killed worker's partitions move once its session expires: keep that short.
            "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        },
    )


@pytest.fixture
def journey_stack(
    kafka_bootstrap: str, unique: str, tmp_path: Path, start_sandbox: Any
) -> Iterator[Any]:
    """An async factory: deploys the journey, starts the sandbox and one worker (all roles)."""
    started: list[Worker] = []

    async def start() -> tuple[Stack, SandboxServer, Worker]:
        sandbox: SandboxServer = await start_sandbox()
        stack = sandbox_stack(kafka_bootstrap, unique, sandbox)
        await deploy(stack, JOURNEY)
        worker = Worker(stack, tmp_path, role="all").start()
        started.append(worker)
        return stack, sandbox, worker

    yield start
    for worker in started:
        worker.kill()
        print(f"--- worker log (last lines) ---\n{worker.log_text()[-3000:]}")


async def sandbox_received_everything(sandbox: SandboxServer, worker: Worker) -> None:
    """Each profile got the welcome and the reminder once, and nothing else came. The
    reminder shows the order: it is sent only if the cart event was processed while the
    instance waited for it, after the signup. (The connector may have both calls in
    flight at once, so the sandbox's order of the two says nothing.)"""
    deadline = time.monotonic() + 120
    while len(sandbox.state.messages) < 2 * PROFILES and time.monotonic() < deadline:
        assert worker.alive(), worker.log_text()[-3000:]
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # anything sent twice would arrive now
    by_phone: dict[str, list[str]] = {}
    for message in sandbox.state.messages:
        by_phone.setdefault(message.to, []).append(str(message.template))
    assert {to: sorted(templates) for to, templates in by_phone.items()} == {
        phone(i): ["cart_reminder", "welcome"] for i in range(PROFILES)
    }


async def repartitioned(stack: Stack, expected: int) -> list[dict[str, Any]]:
    moved = await collect(
        stack.bootstrap,
        f"{stack.env['TOPIC_PROFILE_EVENTS']}-repartition",
        lambda r: len(r) >= expected,
        30 if expected else 3,
    )
    assert len(moved) == expected
    return moved


async def test_confluent_kafka_at_default_settings(journey_stack: Any) -> None:
    stack, sandbox, worker = await journey_stack()
    producer = Producer({"bootstrap.servers": stack.bootstrap})  # partitioner: consistent_random
    landed: list[tuple[str, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        landed.append((msg.key().decode(), msg.partition()))

    for key, value in events():
        producer.produce(stack.env["TOPIC_PROFILE_EVENTS"], value, key, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert len(landed) == 2 * PROFILES
    # librdkafka's CRC32 puts most keys elsewhere than murmur2 does, each key always on one.
    hops = sum(1 for key, partition in landed if partition != murmur2_partition(key))
    assert hops > 0
    assert len({(k, p) for k, p in landed}) == PROFILES
    await sandbox_received_everything(sandbox, worker)
    await repartitioned(stack, hops)


async def test_a_producer_writing_every_record_to_partition_0(journey_stack: Any) -> None:
    stack, sandbox, worker = await journey_stack()
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key.encode(), partition=0)
            for key, value in events()
        ]
        # Still dead letters, on partition 0 as well: no key, and a key that is not the id.
        stray = orjson.dumps(profile_event("stray-1", "user.signed_up", "p-stray"))
        futures.append(await producer.send(topic, stray, key=None, partition=0))
        futures.append(await producer.send(topic, stray, key=b"someone-else", partition=0))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await sandbox_received_everything(sandbox, worker)
    hops = sum(1 for key, _ in events() if murmur2_partition(key) != 0)
    moved = await repartitioned(stack, hops)
    assert {e["profile_id"] for e in moved} == {
        f"p-{i}" for i in range(PROFILES) if murmur2_partition(f"p-{i}") != 0
    }
    dead = await collect(stack.bootstrap, stack.env["TOPIC_DEAD_LETTER"], lambda r: len(r) >= 2, 30)
    assert sorted(d["reason"] for d in dead) == [
        "record has no key: profile events are keyed by profile id",
        "record key does not match profile_id",
    ]


async def test_aiokafka_with_its_default_partitioner(journey_stack: Any) -> None:
    stack, sandbox, worker = await journey_stack()
    records = [(key, value) for key, value in events()]
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)
    await sandbox_received_everything(sandbox, worker)
    await repartitioned(stack, 0)  # murmur2 already: nothing moved


REENTERED = """\
id: entered
name: Entered
entry: {event: user.signed_up}
reentry: {mode: always}
start: welcome
activities:
  welcome: {type: whatsapp, template: welcome, language: es, parameters: {body: [profile.first_name]}, next: done}
  done: {type: end}
"""


async def test_an_engine_killed_mid_hop_sends_each_message_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path, start_sandbox: Any
) -> None:
    """Re-entry is allowed, so an event processed twice would send a second message (its
    visit number, in the message id, is 2); a re-read after the kill sends visit 1 again,
    which the connector drops. The connector runs in a worker of its own, not killed."""
    sandbox: SandboxServer = await start_sandbox()
    stack = sandbox_stack(kafka_bootstrap, unique, sandbox)
    await deploy(stack, REENTERED)
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    count = 1500
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            attributes = {"phone": phone(i), "first_name": f"N{i}", "whatsapp_consent": "opted_in"}
            event = profile_event(f"e-{i}", "user.signed_up", f"p-{i}", attributes=attributes)
            futures.append(
                await producer.send(topic, orjson.dumps(event), key=f"p-{i}".encode(), partition=0)
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    connector = Worker(stack, tmp_path, role="whatsapp", name="connector").start()
    first = Worker(stack, tmp_path, role="engine", name="first").start()
    second: Worker | None = None
    try:
        deadline = time.monotonic() + 120
        while len(sandbox.state.messages) < 100 and time.monotonic() < deadline:
            assert first.alive(), first.log_text()[-3000:]
            await asyncio.sleep(0.02)
        first.kill()  # partition 0 partly moved, the moved records partly processed
        second = Worker(stack, tmp_path, role="engine", name="second").start()
        deadline = time.monotonic() + 180
        while len(sandbox.state.messages) < count and time.monotonic() < deadline:
            assert second.alive() and connector.alive(), second.log_text()[-3000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # a message sent twice would arrive now
        sent = [m.to for m in sandbox.state.messages]
        assert len(sent) == count and len(set(sent)) == count
        assert all(mid.endswith(":1") for mid in sandbox.message_ids())
    finally:
        for worker in (first, second, connector):
            if worker is not None:
                worker.kill()
