"""The engine runtime without a broker, for unit tests of its record handling.

The app is built but never started; records are handed to `_process_record` as the
agent would, as `Event`s of `Message`s with only the fields the runtime reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
