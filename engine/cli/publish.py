"""Publish JSON lines of profile events to Kafka, keyed by profile id, with progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from connectors.kafka import acknowledged_producer
from schemas.events import ProfileEvent
from schemas.settings import Settings


def _lines(path: Path) -> list[tuple[int, bytes]]:
    with path.open("rb") as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, 1) if line.strip()]


def check_line(
    number: int, line: bytes, file: str, *, validate: bool
) -> tuple[bytes | None, str | None]:
    """The record key for a line, or the problem that keeps it from being sent."""
    try:
        obj: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"{file}:{number}: invalid JSON: {exc}"
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("profile_id"), str)
        or not obj["profile_id"]
    ):
        return None, f"{file}:{number}: profile_id: required to key the record"
    if validate:
        try:
            ProfileEvent.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            return None, f"{file}:{number}: {loc}: {err['msg']}"
    return obj["profile_id"].encode(), None


async def publish_file(
    settings: Settings,
    path: Path,
    topic: str,
    *,
    validate: bool = True,
    show_progress: bool | None = None,
) -> tuple[int, list[str]]:
    """Send every valid line; return how many were sent and the problems of the rest."""
    lines = _lines(path)
    problems: list[str] = []
    producer = acknowledged_producer(settings)
    await producer.start()
    sent = 0
    progress = Progress(
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=show_progress is False or len(lines) < 1000,
    )
    try:
        with progress:
            task = progress.add_task("publish", total=len(lines))
            pending = []
            for number, line in lines:
                key, problem = check_line(number, line, str(path), validate=validate)
                if problem:
                    problems.append(problem)
                    progress.advance(task)
                    continue
                pending.append(await producer.send(topic, line, key=key))
                sent += 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    progress.advance(task, len(pending))
                    pending.clear()
            await asyncio.gather(*pending)
            progress.advance(task, len(pending))
    finally:
        await producer.stop()
    return sent, problems
