"""The report's four renderers: a rich table, CSV, JSON and a self-contained HTML page."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import asdict
from html import escape
from typing import Final

import orjson
from rich.console import Console
from rich.table import Table

from engine.reporting.aggregate import (
    FUNNEL_STAGES,
    ActivityReport,
    Funnel,
    JourneyReport,
    Report,
    Timing,
)
from engine.reporting.html import PAGE_STYLE, journey_svg
from schemas.journey import JourneyDefinition


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
