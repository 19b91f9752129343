"""`journeyctl report`: funnel, delivery and conversion figures per journey, version and activity.

engine/cli/main.py adds it with `main.add_command(report_command)`; exit codes are engine/cli/common.py's.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
import orjson
from rich.console import Console

from engine.cli.common import EXIT_FAILURE, EXIT_INVALID, fail, load_settings, run_kafka
from engine.reporting.aggregate import Report
from engine.reporting.cost import CostBuilder, PriceFileError, load_prices, render_cost
from engine.reporting.reader import ReportTimeoutError, read_report
from engine.reporting.render import render_table, to_csv, to_html, to_json
from engine.streaming.registry import read_deployments
from schemas.common import parse_duration
from schemas.journey import JourneyDefinition
from schemas.settings import Settings

FORMATS = ("table", "csv", "json", "html")
_TABLE_WIDTH = 200  # a table piped to a file or a pager keeps its columns instead of 80


def parse_moment(value: str, now: datetime) -> datetime:
    """An ISO time (a bare one is UTC), or a duration such as `7d` meaning that long before now."""
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _gather(
    settings: Settings,
    since: datetime | None,
    until: datetime | None,
    timeout: float,
    journeys: tuple[str, ...],
    with_definitions: bool,
    cost: CostBuilder | None = None,
) -> tuple[Report, dict[str, JourneyDefinition]]:
    also = cost.add_delivery if cost is not None else None
    report = await read_report(settings, since, until, timeout, journeys or None, also)
    if not with_definitions:
        return report, {}
    # Only the deployed version's diagram is known; older versions get the funnel only.
    deployed = await read_deployments(settings)
    return report, {f"{d.journey_id}@{d.version}": d.definition for d in deployed.values()}


def _console(file: IO[str] | None) -> Console:
    if file is None and sys.stdout.isatty():
        return Console()
    return Console(file=file, width=_TABLE_WIDTH, no_color=file is not None)


def _write(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


@click.command("report")
@click.option(
    "--from-beginning",
    is_flag=True,
    help="read both topics from their first record (the default without --since)",
)
@click.option("--since", default=None, metavar="TIME", help="ISO time, or a duration ago (7d)")
@click.option("--until", default=None, metavar="TIME", help="ISO time, or a duration ago (1h)")
@click.option("--format", "fmt", default="table", show_default=True, metavar="|".join(FORMATS))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="write here")
@click.option("--journey", "journeys", multiple=True, metavar="ID", help="only this journey")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds")
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="price table (YAML: category -> calling code -> price) to show cost",
)
def report_command(
    from_beginning: bool,
    since: str | None,
    until: str | None,
    fmt: str,
    output: str | None,
    journeys: tuple[str, ...],
    timeout: float,
    prices_file: str | None,
) -> None:
    """Report per journey, version and activity from delivery-events and journey-steps:
    entered, exited by reason, sent, delivered, read, failed by code, skipped by reason,
    conversions, split paths, median and p90 time to deliver and to read; billable
    messages by category per journey (table and json), and their cost with --prices."""
    # Checked by hand, not click.Choice: click's usage errors exit 2, which here means Kafka.
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}", EXIT_INVALID)
    if from_beginning and since:
        fail("--from-beginning and --since contradict each other; give one", EXIT_INVALID)
    now = datetime.now(UTC)
    try:
        start = parse_moment(since, now) if since else None
        end = parse_moment(until, now) if until else None
    except ValueError as exc:
        fail(f"--since/--until: {exc} (use 2026-11-24T10:00:00Z or 7d)", EXIT_INVALID)
    if start and end and start >= end:
        fail(f"--since ({start.isoformat()}) is not before --until", EXIT_INVALID)
    try:
        prices = load_prices(prices_file) if prices_file else None
    except PriceFileError as exc:
        fail(str(exc), EXIT_INVALID)
    cost = CostBuilder(prices, journeys or None)
    settings = load_settings()
    gather = _gather(settings, start, end, timeout, journeys, fmt == "html", cost)
    try:
        report, definitions = run_kafka(gather, settings, timeout=None)
    except ReportTimeoutError as exc:
        fail(str(exc), EXIT_FAILURE)
    for topic in report.missing_topics:
        click.echo(f"warning: topic {topic!r} does not exist; its figures are empty", err=True)
    _emit(report, definitions, fmt, output, cost)


def _emit(
    report: Report,
    definitions: dict[str, JourneyDefinition],
    fmt: str,
    output: str | None,
    cost: CostBuilder,
) -> None:
    if fmt == "table":
        if output is None:
            render_table(report, _console(None))
            render_cost(cost, _console(None))
            return
        with Path(output).open("w", encoding="utf-8") as file:
            render_table(report, _console(file))
            render_cost(cost, _console(file))
        click.echo(f"wrote {output}", err=True)
    elif fmt == "csv":
        _write(to_csv(report), output)
    elif fmt == "json":
        body = orjson.loads(to_json(report)) | {"billing": cost.to_dict()}
        _write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n", output)
    else:
        _write(to_html(report, definitions), output)
