"""Follow a topic and print its records: delivery and step events as table rows."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from connectors.kafka import reader
from schemas.common import mask_phones_in
from schemas.settings import Settings

_COLUMNS = {
    "delivery": (
        "occurred_at",
        "status",
        "journey_id",
        "activity_id",
        "profile_id",
        "template",
        "error",
    ),
    "steps": (
        "occurred_at",
        "kind",
        "journey_id",
        "activity_id",
        "outcome",
        "reason",
        "profile_id",
    ),
}


def _kind(record: dict[str, Any]) -> str:
    if "status" in record and "message_id" in record:
        return "delivery"
    if "kind" in record and "instance_id" in record:
        return "steps"
    return "raw"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("reason") or value.get("code") or value.get("title") or "")
    return mask_phones_in(str(value))[:40]


async def tail_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    timeout: float | None = None,
    as_json: bool = False,
) -> int:
    consumer = reader(settings, topic, auto_offset_reset="earliest" if from_beginning else "latest")
    await consumer.start()
    console = Console()
    seen = 0
    header_for: str | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    try:
        while limit is None or seen < limit:
            if deadline is not None and loop.time() >= deadline:
                break
            batches = await consumer.getmany(timeout_ms=250, max_records=500)
            for records in batches.values():
                for record in records:
                    if limit is not None and seen >= limit:
                        break
                    seen += 1
                    try:
                        obj = orjson.loads(record.value or b"null")
                    except orjson.JSONDecodeError:
                        console.print(repr(record.value)[:200])
                        continue
                    kind = _kind(obj) if isinstance(obj, dict) else "raw"
                    if as_json:
                        print(orjson.dumps(obj).decode())
                        continue
                    if kind == "raw":
                        console.print_json(orjson.dumps(obj).decode())
                        continue
                    table = Table(show_header=header_for != kind, box=None, pad_edge=False)
                    for col in _COLUMNS[kind]:
                        table.add_column(
                            col,
                            width=24 if col in ("occurred_at", "profile_id") else 16,
                            no_wrap=True,
                        )
                    table.add_row(*(_cell(obj.get(c)) for c in _COLUMNS[kind]))
                    console.print(table)
                    header_for = kind
    finally:
        await consumer.stop()
    return seen
