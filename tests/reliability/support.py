"""The reliability tests' harness: journeys and event streams, topic tails, the sandbox, RSS.

Workers are real `journeyctl worker` subprocesses (tests.support.kafka.Worker); the WhatsApp
sandbox runs in the test's event loop on an ephemeral loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from connectors.whatsapp.sandbox import SandboxState, Template
from engine.core.loader import parse_journey
from engine.streaming.registry import next_deployment, publish_deployments
from engine.streaming.topics import ensure_topics
from engine.worker.batch import BATCH_MAX as ENGINE_BATCH_MAX
from engine.worker.ticks import DUE_TICK_MAX
from schemas.settings import Settings
from tests.support.builders import now_iso, phone, profile_event
from tests.support.journeys import cart_recovery
from tests.support.kafka import ROOT, Stack, Worker

# Fake secrets with shapes no other string in a log could have, so a grep finds any leak.
TOKEN = "EAAGreliabilityTOKEN7f3a9c1e5b2d"
APP_SECRET = "reliability-app-secret-5b2d90e4"
VERIFY_TOKEN = "reliability-verify-token-a81c"
PHONE_NUMBER_ID = "100000000000001"

TEMPLATES = (
    Template(name="welcome", language="es", category="utility", body="¡Hola {{1}}! Bienvenida."),
    Template(
        name="cart_reminder",
        language="es",
        category="marketing",
        body="Hola {{1}}, tu carrito de {{2}} € te espera.",
    ),
)

# Signed up: wait, then one welcome message.
WELCOME = """\
id: welcome
name: Welcome
entry: {event: user.signed_up}
start: settle
activities:
  settle: {type: wait, duration: WAIT, next: send}
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""


def signup(i: int, prefix: str = "p") -> tuple[str, dict[str, Any]]:
    pid = f"{prefix}-{i}"
    attributes = {
        "phone": phone(i),
        "first_name": f"Name{i}",
        "language": "es",
        "whatsapp_consent": "opted_in",
    }
    return pid, profile_event(f"{pid}:signup", "user.signed_up", pid, attributes=attributes)


@dataclass(frozen=True)
class Expected:
    """What a stream of profile events implies once every journey has run."""

    exits: dict[str, str]  # instance id -> exit reason
    messages: frozenset[str]  # message ids that must reach the sandbox once
    waits: frozenset[tuple[str, str]]  # (instance id, wait activity) that must fire once


def four_events_per_profile(
    profiles: int, prefix: str = "p", start: int = 0
) -> tuple[list[tuple[str, dict[str, Any]]], Expected]:
    """Per profile: sign-up, abandoned cart, a page view and the sign-up published again.

    Every even profile's cart is worth 42.5 (it enters the cart journey: a wait, then a
    reminder), every odd one's 12.5 (below the entry condition: no instance); the page view
    has no journey (processed, ignored) and the repeated sign-up is a duplicate.
    """
    records: list[tuple[str, dict[str, Any]]] = []
    exits: dict[str, str] = {}
    messages: set[str] = set()
    waits: set[tuple[str, str]] = set()
    for i in range(start, start + profiles):
        pid, first = signup(i, prefix)
        total = 42.5 if i % 2 == 0 else 12.5
        records += [
            (pid, first),
            (pid, profile_event(f"{pid}:cart", "cart.abandoned", pid, data={"cart_total": total})),
            (pid, profile_event(f"{pid}:view", "page.viewed", pid, data={"url": "/shoes"})),
            (pid, first),
        ]
        welcome = f"welcome:1:{pid}:1"
        exits[welcome] = "completed"
        messages.add(f"welcome:1:{pid}:send:1")
        waits.add((welcome, "settle"))
        if total > 20:
            cart = f"cart:1:{pid}:1"
            exits[cart] = "completed"
            messages.add(f"cart:1:{pid}:send-es:1")
            waits.add((cart, "wait"))
    return records, Expected(exits, frozenset(messages), frozenset(waits))


async def deploy(stack: Stack, *yaml_texts: str) -> None:
    settings = stack.settings
    await ensure_topics(settings)
    deployments = []
    for text in yaml_texts:
        dep = next_deployment(parse_journey(text), None)
        assert dep is not None
        deployments.append(dep)
    await publish_deployments(settings, deployments)


def partition_of(key: str, partitions: int) -> int:
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def report(name: str, **figures: Any) -> None:
    """Print a measured figure (pytest -s shows it); also append it to $RELIABILITY_RESULTS."""
    line = {"test": name, "at": now_iso(), **figures}
    print(f"\nRELIABILITY {json.dumps(line)}")
    target = os.environ.get("RELIABILITY_RESULTS")
    if target:
        with Path(target).open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


# --- reading topics ----------------------------------------------------------------


class WorkerDied(AssertionError):
    pass


def check_alive(workers: Iterable[Worker]) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is not None and w.proc.returncode != -9:
            raise WorkerDied(f"worker exited ({w.proc.returncode}):\n{w.log_text()[-4000:]}")


@dataclass
class Record:
    partition: int
    offset: int
    key: str | None
    value: dict[str, Any]


@dataclass
class TopicTail:
    """Everything a topic holds, read from the beginning and kept up to date by `poll`."""

    consumer: AIOKafkaConsumer
    topic: str
    records: list[Record] = field(default_factory=list)

    async def poll(self, timeout_ms: int = 200) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=20_000)
        for batch in batches.values():
            for r in batch:
                if r.value is None:
                    continue
                key = r.key.decode("utf-8", "replace") if r.key is not None else None
                self.records.append(Record(r.partition, r.offset, key, orjson.loads(r.value)))

    def values(self) -> list[dict[str, Any]]:
        return [r.value for r in self.records]

    async def until(
        self,
        done: Callable[[TopicTail], bool],
        *,
        seconds: float,
        watch: Iterable[Worker] = (),
        what: str = "",
    ) -> None:
        """Poll until `done(self)` holds; fail with the last records when the time is up."""
        watched = list(watch)
        deadline = time.monotonic() + seconds
        while not done(self):
            check_alive(watched)
            if time.monotonic() > deadline:
                tail = [r.value for r in self.records[-5:]]
                raise AssertionError(
                    f"{self.topic}: {what or 'condition'} not met in {seconds:.0f}s "
                    f"({len(self.records)} records; last: {tail})"
                )
            await self.poll()

    async def settle(self, seconds: float) -> None:
        """Keep reading for `seconds`, to show that nothing more arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.poll(100)


async def topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["partitions"], f"topic {topic} does not exist"
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def open_tail(bootstrap: str, topic: str) -> TopicTail:
    tps = await topic_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A broker restart in the middle of a test must not end the reader.
        request_timeout_ms=60_000,
    )
    await consumer.start()
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return TopicTail(consumer, topic)


# --- journey-steps bookkeeping -------------------------------------------------------


def exits_of(steps: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {s["instance_id"]: s["reason"] for s in steps if s["kind"] == "exited"}


def count_exits(tail: TopicTail) -> int:
    return len({r.value["instance_id"] for r in tail.records if r.value["kind"] == "exited"})


def step_counts(steps: Sequence[dict[str, Any]]) -> Counter[tuple[str, str, str | None]]:
    """How often each (instance, kind, activity) step event appears: more than 1 is a repeat."""
    return Counter((s["instance_id"], s["kind"], s.get("activity_id")) for s in steps)


def wait_firings(
    steps: Sequence[dict[str, Any]], waits: Iterable[tuple[str, str]]
) -> Counter[tuple[str, str]]:
    wanted = set(waits)
    return Counter(
        (s["instance_id"], s["activity_id"])
        for s in steps
        if s["kind"] == "activity" and (s["instance_id"], s["activity_id"]) in wanted
    )


# --- the sandbox -------------------------------------------------------------------


@dataclass
class Sandbox:
    """The WhatsApp Cloud API sandbox, in this event loop, on an ephemeral loopback port."""

    url: str
    state: SandboxState
    http: httpx.AsyncClient
    _seen: int = 0
    _ids: Counter[str] = field(default_factory=Counter)

    def accepted_ids(self) -> Counter[str]:
        """Message ids of every accepted message (from biz_opaque_callback_data), counted."""
        messages = self.state.messages
        for m in messages[self._seen :]:
            if m.biz_opaque_callback_data:
                self._ids[orjson.loads(m.biz_opaque_callback_data)["message_id"]] += 1
        self._seen = len(messages)
        return self._ids

    async def listed_ids(self) -> Counter[str]:
        """The same count, through the public GET /sandbox/messages."""
        response = await self.http.get("/sandbox/messages", timeout=60)
        response.raise_for_status()
        return Counter(
            orjson.loads(m["biz_opaque_callback_data"])["message_id"]
            for m in response.json()
            if m["biz_opaque_callback_data"]
        )

    async def fault(self, **body: Any) -> None:
        response = await self.http.post("/sandbox/faults", json=body)
        assert response.status_code == 200, response.text

    async def wait_count(self, count: int, *, seconds: float, watch: Iterable[Worker] = ()) -> None:
        """Wait until `count` distinct message ids were accepted."""
        watched = list(watch)
        deadline = time.monotonic() + seconds
        while len(self.accepted_ids()) < count:
            check_alive(watched)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {len(self.accepted_ids())} of {count} messages in {seconds:.0f}s"
                )
            await asyncio.sleep(0.02)

    async def wait_for(
        self,
        expected: Iterable[str],
        *,
        seconds: float,
        watch: Iterable[Worker] = (),
    ) -> None:
        wanted = set(expected)
        watched = list(watch)
        deadline = time.monotonic() + seconds
        while not wanted <= self.accepted_ids().keys():
            check_alive(watched)
            if time.monotonic() > deadline:
                missing = wanted - self.accepted_ids().keys()
                raise AssertionError(
                    f"{len(missing)} of {len(wanted)} messages never reached the sandbox "
                    f"in {seconds:.0f}s, e.g. {sorted(missing)[:5]}"
                )
            await asyncio.sleep(0.1)


def duplicates(ids: Counter[str]) -> dict[str, int]:
    return {mid: n for mid, n in ids.items() if n > 1}


# --- worker processes --------------------------------------------------------------


def reliability_stack(
    bootstrap: str, unique: str, env: dict[str, str], *, partitions: int = 4
) -> Stack:
    """A private set of topics and an app id, with the WhatsApp settings every test shares;
    `env` adds or overrides variables (WHATSAPP_API_URL, ...)."""
    return Stack(
        bootstrap,
        unique,
        partitions,
        extra={
            "TOPIC_HTTP_REQUESTS": f"http-requests-{unique}",
            "WHATSAPP_TOKEN": TOKEN,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_RATE_PER_SECOND": "1000",
            "WHATSAPP_TIMEOUT_SECONDS": "5",
            # A dead worker's partitions move once its session expires: keep that short.
            "KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            **env,
        },
    )


class RssSampler:
    """Samples a process's resident set size (VmRSS in /proc/<pid>/status) in the background."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []  # (monotonic, KiB)
        self._task: asyncio.Task[None] | None = None

    def read_kib(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    async def _run(self) -> None:
        while True:
            kib = self.read_kib()
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            await asyncio.sleep(self.every)

    def start(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time the process has used so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def peak_mib(self) -> float:
        return max(kib for _, kib in self.samples) / 1024

    def mib_at(self, since: float) -> float:
        """The first sample taken at or after `since` (monotonic)."""
        return next(kib for t, kib in self.samples if t >= since) / 1024


# --- the broker --------------------------------------------------------------------


@dataclass
class LocalBroker:
    """The broker deploy/kafka/start runs for this port; stop and start it on the same data."""

    port: int
    controller_port: int

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_WIPE": "0",
        }

    @property
    def started_by_script(self) -> bool:
        return (ROOT / ".kafka" / f"kafka-{self.port}.pid").exists()

    def stop(self) -> None:
        subprocess.run(
            [str(ROOT / "deploy/kafka/stop")],
            env=self.env,
            check=True,
            timeout=120,
            capture_output=True,
        )

    def start(self) -> None:
        subprocess.run(
            [str(ROOT / "deploy/kafka/start")],
            env=self.env,
            check=True,
            timeout=180,
            capture_output=True,
        )


# --- runs with crashes: what they left behind ------------------------------------


@dataclass
class Outcome:
    """What a run left behind, measured before anything is asserted."""

    steps: list[dict[str, Any]]
    sent: Counter[str]
    seconds: float

    def figures(self, expected: Expected) -> dict[str, Any]:
        repeated_steps = {k: n for k, n in step_counts(self.steps).items() if n > 1}
        fired = wait_firings(self.steps, expected.waits)
        return {
            "instances": len(expected.exits),
            "messages_expected": len(expected.messages),
            "messages_distinct": len(self.sent),
            "messages_missing": len(expected.messages - self.sent.keys()),
            "duplicate_sends": sum(n - 1 for n in self.sent.values()),
            "duplicate_ids": sorted(duplicates(self.sent))[:10],
            "redelivered_step_events": sum(n - 1 for n in repeated_steps.values()),
            "redelivered_step_kinds": dict(Counter(k[1] for k in repeated_steps)),
            "waits_redelivered": sum(1 for n in fired.values() if n > 1),
            "steps_that_differ": len(differing_steps(self.steps)),
            "seconds": round(self.seconds, 1),
        }

    def check(self, expected: Expected, kills: int) -> None:
        """The targets: every instance ends as its events imply, every message reaches the
        sandbox exactly once, every wait fires, and no step ever happens twice.

        "Happens twice" is judged on what a step did, not on how often its record was
        delivered. The engine is at-least-once with idempotent effects (RELIABILITY.md): a
        kill between a batch's effects reaching Kafka and its states reaching the changelog
        re-runs that batch from the same stored state after the restart, which publishes
        the same step records again. So copies must be the same step (same outcome,
        detail, reason and triggering event), their effects must not repeat (the message
        goes out once), and there can be at most one batch of them per kill.
        """
        exits = exits_of(self.steps)
        wrong = {
            i: (exits.get(i), want) for i, want in expected.exits.items() if exits.get(i) != want
        }
        assert not wrong, (
            f"{len(wrong)} instances did not end as expected, e.g. {list(wrong.items())[:5]}"
        )
        assert exits.keys() == expected.exits.keys(), "instances nobody asked for"
        assert self.sent.keys() == expected.messages, "messages lost or unexpected"
        assert not duplicates(self.sent), (
            f"{sum(n - 1 for n in self.sent.values())} messages reached the sandbox twice: "
            f"{sorted(duplicates(self.sent))[:10]}"
        )
        fired = wait_firings(self.steps, expected.waits)
        assert fired.keys() == expected.waits, "a wait never fired"
        differ = differing_steps(self.steps)
        assert not differ, f"{len(differ)} steps happened twice, differently: {differ[:3]}"
        redelivered = sum(1 for n in fired.values() if n > 1)
        # A batch changes fewer than BATCH_MAX + DUE_TICK_MAX profiles (engine/worker/batch.py).
        assert redelivered <= (ENGINE_BATCH_MAX + DUE_TICK_MAX - 1) * kills, (
            f"{redelivered} waits' records delivered twice: more than one batch per kill"
        )


def differing_steps(steps: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Groups of step records of one (instance, kind, activity) that are not the same step."""
    groups: dict[tuple[str, str, str | None], list[dict[str, Any]]] = {}
    for s in steps:
        groups.setdefault((s["instance_id"], s["kind"], s.get("activity_id")), []).append(s)
    what = ("outcome", "detail", "reason", "event_id", "activity_type", "journey_version", "seq")
    return [
        records
        for records in groups.values()
        if len(records) > 1 and len({tuple(r.get(f) for f in what) for r in records}) > 1
    ]


async def finish(
    steps: TopicTail,
    sandbox: Sandbox,
    expected: Expected,
    watch: list[Worker],
    started: float,
    seconds: float = 150,
) -> Outcome:
    """Wait until every instance has ended and every message arrived; then a little longer."""
    await steps.until(
        lambda t: count_exits(t) >= len(expected.exits),
        seconds=seconds,
        watch=watch,
        what="every instance exited",
    )
    await sandbox.wait_for(expected.messages, seconds=60, watch=watch)
    elapsed = time.monotonic() - started
    await steps.settle(3.0)  # anything repeated late would show up now
    return Outcome(steps.values(), await sandbox.listed_ids(), elapsed)


def arrivals(sandbox: Sandbox) -> dict[str, list[float]]:
    """When each copy of each message reached the sandbox (epoch seconds)."""
    out: dict[str, list[float]] = {}
    for m in sandbox.state.messages:
        if m.biz_opaque_callback_data:
            mid = orjson.loads(m.biz_opaque_callback_data)["message_id"]
            out.setdefault(mid, []).append(m.received_at)
    return out


def duplicates_by_kill(sandbox: Sandbox, kills: list[float]) -> dict[str, Any]:
    """Each duplicate belongs to the kill nearest its first copy. How far from that kill the
    first copies were accepted shows the window: before it, the call was answered but the
    accepted-ids record had not reached Kafka; after it, the call was in flight when the
    worker died and the server completed it anyway."""
    per_kill = [0] * len(kills)
    offsets: list[float] = []
    for times in arrivals(sandbox).values():
        if len(times) < 2:
            continue
        first = min(times)
        k = min(range(len(kills)), key=lambda i: abs(kills[i] - first))
        per_kill[k] += len(times) - 1
        offsets.append(first - kills[k])
    return {
        "duplicate_sends_per_kill": per_kill,
        "first_copies_ms_from_kill": (
            [round(min(offsets) * 1000), round(max(offsets) * 1000)] if offsets else None
        ),
        "first_copies_after_kill": sum(1 for o in offsets if o > 0),
    }


def first_send_after(sandbox: Sandbox, moment: float) -> float:
    """Seconds from `moment` to the first message the sandbox accepted after it."""
    times = [m.received_at for m in sandbox.state.messages if m.received_at > moment]
    return round(min(times) - moment, 2) if times else float("nan")


def first_after(steps: TopicTail, moment: float, partitions: set[int] | None = None) -> float:
    """Seconds from `moment` (epoch) to the first step event the engine made after it."""
    times = [
        parse_time(r.value["occurred_at"])
        for r in steps.records
        if (partitions is None or r.partition in partitions)
        and parse_time(r.value["occurred_at"]) > moment
    ]
    return round(min(times) - moment, 2) if times else float("nan")


async def journeys_with_waits(
    kafka_bootstrap: str,
    unique: str,
    start_sandbox: Callable[..., Awaitable[Sandbox]],
    profiles: int,
    *,
    start_receiver: Callable[[Settings], Awaitable[str]] | None = None,
    **extra: str,
) -> tuple[Stack, Sandbox, list[tuple[str, dict[str, Any]]], Expected]:
    """The sandbox, a stack pointing at it, both journeys deployed, and the events to send.

    With `start_receiver`, a webhook receiver (its own process in production, here in the
    test's) gets the sandbox's signed status webhooks, as Meta's reach ours."""
    sandbox = await start_sandbox()
    stack = reliability_stack(kafka_bootstrap, unique, {"WHATSAPP_API_URL": sandbox.url, **extra})
    await deploy(stack, WELCOME.replace("WAIT", "3s"), cart_recovery("cart", wait="2s"))
    if start_receiver is not None:
        url = await start_receiver(stack.settings)
        sandbox.state.config = sandbox.state.config.model_copy(update={"webhook_url": url})
    records, expected = four_events_per_profile(profiles)
    return stack, sandbox, records, expected
