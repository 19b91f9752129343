"""The report's figures: given these delivery and step records, exactly these numbers."""

from __future__ import annotations

import io
import statistics
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from rich.console import Console

from engine.cli.report import parse_moment
from engine.core.loader import parse_journey
from engine.reporting.aggregate import ReportBuilder, aggregate, percentile
from engine.reporting.render import CSV_COLUMNS, render_table, to_csv, to_html, to_json

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def delivery(
    message: str,
    status: str,
    seconds: float,
    *,
    journey: str = "cart-recovery",
    version: int = 3,
    activity: str = "send-es",
    code: int | None = None,
    reason: str | None = None,
) -> bytes:
    error = None
    if status == "failed":
        error = {"code": code, "title": "failed", "retriable": False}
    if status == "skipped":
        error = {"code": None, "title": "skipped", "retriable": False, "reason": reason}
    return orjson.dumps(
        {
            "message_id": f"{journey}:{version}:{message}:{activity}:1",
            "wamid": f"wamid.{message}",
            "journey_id": journey,
            "journey_version": version,
            "activity_id": activity,
            "profile_id": message,
            "channel": "whatsapp",
            "template": "cart_reminder",
            "language": "es",
            "status": status,
            "error": error,
            "occurred_at": at(seconds),
        }
    )


def step(
    kind: str,
    instance: str,
    seconds: float = 0,
    *,
    journey: str = "cart-recovery",
    version: int = 3,
    activity: str | None = None,
    type_: str | None = None,
    outcome: str | None = None,
    reason: str | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "kind": kind,
            "journey_id": journey,
            "journey_version": version,
            "instance_id": instance,
            "profile_id": instance,
            "activity_id": activity,
            "activity_type": type_,
            "outcome": outcome,
            "reason": reason,
            "detail": None,
            "event_id": None,
            "occurred_at": at(seconds),
        }
    )


def lifecycle(message: str, deliver: float, read: float | None = None, **where: Any) -> list[bytes]:
    """accepted at 0, sent at 1, delivered after `deliver` s, read after `read` s."""
    records = [
        delivery(message, "accepted", 0, **where),
        delivery(message, "sent", 1, **where),
        delivery(message, "delivered", deliver, **where),
    ]
    if read is not None:
        records.append(delivery(message, "read", read, **where))
    return records


def wait_step(instance: str, outcome: str, seconds: float = 100, **where: Any) -> bytes:
    return step(
        "activity",
        instance,
        seconds,
        activity="wait-order",
        type_="wait_for_event",
        outcome=outcome,
        **where,
    )


def flat(report: Any) -> dict[str, Any]:
    """`journey@version.field` and `journey@version/activity.field[.key]` -> value."""
    out: dict[str, Any] = {f"records.{k}": v for k, v in asdict(report.records).items()}
    for j in report.journeys:
        head = f"{j.journey_id}@{j.version}"
        for name in ("entered", "completed", "converted"):
            out[f"{head}.{name}"] = getattr(j, name)
        out.update({f"{head}.exited.{k}": v for k, v in j.exited.items()})
        out.update({f"{head}.funnel.{k}": v for k, v in asdict(j.funnel).items()})
        for a in j.activities:
            for name, value in asdict(a).items():
                key = f"{head}/{a.activity_id}.{name}"
                if isinstance(value, dict):
                    out.update({f"{key}.{k}": v for k, v in value.items()})
                else:
                    out[key] = value
    return out


S = "cart-recovery@3/send-es"
CASES: list[tuple[str, list[bytes], list[bytes], dict[str, Any]]] = [
    (
        "one message through every status",
        lifecycle("p-1", deliver=4, read=64),
        [],
        {
            f"{S}.messages": 1,
            f"{S}.accepted": 1,
            f"{S}.sent": 1,
            f"{S}.delivered": 1,
            f"{S}.read": 1,
            f"{S}.activity_type": "whatsapp",
            f"{S}.time_to_deliver.count": 1,
            f"{S}.time_to_deliver.median_seconds": 4.0,
            f"{S}.time_to_deliver.p90_seconds": 4.0,
            f"{S}.time_to_read.median_seconds": 64.0,
            "cart-recovery@3.funnel.sent": 1,
            "cart-recovery@3.funnel.entered": 0,
        },
    ),
    (
        "sent before accepted, and records repeated after a crash, count once",
        [
            delivery("p-1", "sent", 2),
            delivery("p-1", "accepted", 0),
            delivery("p-1", "delivered", 3),
            delivery("p-1", "delivered", 3),
            delivery("p-1", "read", 10),
            delivery("p-1", "read", 10),
            delivery("p-1", "sent", 2),
        ],
        [],
        {
            f"{S}.messages": 1,
            f"{S}.sent": 1,
            f"{S}.delivered": 1,
            f"{S}.read": 1,
            f"{S}.time_to_deliver.median_seconds": 3.0,  # from accepted, not from sent
            f"{S}.time_to_read.median_seconds": 10.0,
            "records.delivery_events": 7,
            "records.duplicate_delivery_events": 3,
        },
    ),
    (
        "without accepted the clock starts at sent, else at delivered; lost webhooks are implied",
        [
            delivery("p-1", "sent", 5),
            delivery("p-1", "delivered", 7),
            delivery("p-2", "delivered", 20),
            delivery("p-2", "read", 50),
            delivery("p-3", "read", 9),
        ],
        [],
        {
            f"{S}.messages": 3,
            f"{S}.accepted": 3,
            f"{S}.sent": 3,
            f"{S}.delivered": 3,
            f"{S}.read": 2,
            f"{S}.time_to_deliver.count": 1,
            f"{S}.time_to_deliver.median_seconds": 2.0,
            f"{S}.time_to_read.count": 1,
            f"{S}.time_to_read.median_seconds": 30.0,
        },
    ),
    (
        "median and p90 interpolate between ranks",
        [r for n in range(1, 11) for r in lifecycle(f"p-{n}", deliver=n, read=n * 60)],
        [],
        {
            f"{S}.time_to_deliver.count": 10,
            f"{S}.time_to_deliver.median_seconds": 5.5,
            f"{S}.time_to_deliver.p90_seconds": 9.1,
            f"{S}.time_to_read.median_seconds": 330.0,
            f"{S}.time_to_read.p90_seconds": 546.0,
        },
    ),
    (
        "a delivered time before accepted (clock skew) counts as zero",
        [delivery("p-1", "accepted", 10), delivery("p-1", "delivered", 8)],
        [],
        {f"{S}.time_to_deliver.median_seconds": 0.0, f"{S}.delivered": 1},
    ),
    (
        "failed by code and skipped by reason, each message once",
        [
            delivery("p-1", "accepted", 0),
            delivery("p-1", "failed", 1, code=131026),
            delivery("p-1", "failed", 1, code=131026),
            delivery("p-2", "failed", 1, code=131026),
            delivery("p-3", "failed", 1, code=130429),
            delivery("p-4", "failed", 1, code=None),
            delivery("p-5", "skipped", 0, reason="no_consent"),
            delivery("p-6", "skipped", 0, reason="no_consent"),
            delivery("p-6", "skipped", 0, reason="no_consent"),
            delivery("p-7", "skipped", 0, reason="quiet_hours"),
        ],
        [],
        {
            f"{S}.messages": 7,
            f"{S}.accepted": 1,
            f"{S}.sent": 0,
            f"{S}.failed.131026": 2,
            f"{S}.failed.130429": 1,
            f"{S}.failed.unknown": 1,
            f"{S}.skipped.no_consent": 2,
            f"{S}.skipped.quiet_hours": 1,
            f"{S}.time_to_deliver.count": 0,
            f"{S}.time_to_deliver.median_seconds": None,
            "records.duplicate_delivery_events": 2,
        },
    ),
    (
        "entries, exits by reason and conversions from step events; repeats count once",
        [],
        [
            step("entered", "i-1", 0, activity="wait-1h"),
            step("entered", "i-1", 0, activity="wait-1h"),
            step("entered", "i-2", 0, activity="wait-1h"),
            step("entered", "i-3", 0, activity="wait-1h"),
            step("entered", "i-4", 0, activity="wait-1h"),
            wait_step("i-1", "event"),
            wait_step("i-1", "event"),
            wait_step("i-2", "event"),
            wait_step("i-3", "timeout"),
            step("exited", "i-1", 100, activity="done", reason="completed"),
            step("exited", "i-2", 100, activity="done", reason="completed"),
            step("exited", "i-3", 100, activity="done", reason="completed"),
            step("exited", "i-4", 50, activity="wait-order", reason="exit_event"),
        ],
        {
            "cart-recovery@3.entered": 4,
            "cart-recovery@3.completed": 3,
            "cart-recovery@3.exited.completed": 3,
            "cart-recovery@3.exited.exit_event": 1,
            "cart-recovery@3.converted": 2,
            "cart-recovery@3.funnel.converted": 2,
            "cart-recovery@3/wait-order.visits": 3,
            "cart-recovery@3/wait-order.converted": 2,
            "cart-recovery@3/wait-order.timed_out": 1,
            "cart-recovery@3/wait-order.outcomes.event": 2,
            "records.step_events": 13,
            "records.duplicate_step_events": 2,
        },
    ),
    (
        "an instance that converts at two waits is one converted instance",
        [],
        [
            wait_step("i-1", "event", 10),
            step(
                "activity",
                "i-1",
                20,
                activity="wait-read",
                type_="wait_for_event",
                outcome="event",
            ),
            step("activity", "i-2", 10, activity="check", type_="condition", outcome="event"),
        ],
        {
            "cart-recovery@3.converted": 1,
            "cart-recovery@3/wait-read.converted": 1,
            "cart-recovery@3/check.converted": 0,
            "cart-recovery@3/check.outcomes.event": 1,
        },
    ),
    (
        "split paths are the outcomes of a split activity",
        [],
        [
            step("activity", f"i-{n}", n, activity="ab", type_="split", outcome=path)
            for n, path in enumerate(["discount"] * 3 + ["free-shipping"] * 2)
        ],
        {
            "cart-recovery@3/ab.visits": 5,
            "cart-recovery@3/ab.outcomes.discount": 3,
            "cart-recovery@3/ab.outcomes.free-shipping": 2,
            "cart-recovery@3/ab.timed_out": 0,
        },
    ),
    (
        "versions, journeys and keyword replies are kept apart",
        [
            *lifecycle("p-1", deliver=2, version=1),
            *lifecycle("p-1", deliver=2, read=3, version=2),
            *lifecycle("p-2", deliver=2, journey="welcome", version=1, activity="welcome-es"),
            *lifecycle("p-3", deliver=2, journey="whatsapp-keywords", version=0, activity="stop"),
        ],
        [],
        {
            "cart-recovery@1/send-es.read": 0,
            "cart-recovery@2/send-es.read": 1,
            "welcome@1/welcome-es.delivered": 1,
            "whatsapp-keywords@0/stop.sent": 1,
            "whatsapp-keywords@0/stop.activity_type": "whatsapp",
            "whatsapp-keywords@0.entered": 0,
        },
    ),
    (
        "unreadable records are counted and skipped, never fatal",
        [
            b"not json",
            b"[]",
            b"{}",
            delivery("p-1", "bogus", 0),
            delivery("p-1", "sent", 0).replace(b"2026-11-24T10", b"yesterday"),
            delivery("p-1", "sent", 1),
        ],
        [b"{", step("paused", "i-1"), step("activity", "i-1", activity=None)],
        {"records.unreadable": 8, f"{S}.sent": 1, "records.delivery_events": 6},
    ),
]


@pytest.mark.parametrize(
    ("deliveries", "steps", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_figures(deliveries: list[bytes], steps: list[bytes], expected: dict[str, Any]) -> None:
    figures = flat(aggregate(deliveries, steps))
    assert {key: figures.get(key, "<absent>") for key in expected} == expected


def test_the_order_of_records_does_not_change_the_figures() -> None:
    records = [r for n in range(1, 6) for r in lifecycle(f"p-{n}", deliver=n, read=n * 7)]
    assert aggregate(records) == aggregate(reversed(records))


def test_the_journey_filter_keeps_only_those_journeys() -> None:
    records = [*lifecycle("p-1", deliver=2), *lifecycle("p-2", deliver=2, journey="welcome")]
    steps = [step("entered", "i-1", journey="welcome"), step("entered", "i-2")]
    report = aggregate(records, steps, journeys=["welcome"])
    assert [(j.journey_id, j.version, j.entered) for j in report.journeys] == [("welcome", 3, 1)]
    assert report.journeys[0].funnel.delivered == 1


def test_journeys_come_by_id_then_version_number() -> None:
    records = [
        delivery("p-1", "sent", 0, version=10),
        delivery("p-1", "sent", 0, version=2),
        delivery("p-1", "sent", 0, journey="abandoned", version=1),
    ]
    report = aggregate(records)
    assert [(j.journey_id, j.version) for j in report.journeys] == [
        ("abandoned", 1),
        ("cart-recovery", 2),
        ("cart-recovery", 10),
    ]


def test_the_builder_can_report_midway_and_go_on() -> None:
    builder = ReportBuilder()
    for raw in lifecycle("p-1", deliver=2):
        builder.add_delivery(raw)
    assert builder.result().journeys[0].funnel.delivered == 1
    for raw in lifecycle("p-2", deliver=4):
        builder.add_delivery(raw)
    report = builder.result()
    assert report.journeys[0].funnel.delivered == 2
    assert report.journeys[0].activities[0].time_to_deliver.median_seconds == 3.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([7.0], 0.9, 7.0),
        ([1.0, 2.0], 0.5, 1.5),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 0.9, 4.6),
        ([10.0, 20.0, 30.0], 0.5, 20.0),
    ],
)
def test_percentile_is_percentile_cont(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected
    if values:
        assert percentile(values, 0.5) == statistics.median(values)


SMALL = [
    *lifecycle("p-1", deliver=3, read=30),
    delivery("p-2", "failed", 1, code=131026),
    delivery("p-3", "skipped", 0, reason="no_consent"),
]
SMALL_STEPS = [
    step("entered", "i-1", activity="send-es"),
    step("activity", "i-1", 1, activity="send-es", type_="whatsapp", outcome="sent"),
    wait_step("i-1", "event"),
    step("exited", "i-1", 101, activity="done", reason="completed"),
]


def test_csv_has_one_figure_per_row() -> None:
    text = to_csv(aggregate(SMALL, SMALL_STEPS))
    assert text.splitlines() == [
        ",".join(CSV_COLUMNS),
        "cart-recovery,3,,,entered,,1",
        "cart-recovery,3,,,completed,,1",
        "cart-recovery,3,,,exited,completed,1",
        "cart-recovery,3,,,sent,,1",
        "cart-recovery,3,,,delivered,,1",
        "cart-recovery,3,,,read,,1",
        "cart-recovery,3,,,converted,,1",
        "cart-recovery,3,send-es,whatsapp,visits,,1",
        "cart-recovery,3,send-es,whatsapp,outcome,sent,1",
        "cart-recovery,3,send-es,whatsapp,messages,,3",
        "cart-recovery,3,send-es,whatsapp,accepted,,1",
        "cart-recovery,3,send-es,whatsapp,sent,,1",
        "cart-recovery,3,send-es,whatsapp,delivered,,1",
        "cart-recovery,3,send-es,whatsapp,read,,1",
        "cart-recovery,3,send-es,whatsapp,failed,131026,1",
        "cart-recovery,3,send-es,whatsapp,skipped,no_consent,1",
        "cart-recovery,3,send-es,whatsapp,time_to_deliver_count,,1",
        "cart-recovery,3,send-es,whatsapp,time_to_deliver_median_seconds,,3.0",
        "cart-recovery,3,send-es,whatsapp,time_to_deliver_p90_seconds,,3.0",
        "cart-recovery,3,send-es,whatsapp,time_to_read_count,,1",
        "cart-recovery,3,send-es,whatsapp,time_to_read_median_seconds,,30.0",
        "cart-recovery,3,send-es,whatsapp,time_to_read_p90_seconds,,30.0",
        "cart-recovery,3,wait-order,wait_for_event,visits,,1",
        "cart-recovery,3,wait-order,wait_for_event,outcome,event,1",
        "cart-recovery,3,wait-order,wait_for_event,converted,,1",
        "cart-recovery,3,wait-order,wait_for_event,timed_out,,0",
    ]


def test_json_mirrors_the_report() -> None:
    report = aggregate(SMALL, SMALL_STEPS)
    data = orjson.loads(to_json(report))
    no_timing = {"count": 0, "median_seconds": None, "p90_seconds": None}
    assert data == {
        "journeys": [
            {
                "journey_id": "cart-recovery",
                "version": 3,
                "entered": 1,
                "completed": 1,
                "exited": {"completed": 1},
                "converted": 1,
                "funnel": {"entered": 1, "sent": 1, "delivered": 1, "read": 1, "converted": 1},
                "activities": [
                    {
                        "activity_id": "send-es",
                        "activity_type": "whatsapp",
                        "visits": 1,
                        "outcomes": {"sent": 1},
                        "converted": 0,
                        "timed_out": 0,
                        "messages": 3,
                        "accepted": 1,
                        "sent": 1,
                        "delivered": 1,
                        "read": 1,
                        "failed": {"131026": 1},
                        "skipped": {"no_consent": 1},
                        "time_to_deliver": {"count": 1, "median_seconds": 3.0, "p90_seconds": 3.0},
                        "time_to_read": {"count": 1, "median_seconds": 30.0, "p90_seconds": 30.0},
                    },
                    {
                        "activity_id": "wait-order",
                        "activity_type": "wait_for_event",
                        "visits": 1,
                        "outcomes": {"event": 1},
                        "converted": 1,
                        "timed_out": 0,
                        "messages": 0,
                        "accepted": 0,
                        "sent": 0,
                        "delivered": 0,
                        "read": 0,
                        "failed": {},
                        "skipped": {},
                        "time_to_deliver": no_timing,
                        "time_to_read": no_timing,
                    },
                ],
            }
        ],
        "records": {
            "delivery_events": 6,
            "step_events": 4,
            "duplicate_delivery_events": 0,
            "duplicate_step_events": 0,
            "unreadable": 0,
        },
        "since": None,
        "until": None,
        "missing_topics": [],
    }


def test_table_shows_each_activity_and_the_funnel() -> None:
    console = Console(record=True, width=200, file=io.StringIO())
    render_table(aggregate(SMALL, SMALL_STEPS), console)
    text = console.export_text()
    assert "entered 1 → sent 1 → delivered 1 → read 1 → converted 1" in text
    send_row = next(line for line in text.splitlines() if "send-es" in line)
    assert [cell.strip() for cell in send_row.split("│")[1:-1]] == [
        "send-es",
        "whatsapp",
        "1",
        "sent: 1",
        "1",
        "1",
        "1",
        "131026: 1",
        "no_consent: 1",
        "3.0s",
        "3.0s",
        "30.0s",
        "30.0s",
    ]


JOURNEY = """
id: cart-recovery
name: Abandoned cart recovery
entry: {event: cart.abandoned}
start: send-es
activities:
  send-es: {type: whatsapp, template: cart_reminder, language: es, next: wait-order}
  wait-order: {type: wait_for_event, event: order.placed, timeout: 1d, next: done, on_timeout: done}
  done: {type: end}
"""


def test_html_draws_the_funnel_and_the_diagram_with_counts() -> None:
    report = aggregate([*SMALL, *lifecycle("p-9", 2, journey="legacy")], SMALL_STEPS)
    page = to_html(report, {"cart-recovery@3": parse_journey(JOURNEY)})
    assert '<g class="stage" data-stage="entered" data-value="1">' in page
    assert '<g class="stage" data-stage="converted" data-value="1">' in page
    assert 'data-activity="wait-order" data-type="wait_for_event"' in page
    assert "Abandoned cart recovery (cart-recovery) · v3" in page
    assert page.count("<svg") == 3  # two funnels and one diagram: legacy is not deployed
    assert "funnel only" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T09:00:00Z", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T09:00:00", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("2026-11-24T10:00:00+01:00", datetime(2026, 11, 24, 9, 0, tzinfo=UTC)),
        ("7d", T0 - timedelta(days=7)),
        ("90m", T0 - timedelta(minutes=90)),
    ],
)
def test_since_and_until_take_iso_times_or_durations_ago(text: str, expected: datetime) -> None:
    assert parse_moment(text, T0) == expected


def test_step_records_republished_after_a_crash_count_once_by_seq() -> None:
    def numbered(kind: str, seconds: float, seq: int, activity: str | None = None) -> bytes:
        record = orjson.loads(step(kind, "cart-recovery:3:p-1:1", seconds, activity=activity))
        return orjson.dumps({**record, "seq": seq})

    builder = ReportBuilder()
    for raw in (
        numbered("entered", 0, 0),
        numbered("activity", 5, 1, "wait-1h"),
        numbered("activity", 9, 1, "wait-1h"),  # the same step, published again later
        numbered("activity", 20, 2, "wait-1h"),  # a loop's second visit: a new seq
    ):
        builder.add_step(raw)
    assert builder.duplicate_steps == 1
    [journey] = builder.result().journeys
    assert journey.entered == 1
    assert sum(a.visits for a in journey.activities if a.activity_id == "wait-1h") == 2
