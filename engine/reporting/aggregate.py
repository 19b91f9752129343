"""The report's figures and the pure fold that computes them from raw records.

ReportBuilder takes delivery-events and journey-steps records one at a time, in any order
and with replays (at-least-once processing), and yields a Report; no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

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
