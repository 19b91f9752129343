"""`journeyctl report`: funnels, delivery and conversion figures from delivery-events and journey-steps.

A streaming fold over raw records (ReportBuilder), a bounded Kafka read, and four renderers.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.table import Table

from engine.reporting.html import PAGE_STYLE, journey_svg
from engine.streaming.clients import assign_all
from schemas.journey import JourneyDefinition
from schemas.settings import Settings

# One bit per delivery status: a message's mask says which statuses were already counted,
# so a replayed record (at-least-once processing) is recognised without a set of tuples.
ACCEPTED, SENT, DELIVERED, READ, FAILED, SKIPPED = 1, 2, 4, 8, 16, 32
_STATUS_BITS: Final = {
    "accepted": ACCEPTED,
    "sent": SENT,
    "delivered": DELIVERED,
    "read": READ,
    "failed": FAILED,
    "skipped": SKIPPED,
}
# A message's list (see ReportBuilder) and where it keeps the time of each timed status.
_ACTIVITY, _MASK, _ACCEPTED_AT, _SENT_AT, _DELIVERED_AT, _READ_AT = range(6)
_TIME_SLOT: Final = {
    ACCEPTED: _ACCEPTED_AT,
    SENT: _SENT_AT,
    DELIVERED: _DELIVERED_AT,
    READ: _READ_AT,
}
# What a record that is not a readable delivery or step event raises while being picked apart.
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)
FUNNEL_STAGES: Final = ("entered", "sent", "delivered", "read", "converted")
_FETCH_MAX_BYTES = 64 * 1024 * 1024
_PARTITION_FETCH_BYTES = 16 * 1024 * 1024
_MAX_RECORDS = 100_000


class ReportTimeoutError(Exception):
    """The topics were not read to their end in time; the message says how far it got."""


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds from a message's start (accepted, else its first earlier status) to a status."""

    count: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True, slots=True)
class ActivityReport:
    activity_id: str
    activity_type: str | None
    visits: int
    outcomes: dict[str, int]
    converted: int
    timed_out: int
    messages: int
    accepted: int
    sent: int
    delivered: int
    read: int
    failed: dict[str, int]
    skipped: dict[str, int]
    time_to_deliver: Timing
    time_to_read: Timing


@dataclass(frozen=True, slots=True)
class Funnel:
    entered: int
    sent: int
    delivered: int
    read: int
    converted: int


@dataclass(frozen=True, slots=True)
class JourneyReport:
    journey_id: str
    version: int
    entered: int
    completed: int
    exited: dict[str, int]
    converted: int
    funnel: Funnel
    activities: list[ActivityReport]


@dataclass(frozen=True, slots=True)
class RecordCounts:
    delivery_events: int
    step_events: int
    duplicate_delivery_events: int
    duplicate_step_events: int
    unreadable: int


@dataclass(frozen=True, slots=True)
class Report:
    journeys: list[JourneyReport]
    records: RecordCounts
    since: datetime | None = None
    until: datetime | None = None
    missing_topics: list[str] = field(default_factory=list)


# --- the fold ------------------------------------------------------------------------------


class _ActivityTotals:
    __slots__ = ("activity_type", "failed", "outcomes", "skipped", "visits")

    def __init__(self) -> None:
        self.activity_type: str | None = None
        self.visits = 0
        self.outcomes: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()


class _JourneyTotals:
    __slots__ = ("activities", "converted", "entered", "exited")

    def __init__(self) -> None:
        self.entered = 0
        self.exited: Counter[str] = Counter()
        self.converted: set[str] = set()  # instances, so two hits of one instance count once
        self.activities: dict[str, _ActivityTotals] = {}


class _MessageTotals:
    """What result() derives from the messages of one activity."""

    __slots__ = (
        "accepted",
        "deliver_seconds",
        "delivered",
        "messages",
        "read",
        "read_seconds",
        "sent",
    )

    def __init__(self) -> None:
        self.messages = self.accepted = self.sent = self.delivered = self.read = 0
        self.deliver_seconds: list[float] = []
        self.read_seconds: list[float] = []


class ReportBuilder:
    """Folds raw delivery and step records into report figures, in any order, at most once each.

    The hot path is orjson plus dict and list operations: no model per record. Per message it
    keeps `[activity totals, status mask, accepted_at, sent_at, delivered_at, read_at]`.
    """

    def __init__(self, journeys: Iterable[str] | None = None) -> None:
        self._only = frozenset(journeys) if journeys is not None else None
        self._journeys: dict[tuple[str, int], _JourneyTotals] = {}
        self._messages: dict[str, list[Any]] = {}
        self._steps_seen: set[tuple[Any, ...]] = set()
        self.delivery_events = self.step_events = self.unreadable = 0
        self.duplicate_deliveries = self.duplicate_steps = 0

    def add_delivery(self, raw: bytes) -> None:
        """Count one delivery-events record; the first of each (message_id, status) counts."""
        self.delivery_events += 1
        try:
            record = orjson.loads(raw)
            message_id, bit = record["message_id"], _STATUS_BITS[record["status"]]
            at = _epoch(record["occurred_at"])
            message = self._messages.get(message_id)
            if message is None:
                message = self._new_message(message_id, record)
        except _UNREADABLE:
            self.unreadable += 1
            return
        if message is None:
            return  # a journey the --journey filter leaves out
        if message[_MASK] & bit:
            self.duplicate_deliveries += 1
            return
        message[_MASK] |= bit
        slot = _TIME_SLOT.get(bit)
        if slot is not None:
            message[slot] = at
        elif bit == FAILED:
            message[_ACTIVITY].failed[_failure_code(record.get("error"))] += 1
        else:
            message[_ACTIVITY].skipped[_skip_reason(record.get("error"))] += 1

    def _new_message(self, message_id: str, record: dict[str, Any]) -> list[Any] | None:
        journey_id = record["journey_id"]
        if self._only is not None and journey_id not in self._only:
            return None
        activity = self._activity(journey_id, record["journey_version"], record["activity_id"])
        message = self._messages[message_id] = [activity, 0, 0.0, 0.0, 0.0, 0.0]
        return message

    def add_step(self, raw: bytes) -> None:
        """Count one journey-steps record once: by (instance, seq), or for records without a
        seq (written before it existed) by (instance, kind, activity, occurred_at)."""
        self.step_events += 1
        try:
            record = orjson.loads(raw)
            kind, activity_id = record["kind"], record.get("activity_id")
            if kind not in ("entered", "exited", "activity") or (
                kind == "activity" and not activity_id
            ):
                raise ValueError(kind)
            journey_id, version = record["journey_id"], record["journey_version"]
            seq = record.get("seq")
            key: tuple[Any, ...] = (
                (record["instance_id"], seq)
                if isinstance(seq, int)
                else (record["instance_id"], kind, activity_id, record["occurred_at"])
            )
            if self._only is not None and journey_id not in self._only:
                return
            if key in self._steps_seen:
                self.duplicate_steps += 1
                return
            journey = self._journey(journey_id, version)
        except _UNREADABLE:
            self.unreadable += 1
            return
        self._steps_seen.add(key)
        if kind == "entered":
            journey.entered += 1
        elif kind == "exited":
            journey.exited[str(record.get("reason") or "unknown")] += 1
        else:
            self._count_activity_step(journey, record)

    def _count_activity_step(self, journey: _JourneyTotals, record: dict[str, Any]) -> None:
        activity = journey.activities.setdefault(record["activity_id"], _ActivityTotals())
        activity.visits += 1
        activity.activity_type = record.get("activity_type") or activity.activity_type
        outcome = str(record.get("outcome") or "")
        activity.outcomes[outcome] += 1
        if activity.activity_type == "wait_for_event" and outcome == "event":
            journey.converted.add(record["instance_id"])

    def _journey(self, journey_id: str, version: int) -> _JourneyTotals:
        journey = self._journeys.get((journey_id, version))
        if journey is None:
            journey = self._journeys[(journey_id, version)] = _JourneyTotals()
        return journey

    def _activity(self, journey_id: str, version: int, activity_id: str) -> _ActivityTotals:
        activities = self._journey(journey_id, version).activities
        activity = activities.get(activity_id)
        if activity is None:
            activity = activities[activity_id] = _ActivityTotals()
        return activity

    def result(self, since: datetime | None = None, until: datetime | None = None) -> Report:
        """The figures so far; the builder can go on folding afterwards."""
        totals = _message_totals(self._messages.values())
        journeys = [
            _journey_report(journey_id, version, journey, totals)
            for (journey_id, version), journey in sorted(self._journeys.items(), key=_order)
        ]
        records = RecordCounts(
            delivery_events=self.delivery_events,
            step_events=self.step_events,
            duplicate_delivery_events=self.duplicate_deliveries,
            duplicate_step_events=self.duplicate_steps,
            unreadable=self.unreadable,
        )
        return Report(journeys=journeys, records=records, since=since, until=until)


def aggregate(
    deliveries: Iterable[bytes],
    steps: Iterable[bytes] = (),
    journeys: Iterable[str] | None = None,
) -> Report:
    """The report of these raw delivery-events and journey-steps values (no Kafka needed)."""
    builder = ReportBuilder(journeys)
    add_delivery, add_step = builder.add_delivery, builder.add_step
    for raw in deliveries:
        add_delivery(raw)
    for raw in steps:
        add_step(raw)
    return builder.result()


def _order(item: tuple[tuple[str, int], Any]) -> tuple[str, int, str]:
    # Versions are integers (v10 after v9); a record with another type must not break sorting.
    journey_id, version = item[0]
    return str(journey_id), version if type(version) is int else -1, str(version)


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # the schema demands an offset; never read a time as local
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _failure_code(error: Any) -> str:
    code = error.get("code") if isinstance(error, dict) else None
    return "unknown" if code is None else str(code)


def _failure_order(item: tuple[str, int]) -> tuple[bool, str]:
    return item[0] != "transport", item[0]


def _skip_reason(error: Any) -> str:
    reason = error.get("reason") if isinstance(error, dict) else None
    return "unknown" if reason is None else str(reason)


def _message_totals(messages: Iterable[list[Any]]) -> dict[_ActivityTotals, _MessageTotals]:
    """Per activity: messages reaching each status, and the delivery and read delays."""
    totals: dict[_ActivityTotals, _MessageTotals] = {}
    for activity, mask, accepted_at, sent_at, delivered_at, read_at in messages:
        tally = totals.get(activity)
        if tally is None:
            tally = totals[activity] = _MessageTotals()
        tally.messages += 1
        # A later status implies the earlier ones, even when Meta's webhook for them was lost.
        if mask & (ACCEPTED | SENT | DELIVERED | READ):
            tally.accepted += 1
        if mask & (SENT | DELIVERED | READ):
            tally.sent += 1
        if mask & (DELIVERED | READ):
            tally.delivered += 1
        if mask & READ:
            tally.read += 1
        start = accepted_at if mask & ACCEPTED else sent_at
        if mask & DELIVERED and mask & (ACCEPTED | SENT):
            tally.deliver_seconds.append(max(0.0, delivered_at - start))
        if mask & READ and mask & (ACCEPTED | SENT | DELIVERED):
            if not mask & (ACCEPTED | SENT):
                start = delivered_at
            tally.read_seconds.append(max(0.0, read_at - start))
    return totals


def _journey_report(
    journey_id: str,
    version: int,
    journey: _JourneyTotals,
    totals: dict[_ActivityTotals, _MessageTotals],
) -> JourneyReport:
    activities = [
        _activity_report(activity_id, activity, totals.get(activity, _MessageTotals()))
        for activity_id, activity in sorted(journey.activities.items())
    ]
    funnel = Funnel(
        entered=journey.entered,
        sent=sum(a.sent for a in activities),
        delivered=sum(a.delivered for a in activities),
        read=sum(a.read for a in activities),
        converted=len(journey.converted),
    )
    return JourneyReport(
        journey_id=journey_id,
        version=version,
        entered=journey.entered,
        completed=journey.exited.get("completed", 0),
        exited=dict(sorted(journey.exited.items())),
        converted=len(journey.converted),
        funnel=funnel,
        activities=activities,
    )


def _activity_report(
    activity_id: str, activity: _ActivityTotals, tally: _MessageTotals
) -> ActivityReport:
    waits = activity.activity_type == "wait_for_event"
    return ActivityReport(
        activity_id=activity_id,
        activity_type=activity.activity_type or ("whatsapp" if tally.messages else None),
        visits=activity.visits,
        outcomes=dict(sorted(activity.outcomes.items())),
        converted=activity.outcomes.get("event", 0) if waits else 0,
        timed_out=activity.outcomes.get("timeout", 0) if waits else 0,
        messages=tally.messages,
        accepted=tally.accepted,
        sent=tally.sent,
        delivered=tally.delivered,
        read=tally.read,
        # `transport` (the API was not reached) first, apart from Meta's codes.
        failed=dict(sorted(activity.failed.items(), key=_failure_order)),
        skipped=dict(sorted(activity.skipped.items())),
        time_to_deliver=_timing(tally.deliver_seconds),
        time_to_read=_timing(tally.read_seconds),
    )


def _timing(seconds: list[float]) -> Timing:
    ordered = sorted(seconds)
    return Timing(len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.9))


def percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (SQL's PERCENTILE_CONT, numpy's default)."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


# --- reading Kafka -------------------------------------------------------------------------


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
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        # Records deleted by retention while the report reads: go on from the new first one.
        auto_offset_reset="earliest",
        # Large fetches: the broker hands over whole segments instead of 1 MiB slices.
        fetch_max_bytes=_FETCH_MAX_BYTES,
        max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
        **settings.aiokafka_security(),
    )
    try:
        await consumer.start()
        stops, missing = await _assign_range(consumer, list(adders), since, until)
        await _drain(consumer, adders, stops, _bounds(since, until), timeout)
    finally:
        await consumer.stop()
    report = builder.result(since, until)
    return Report(report.journeys, report.records, since, until, missing)


async def _assign_range(
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


async def _drain(
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


# --- rendering -----------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _pairs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key or '-'}: {value:,}" for key, value in counts.items())


def _summary(journey: JourneyReport) -> str:
    f = journey.funnel
    exits = _pairs(journey.exited) or "none"
    return (
        f"entered {f.entered:,} → sent {f.sent:,} → delivered {f.delivered:,} → read {f.read:,}"
        f" → converted {f.converted:,} · completed {journey.completed:,} · exited: {exits}"
    )


ACTIVITY_COLUMNS: Final = (
    "activity",
    "type",
    "visits",
    "outcomes",
    "sent",
    "delivered",
    "read",
    "failed",
    "skipped",
    "deliver p50",
    "deliver p90",
    "read p50",
    "read p90",
)


def activity_row(activity: ActivityReport) -> tuple[str, ...]:
    """One activity's figures as display strings, in the order of ACTIVITY_COLUMNS."""
    a = activity
    has_messages = a.messages > 0
    return (
        a.activity_id,
        a.activity_type or "",
        f"{a.visits:,}" if a.visits else "",
        _pairs(a.outcomes),
        f"{a.sent:,}" if has_messages else "",
        f"{a.delivered:,}" if has_messages else "",
        f"{a.read:,}" if has_messages else "",
        _pairs(a.failed),
        _pairs(a.skipped),
        _seconds(a.time_to_deliver.median_seconds),
        _seconds(a.time_to_deliver.p90_seconds),
        _seconds(a.time_to_read.median_seconds),
        _seconds(a.time_to_read.p90_seconds),
    )


def _records_line(report: Report) -> str:
    r = report.records
    return (
        f"{r.delivery_events:,} delivery events ({r.duplicate_delivery_events:,} repeated), "
        f"{r.step_events:,} step events ({r.duplicate_step_events:,} repeated), "
        f"{r.unreadable:,} unreadable"
    )


def render_table(report: Report, console: Console) -> None:
    """One table per journey version, its funnel and exits in the caption."""
    for journey in report.journeys:
        table = Table(
            title=f"{journey.journey_id} v{journey.version}",
            caption=_summary(journey),
            title_justify="left",
            caption_justify="left",
        )
        for column in ACTIVITY_COLUMNS:
            numeric = column not in ("activity", "type", "outcomes", "failed", "skipped")
            table.add_column(column, justify="right" if numeric else "left")
        for activity in journey.activities:
            table.add_row(*activity_row(activity))
        console.print(table)
    if not report.journeys:
        console.print("no delivery or step events in the range")
    console.print(_records_line(report))


CSV_COLUMNS: Final = (
    "journey_id",
    "journey_version",
    "activity_id",
    "activity_type",
    "figure",
    "key",
    "value",
)


def to_csv(report: Report) -> str:
    """One figure per row (journey rows have no activity), so new reasons add rows, not columns."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for journey in report.journeys:
        head = (journey.journey_id, journey.version)
        for figure, key, value in _journey_figures(journey):
            writer.writerow((*head, "", "", figure, key, value))
        for activity in journey.activities:
            where = (activity.activity_id, activity.activity_type or "")
            for figure, key, value in _activity_figures(activity):
                writer.writerow((*head, *where, figure, key, value))
    return out.getvalue()


Figure = tuple[str, str, float | int]


def _journey_figures(journey: JourneyReport) -> list[Figure]:
    f = journey.funnel
    figures: list[Figure] = [("entered", "", f.entered), ("completed", "", journey.completed)]
    figures += [("exited", reason, n) for reason, n in journey.exited.items()]
    figures += [("sent", "", f.sent), ("delivered", "", f.delivered), ("read", "", f.read)]
    figures.append(("converted", "", f.converted))
    return figures


def _activity_figures(a: ActivityReport) -> list[Figure]:
    figures: list[Figure] = []
    if a.visits:
        figures.append(("visits", "", a.visits))
        figures += [("outcome", label, n) for label, n in a.outcomes.items()]
    if a.activity_type == "wait_for_event":
        figures += [("converted", "", a.converted), ("timed_out", "", a.timed_out)]
    if a.messages:
        figures += [
            ("messages", "", a.messages),
            ("accepted", "", a.accepted),
            ("sent", "", a.sent),
            ("delivered", "", a.delivered),
            ("read", "", a.read),
        ]
        figures += [("failed", code, n) for code, n in a.failed.items()]
        figures += [("skipped", reason, n) for reason, n in a.skipped.items()]
        figures += _timing_figures("time_to_deliver", a.time_to_deliver)
        figures += _timing_figures("time_to_read", a.time_to_read)
    return figures


def _timing_figures(name: str, timing: Timing) -> list[Figure]:
    if not timing.count or timing.median_seconds is None or timing.p90_seconds is None:
        return []
    return [
        (f"{name}_count", "", timing.count),
        (f"{name}_median_seconds", "", timing.median_seconds),
        (f"{name}_p90_seconds", "", timing.p90_seconds),
    ]


def to_json(report: Report) -> bytes:
    """The whole report as JSON (UTF-8), in the shape of the Report dataclasses."""
    return orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2) + b"\n"


# --- the HTML page -------------------------------------------------------------------------

_BAR_X, _BAR_W, _BAR_H, _ROW_H = 100, 380, 24, 34
_BAR_FILL: Final = dict(
    zip(FUNNEL_STAGES, ("#4285f4", "#34a853", "#0f9d58", "#188038", "#f9ab00"), strict=True)
)
_HTML_STYLE = (
    ".funnel text{font-size:13px}.meta{color:#5f6368}.diagram{overflow-x:auto}"
    "section.journey{border-top:1px solid #dadce0;margin-top:24px}"
    # The text columns (type, outcomes, failed, skipped) read better left-aligned.
    + "".join(
        f"table.activities :is(td,th):nth-child({n}){{text-align:left}}" for n in (2, 4, 8, 9)
    )
)


def funnel_svg(funnel: Funnel) -> str:
    """Horizontal bars entered → sent → delivered → read → converted, with numbers and shares."""
    values = [(stage, int(getattr(funnel, stage))) for stage in FUNNEL_STAGES]
    top = max(1, *(value for _, value in values))
    width, height = _BAR_X + _BAR_W + 150, len(values) * _ROW_H + 10
    parts = [
        f'<svg class="funnel" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" font-family="sans-serif" role="img" aria-label="funnel">'
    ]
    for row, (stage, value) in enumerate(values):
        y = 5 + row * _ROW_H
        bar = max(2.0, value / top * _BAR_W) if value else 0.0
        share = ""
        if stage != "entered" and funnel.entered:
            share = f" ({value / funnel.entered:.0%} of entered)"
        parts.append(
            f'<g class="stage" data-stage="{stage}" data-value="{value}">'
            f'<text x="{_BAR_X - 8}" y="{y + 17}" text-anchor="end">{stage}</text>'
            f'<rect x="{_BAR_X}" y="{y}" width="{bar:.1f}" height="{_BAR_H}" rx="3" '
            f'fill="{_BAR_FILL[stage]}"/>'
            f'<text class="value" x="{_BAR_X + bar + 6:.1f}" y="{y + 17}">'
            f"{value:,}{share}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(journey: JourneyReport) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in ACTIVITY_COLUMNS)
    rows = "".join(
        f'<tr data-activity="{escape(a.activity_id)}">'
        + "".join(f"<td>{escape(cell)}</td>" for cell in activity_row(a))
        + "</tr>"
        for a in journey.activities
    )
    return f'<table class="activities"><tr>{head}</tr>{rows}</table>'


def _diagram(journey: JourneyReport, definition: JourneyDefinition | None) -> str:
    if definition is None:
        return '<p class="meta">No deployed definition of this version: funnel only.</p>'
    counts = {"entry": journey.entered}
    counts.update((a.activity_id, a.visits) for a in journey.activities)
    return (
        '<div class="diagram"><p class="meta">Instances that finished each step '
        f"(entry: entered).</p>{journey_svg(definition, counts)}</div>"
    )


def _journey_section(journey: JourneyReport, definition: JourneyDefinition | None) -> str:
    name = f"{definition.name} ({journey.journey_id})" if definition else journey.journey_id
    exits = _pairs(journey.exited) or "none"
    return (
        f'<section class="journey" id="{escape(journey.journey_id)}-v{journey.version}">'
        f"<h2>{escape(name)} · v{journey.version}</h2>"
        f'<p class="meta">completed {journey.completed:,} · exited: {escape(exits)}</p>'
        f"{funnel_svg(journey.funnel)}{_html_table(journey)}{_diagram(journey, definition)}"
        "</section>"
    )


def _range_text(report: Report) -> str:
    since = report.since.isoformat() if report.since else "the beginning"
    until = report.until.isoformat() if report.until else "now"
    return (
        f"From {since} to {until}. {_records_line(report)}. In the funnels, entered and "
        "converted count instances; sent, delivered and read count messages (a journey with "
        "two WhatsApp steps sends two per instance)."
    )


def to_html(report: Report, definitions: Mapping[str, JourneyDefinition]) -> str:
    """A self-contained page: per journey version a funnel, a table and the annotated diagram.

    `definitions` are keyed `<id>@<version>` (that version only) or `<id>` (every version).
    """
    sections = [
        _journey_section(
            j,
            definitions.get(f"{j.journey_id}@{j.version}") or definitions.get(j.journey_id),
        )
        for j in report.journeys
    ]
    title = "Journey report"
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{PAGE_STYLE}{_HTML_STYLE}</style></head><body><h1>{title}</h1>"
        f'<p class="meta">{escape(_range_text(report))}</p>'
        f"{''.join(sections) or '<p>No delivery or step events in the range.</p>'}</body></html>"
    )
