"""Helpers for tests on the real broker: unique topic sets, worker processes, producing and
consuming JSON, and what a worker has done (its log, its changelog, its committed offsets)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """One test's private set of topics and app id, as environment variables and Settings."""

    bootstrap: str
    unique: str
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        u = self.unique
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": f"engine-{u}",
            "TOPIC_PROFILE_EVENTS": f"profile-events-{u}",
            "TOPIC_PROFILE_EVENTS_REPARTITION": f"profile-events-{u}-repartition",
            "TOPIC_JOURNEY_DEFINITIONS": f"journey-definitions-{u}",
            "TOPIC_WHATSAPP_REQUESTS": f"whatsapp-requests-{u}",
            "TOPIC_DELIVERY_EVENTS": f"delivery-events-{u}",
            "TOPIC_JOURNEY_STEPS": f"journey-steps-{u}",
            "TOPIC_DEAD_LETTER": f"dead-letter-{u}",
            "TOPIC_TIMERS": f"journey-timers-{u}",
            "TOPIC_PROFILE_PHONES": f"profile-phones-{u}",
            "TOPIC_HTTP_REQUESTS": f"http-requests-{u}",
            "TOPIC_PARTITIONS": str(self.partitions),
            "TIMER_SCAN_INTERVAL_SECONDS": "0.1",
            "LOG_FORMAT": "json",
            **self.extra,
        }

    @property
    def settings(self) -> Settings:
        values: Any = {k.lower(): v for k, v in self.env.items()}
        return Settings(**values)


class Worker:
    """`journeyctl worker` in a subprocess, with its output in a log file."""

    def __init__(
        self, stack: Stack, log_dir: Path, role: str = "engine", name: str = "worker"
    ) -> None:
        self.stack, self.role = stack, role
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir = log_dir / f"{name}-data"

    def start(self) -> Worker:
        env = {
            **os.environ,
            **self.stack.env,
            "DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--role", self.role, "--no-web"],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The worker's JSON log records of `event` (LOG_FORMAT=json), oldest first."""
        marker = f'"{event}"'
        return [
            orjson.loads(line[line.index("{") :])
            for line in self.log_text().splitlines()
            if marker in line and "{" in line
        ]

    def owned_partitions(self) -> set[int]:
        """The engine partitions the worker owned after its last rebalance (from its log)."""
        rebuilt = self.logged("timer index rebuilt")
        return set(rebuilt[-1]["partitions"]) if rebuilt else set()

    def applied(
        self, journey_id: str, version: int | None = None, status: str | None = None
    ) -> bool:
        """Whether the worker has applied that journey definition (version, status)."""
        return any(
            r["journey_id"] == journey_id
            and (version is None or r["version"] == version)
            and (status is None or r["status"] == status)
            for r in self.logged("journey definition applied")
        )


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[str | None, Any]]) -> None:
    """Send (key, value) pairs; dict values are JSON, bytes go as they are."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = []
        for key, value in records:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(
                await producer.send(topic, raw, key=key.encode() if key is not None else None)
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60.0,
    watch: Iterable[Worker] = (),
) -> list[dict[str, Any]]:
    """Read a topic from the beginning until `until(records)` holds or the time is up.

    A watched worker that dies ends the wait at once with its log in the error.
    """
    watched = list(watch)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            for w in watched:
                if w.proc is not None and w.proc.poll() is not None and w.proc.returncode != -9:
                    raise AssertionError(
                        f"worker exited ({w.proc.returncode}):\n{w.log_text()[-4000:]}"
                    )
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend(orjson.loads(r.value) for r in records if r.value)
    finally:
        await consumer.stop()
    return out


def shared_by(a: Worker, b: Worker, partitions: int) -> bool:
    """Whether the last assignments of `a` and `b` split all `partitions` between them."""
    owned_a, owned_b = a.owned_partitions(), b.owned_partitions()
    return (
        bool(owned_a and owned_b)
        and not owned_a & owned_b
        and owned_a | owned_b == set(range(partitions))
    )


async def stored_profiles(
    stack: Stack, profile_ids: Iterable[str], timeout: float = 60.0, watch: Iterable[Worker] = ()
) -> None:
    """Wait until the engine's changelog holds a state for every one of `profile_ids`."""
    wanted = set(profile_ids)
    topic = f"{stack.env['APP_ID']}-profiles-changelog"
    records = await collect(
        stack.bootstrap,
        topic,
        lambda r: wanted <= {s["state"]["profile_id"] for s in r},
        timeout,
        watch,
    )
    missing = wanted - {s["state"]["profile_id"] for s in records}
    assert not missing, f"{len(missing)} states never reached {topic}, e.g. {sorted(missing)[:5]}"


async def consumed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    """Whether consumer group `group` has committed every partition of `topic` to its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    # Subscribed (without a group), so the consumer starts with the topic's metadata.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    return bool(tps) and all(
        offset == 0 or (tp in committed and committed[tp].offset >= offset)
        for tp, offset in end.items()
    )
