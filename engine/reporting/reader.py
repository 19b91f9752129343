"""Reading delivery-events and journey-steps for a report: a bounded read of a time range.

The end of the read is each partition's end offset when it starts, and a timeout bounds
it; each record goes to the pure fold (engine/reporting/aggregate.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.kafka import reader
from engine.reporting.aggregate import Report, ReportBuilder
from engine.streaming.clients import assign_all
from schemas.settings import Settings

_FETCH_MAX_BYTES = 64 * 1024 * 1024
_PARTITION_FETCH_BYTES = 16 * 1024 * 1024
_MAX_RECORDS = 100_000


class ReportTimeoutError(Exception):
    """The topics were not read to their end in time; the message says how far it got."""


async def read_report(
    settings: Settings,
    since: datetime | None,
    until: datetime | None,
    timeout: float,
    journeys: Iterable[str] | None = None,
    also_delivery: Callable[[bytes], None] | None = None,
) -> Report:
    """Read delivery-events and journey-steps (records timestamped in [since, until)) to a Report.

    `also_delivery` sees every delivery-events record too (the cost fold reads them).

    The end of the read is each partition's end offset when it starts, so a busy topic
    cannot keep the report running; `timeout` (seconds) bounds the whole read.
    """
    builder = ReportBuilder(journeys)
    add_delivery = builder.add_delivery
    if also_delivery is not None:

        def add_delivery(raw: bytes) -> None:
            builder.add_delivery(raw)
            also_delivery(raw)

    adders = {
        settings.topic_delivery_events: add_delivery,
        settings.topic_journey_steps: builder.add_step,
    }
    consumer = reader(
        settings,
        # Records deleted by retention while the report reads: go on from the new first one.
        auto_offset_reset="earliest",
        # Large fetches: the broker hands over whole segments instead of 1 MiB slices.
        fetch_max_bytes=_FETCH_MAX_BYTES,
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
    )
    try:
        await consumer.start()
        stops, missing = await assign_range(consumer, list(adders), since, until)
        await drain(consumer, adders, stops, _bounds(since, until), timeout)
    finally:
        await consumer.stop()
    report = builder.result(since, until)
    return Report(report.journeys, report.records, since, until, missing)


async def assign_range(
    consumer: AIOKafkaConsumer,
    topics: list[str],
    since: datetime | None,
    until: datetime | None,
) -> tuple[dict[TopicPartition, int], list[str]]:
    """Assign every partition, seek to `since`; the offset to stop at per partition to read."""
    partitions: list[TopicPartition] = []
    missing: list[str] = []
    for topic in topics:
        found = await assign_all(consumer, topic, wait_seconds=0)
        partitions.extend(found)
        if not found:
            missing.append(topic)
    if not partitions:
        return {}, missing
    consumer.assign(partitions)  # assign_all assigns one topic at a time: take both
    end = await consumer.end_offsets(partitions)
    starts = await _offsets_at(consumer, end, since) if since else None
    if starts is None:
        starts = await consumer.beginning_offsets(partitions)
    stops = await _offsets_at(consumer, end, until) if until else end
    for tp in partitions:
        consumer.seek(tp, starts[tp])
    todo = {tp: stop for tp, stop in stops.items() if stop > starts[tp]}
    consumer.pause(*(tp for tp in partitions if tp not in todo))
    return todo, missing


async def _offsets_at(
    consumer: AIOKafkaConsumer, end: dict[TopicPartition, int], moment: datetime
) -> dict[TopicPartition, int]:
    """The first offset timestamped at or after `moment` per partition (the end if none is)."""
    ms = int(moment.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(end, ms))
    return {tp: end[tp] if found[tp] is None else found[tp].offset for tp in end}


def _bounds(since: datetime | None, until: datetime | None) -> tuple[int, int] | None:
    if since is None and until is None:
        return None
    low = int(since.timestamp() * 1000) if since else 0
    high = int(until.timestamp() * 1000) if until else 2**63 - 1
    return low, high


async def drain(
    consumer: AIOKafkaConsumer,
    adders: Mapping[str, Any],
    stops: dict[TopicPartition, int],
    bounds: tuple[int, int] | None,
    timeout: float,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    todo = dict(stops)
    while todo:
        if loop.time() > deadline:
            left = 0
            for tp, stop in todo.items():
                left += stop - await consumer.position(tp)
            raise ReportTimeoutError(
                f"{left:,} records were still unread after {timeout:g}s; "
                "give a larger --timeout or a shorter --since/--until range"
            )
        batches = await consumer.getmany(timeout_ms=500, max_records=_MAX_RECORDS)
        for tp, records in batches.items():
            if tp in todo:
                _feed(records, adders[tp.topic], todo[tp], bounds)
        for tp in [tp for tp in todo if tp in batches]:
            if await consumer.position(tp) >= todo[tp]:
                del todo[tp]
                consumer.pause(tp)


def _feed(records: list[Any], add: Any, stop: int, bounds: tuple[int, int] | None) -> None:
    if records and records[-1].offset >= stop:
        records = [r for r in records if r.offset < stop]
    if bounds is not None:
        # offsets_for_times finds the first record at `since`; producers with skewed clocks
        # can write earlier timestamps after it, and those stay out of the range.
        low, high = bounds
        records = [r for r in records if low <= r.timestamp < high]
    for record in records:
        add(record.value)
