"""`journeyctl inspect PROFILE_ID`: why a profile is (or is not) in each journey.

The profile's state comes from a worker's `GET /api/profiles/{id}` (any worker: it routes to
the owner), its recent journey-steps, delivery-events and dead-letter records straight from
Kafka; engine.console.timeline merges them. engine/cli/main.py adds it with one line.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from engine.cli.common import EXIT_INVALID, EXIT_NOT_FOUND, fail, load_settings, run_kafka
from engine.cli.report import parse_moment
from engine.console.records import read_profile_records
from engine.console.timeline import inspection
from schemas.settings import Settings

FORMATS = ("table", "json")


def fetch_state(
    settings: Settings, worker: str, profile_id: str, timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """(state or None, a warning when the worker could not say)."""
    headers = {}
    if settings.console_token is not None:
        headers["Authorization"] = f"Bearer {settings.console_token.get_secret_value()}"
    url = f"{worker.rstrip('/')}/api/profiles/{quote(profile_id, safe='')}"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return None, f"no state: the worker at {worker} did not answer ({exc}); records only"
    if response.status_code == 404:
        return None, None
    if response.status_code != 200:
        try:
            why = response.json().get("error", response.text)
        except ValueError:
            why = response.text
        return None, f"no state: the worker at {worker} answered {response.status_code}: {why}"
    state: dict[str, Any] = response.json()
    return state, None


def render(result: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]Profile {result['profile_id']}[/bold]", highlight=False)
    state = result["state"]
    if state is not None:
        console.print(f"consent (WhatsApp): {state['consent']['whatsapp']}", highlight=False)
    else:
        console.print("the engine holds no state for this profile", highlight=False)
    why = Table(title="Why", title_justify="left")
    for column in ("journey", "verdict", "why"):
        why.add_column(column, overflow="fold")
    for line in result["why"]:
        why.add_row(line["journey_id"], line["verdict"], line["text"])
    console.print(why)
    if result["instances"]:
        live = Table(title="Live instances", title_justify="left")
        for column in ("journey", "v", "activity", "waiting for", "until", "entered at"):
            live.add_column(column)
        for i in result["instances"]:
            wait = " ".join(x for x in (i["waiting_for"], i["wait_event"]) if x) or "running"
            live.add_row(
                i["journey_id"],
                str(i["version"]),
                i["activity_id"],
                wait,
                i["waiting_until"] or "",
                i["entered_at"],
            )
        console.print(live)
    timeline = Table(title=f"Timeline since {result['since']}", title_justify="left")
    for column in ("time", "source", "journey", "what"):
        timeline.add_column(column, overflow="fold")
    for item in result["timeline"]:
        timeline.add_row(str(item["at"]), item["source"], item["journey_id"] or "", item["text"])
    console.print(timeline)


@click.command("inspect")
@click.argument("profile_id")
@click.option("--format", "fmt", default="table", show_default=True, metavar="|".join(FORMATS))
@click.option(
    "--since", default="7d", show_default=True, metavar="TIME", help="ISO time, or a duration ago"
)
@click.option(
    "--worker",
    default=None,
    metavar="URL",
    help="a worker's web address (default WORKER_WEB_URL, else http://WORKER_WEB_HOST:PORT)",
)
@click.option("--timeout", type=float, default=15.0, show_default=True, help="seconds")
def inspect_command(
    profile_id: str, fmt: str, since: str, worker: str | None, timeout: float
) -> None:
    """Why a profile got (or did not get) each journey's messages: its state, its recent
    steps, deliveries and dead letters as one timeline, and one line per journey.
    CONSOLE_TOKEN is sent to the worker when set. Phone numbers are masked."""
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}", EXIT_INVALID)
    try:
        start = parse_moment(since, datetime.now(UTC))
    except ValueError as exc:
        fail(f"--since: {exc} (use 2026-11-24T10:00:00Z or 7d)", EXIT_INVALID)
    settings = load_settings()
    state, warning = fetch_state(settings, worker or settings.worker_url(), profile_id, timeout)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    records = run_kafka(
        read_profile_records(settings, profile_id, start, timeout=timeout), settings, timeout=None
    )
    for topic in records.truncated:
        click.echo(f"warning: {topic} was not read whole; give a shorter --since", err=True)
    if (
        state is None
        and not warning
        and not (records.steps or records.deliveries or records.dead_letters)
    ):
        fail(f"no profile {profile_id!r}: no state and no record since {since}", EXIT_NOT_FOUND)
    result = inspection(profile_id, state, records, since=start.isoformat())
    if fmt == "json":
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        render(result, Console(width=160, soft_wrap=False))
