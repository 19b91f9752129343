"""The engine runtime without a broker, for unit tests of its record handling.

The app is built but never started; records are handed to `_process_record` as the
agent would, as `Event`s of `Message`s with only the fields the runtime reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

import engine.worker.batch as batch_module
from engine.streaming.app import create_app
from engine.worker.runtime import EngineRuntime
from schemas.settings import Settings

from . import deployment

# Enters on signup, waits a minute, sends a WhatsApp template, ends.
NUDGE = """
id: nudge
name: Nudge after a minute
entry: {event: signup}
start: pause
activities:
  pause: {type: wait, duration: 1m, next: hello}
  hello:
    type: whatsapp
    template: welcome
    language: es
    next: done
  done: {type: end}
"""


@dataclass
class Message:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int = 0


@dataclass
class Event:
    message: Message


def engine_runtime(tmp_path: Path, app_prefix: str) -> EngineRuntime:
    """An engine worker's runtime with the NUDGE journey deployed and definitions ready."""
    settings = Settings(data_dir=tmp_path, app_id=f"{app_prefix}-{tmp_path.name}")
    app = create_app(settings, frozenset({"engine"}), web=False)
    rt: EngineRuntime = app.runtime  # type: ignore[attr-defined]
    rt.catalog.apply(deployment(NUDGE))
    rt.definitions.ready.set()
    return rt


class KafkaStub:
    """Stands in for the producer of `flush`: effects are acknowledged at once (or when
    `gate` is set), changelog records are kept in `stored` and acknowledged."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, bytes | None, bytes | None]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def install(self, runtime: EngineRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(batch_module, "produce_batched", self.effects)
        monkeypatch.setattr(batch_module, "produce_counted", self.changelog)
        monkeypatch.setattr(runtime, "_producer", lambda: None)

    async def effects(self, producer: Any, records: Any, *args: Any, **kwargs: Any) -> list[Any]:
        list(records)
        await self.gate.wait()
        return []

    async def changelog(
        self, producer: Any, records: Any, *args: Any, **kwargs: Any
    ) -> list[tuple[asyncio.Future[Any], int]]:
        records = list(records)
        self.stored.extend(records)
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(topic_partition=TopicPartition(records[0][0], 0), offset=0))
        return [(done, len(records))]


class StreamStub:
    """The agent's stream as flush uses it: it records the acks."""

    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True
