"""Bulk import of profiles: one `profile.updated` event per row of a CSV or JSON-lines file.

A row's event id is `import-<file digest>-<line>`: the same file imported again gives the
same ids, so the engine drops the second copy of every event as a duplicate. Each event
is checked as the engine checks it and produced keyed by profile id on its murmur2
partition, `CHUNK` rows at a time, each chunk acknowledged (acks=all) before the next.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from connectors.kafka import acknowledged_producer
from engine.core.admission import InvalidEvent, admit_profile_event
from engine.streaming.produce import produce_batched
from schemas.settings import Settings

CHUNK = 5000
EVENT_TYPE = "profile.updated"


class ImportFileError(Exception):
    """The file cannot be imported at all (no header, no profile_id column, not UTF-8)."""


@dataclass
class ImportSummary:
    """Rows read, events published (or, in a dry run, that would be), rejected rows."""

    rows: int = 0
    published: int = 0
    rejected: list[str] = field(default_factory=list)  # "FILE:LINE[:COLUMN]: reason"


@dataclass(frozen=True, slots=True)
class Row:
    """A row's line (its last, for a CSV record over several lines) and columns, or
    why it could not be read."""

    line: int
    values: dict[str, Any]
    problem: str | None = None


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256: its identity in event ids."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _decoded(fh: Any, read: list[int], name: str) -> Iterator[str]:
    """The file's lines as text; `read[0]` counts the bytes handed out so far."""
    for number, raw in enumerate(fh, 1):
        read[0] += len(raw)
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"{name}:{number}: not UTF-8 ({exc.reason})") from None


def _csv_rows(lines: Iterator[str], name: str) -> tuple[list[str], Iterator[Row]]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header:
        raise ImportFileError(f"{name}:1: empty file: a CSV file starts with a header row")
    header = [column.strip() for column in header]

    def rows() -> Iterator[Row]:
        for cells in reader:
            if not cells or all(not c for c in cells):
                continue
            if len(cells) > len(header):
                problem = f"{len(cells)} cells, the header has {len(header)}"
                yield Row(reader.line_num, {}, problem)
                continue
            yield Row(
                reader.line_num, {k: v for k, v in zip(header, cells, strict=False) if v != ""}
            )

    return header, rows()


def _json_rows(lines: Iterator[str]) -> Iterator[Row]:
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Row(number, {}, f"invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            yield Row(number, {}, "not a JSON object")
            continue
        yield Row(number, obj)


def is_json_lines(path: Path) -> bool:
    """JSON lines when the name says so (.jsonl, .ndjson, .json) or the file starts with `{`."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return True
    with path.open("rb") as fh:
        return fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


class RowEvents:
    """Turns rows into checked events (the engine's checks), or into rejection lines."""

    def __init__(self, path: Path, settings: Settings, header: list[str] | None) -> None:
        self.name = str(path)
        self.prefix = f"import-{file_digest(path)}-"
        self.columns = {name: i for i, name in enumerate(header or (), 1)}
        self.now = datetime.now(UTC)
        self.occurred_at = self.now.isoformat().replace("+00:00", "Z")
        self.window = {
            "max_age": timedelta(days=settings.max_event_age_days),
            "max_future": timedelta(seconds=settings.max_event_future_seconds),
        }

    def event(self, row: Row) -> tuple[bytes, bytes] | str:
        """(key, value) of the row's event, or "FILE:LINE[:COLUMN]: reason"."""
        values = row.values
        where = f"{self.name}:{row.line}"
        if row.problem is not None:
            return f"{where}: {row.problem}"
        attributes = dict(values)
        profile_id = attributes.pop("profile_id", None)
        if not isinstance(profile_id, str) or not profile_id.strip():
            column = self.columns.get("profile_id")
            at = f"{where}:{column}" if column else where
            return f"{at}: profile_id: required (a non-empty string)"
        value = orjson.dumps(
            {
                "event_id": f"{self.prefix}{row.line}",
                "type": EVENT_TYPE,
                "profile_id": profile_id,
                "occurred_at": self.occurred_at,
                "attributes": attributes,
            }
        )
        try:
            admit_profile_event(value, self.now, **self.window)
        except InvalidEvent as exc:
            return f"{self._located(where, exc.reason)}: {exc.reason}"
        return profile_id.encode(), value

    def _located(self, where: str, reason: str) -> str:
        """FILE:LINE:COLUMN when the reason names one attribute's column."""
        marker = "invalid profile event: attributes."
        if reason.startswith(marker):
            column = self.columns.get(reason[len(marker) :].split(":", 1)[0])
            if column:
                return f"{where}:{column}"
        return where


async def import_file(
    settings: Settings,
    path: Path,
    *,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Publish one event per row (none in a dry run); `on_progress(bytes_read, rows)`."""
    summary = ImportSummary()
    producer: AIOKafkaProducer | None = None
    if not dry_run:
        producer = acknowledged_producer(settings)
        await producer.start()
    read = [0]
    topic = settings.topic_profile_events
    try:
        with path.open("rb") as fh:
            lines = _decoded(fh, read, str(path))
            if is_json_lines(path):
                header, rows = None, _json_rows(lines)
            else:
                header, rows = _csv_rows(lines, str(path))
                if "profile_id" not in header:
                    raise ImportFileError(f"{path}:1: the header has no profile_id column")
            events = RowEvents(path, settings, header)
            if producer is not None:
                await producer.partitions_for(topic)  # murmur2 partitions, as the engine's
            hashes: dict[bytes, int] = {}
            chunk: list[tuple[str, bytes | None, bytes | None]] = []
            acknowledged: list[Any] = []
            for row in rows:
                summary.rows += 1
                made = events.event(row)
                if isinstance(made, str):
                    summary.rejected.append(made)
                else:
                    chunk.append((topic, made[0], made[1]))
                if len(chunk) >= CHUNK:
                    acknowledged = await _send(producer, chunk, acknowledged, hashes, summary)
                    chunk = []
                    if on_progress is not None:
                        on_progress(read[0], summary.rows)
            acknowledged = await _send(producer, chunk, acknowledged, hashes, summary)
            await asyncio.gather(*acknowledged)
            if on_progress is not None:
                on_progress(read[0], summary.rows)
    finally:
        if producer is not None:
            await producer.stop()
    return summary


async def _send(
    producer: AIOKafkaProducer | None,
    chunk: list[tuple[str, bytes | None, bytes | None]],
    previous: list[Any],
    hashes: dict[bytes, int],
    summary: ImportSummary,
) -> list[Any]:
    """Queue a chunk, then wait for the one before it: one chunk in flight while the next
    is checked, so at most two chunks are held in memory."""
    futures = await produce_batched(producer, chunk, hashes=hashes) if producer and chunk else []
    await asyncio.gather(*previous)
    summary.published += len(chunk)
    return futures
