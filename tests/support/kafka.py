"""Helpers for tests on the real broker: unique topic sets, producing and consuming JSON."""

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

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
