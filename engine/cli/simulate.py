"""`journeyctl simulate JOURNEY`: what a journey would do with recorded profile events.

Events come from a JSON-lines file (`--events`, the JSON of the profile-events topic) or from
the topic itself (`--from-topic --since T --limit N`: a bounded read from each partition's
offset at T up to its end when the read starts). They run through the journey on the virtual
clock (engine/testing), nothing is published. The output is a timeline per profile and a
summary; `--compare OLD.yaml` replays the same events through another version and shows
what changes: entries, messages and exits by reason, and the profiles that differ.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import ValidationError

from connectors.kafka import reader
from engine.cli.common import load_settings, run_kafka
from engine.core.loader import JourneyValidationError, load_journey
from engine.reporting.reader import assign_range, drain
from engine.testing.replay import differences, group_events, replay, summarize
from engine.testing.runner import Simulator, Trace
from engine.testing.show import iso, masked, timeline_lines
from engine.testing.suite import DEFAULT_START
from schemas.events import ProfileAttributes, ProfileEvent
from schemas.journey import JourneyDefinition
from schemas.settings import Settings

READ_TIMEOUT_SECONDS = 60.0


class InputError(Exception):
    """A bad line in an input file: FILE:LINE: message."""


def read_events(path: str) -> list[ProfileEvent]:
    return [ProfileEvent.model_validate(obj) for obj in _json_lines(path, ProfileEvent)]


def read_profiles(path: str) -> dict[str, dict[str, Any]]:
    """`{"profile_id": ..., "attributes": {...}}` per line (`id` is accepted for profile_id)."""
    out: dict[str, dict[str, Any]] = {}
    for number, obj in enumerate(_json_lines(path, None), 1):
        pid = obj.get("profile_id", obj.get("id"))
        if not isinstance(pid, str) or not pid:
            raise InputError(f"{path}:{number}: a profile needs a `profile_id`")
        try:
            attributes = ProfileAttributes.model_validate(obj.get("attributes") or {})
        except ValidationError as exc:
            raise InputError(f"{path}:{number}: {_first(exc)}") from None
        out[pid] = attributes.model_dump(exclude_none=True)
    return out


def _json_lines(path: str, model: type[ProfileEvent] | None) -> Iterable[dict[str, Any]]:
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{number}: expected a JSON object")
        if model is not None:
            try:
                model.model_validate(obj)
            except ValidationError as exc:
                raise InputError(f"{path}:{number}: {_first(exc)}") from None
        yield obj


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "<record>"
    return f"{where}: {err['msg']}"


async def read_topic(
    settings: Settings, since: datetime | None, limit: int, timeout: float
) -> tuple[list[ProfileEvent], int]:
    """Up to `limit` valid events of profile-events from `since`; and how many were not."""
    events: list[ProfileEvent] = []
    bad = 0

    class _Enough(Exception):
        pass

    def add(value: bytes | None) -> None:
        nonlocal bad
        try:
            events.append(ProfileEvent.model_validate_json(value or b""))
        except ValidationError:
            bad += 1  # the worker dead-letters these; a replay leaves them out
        if len(events) >= limit:
            raise _Enough

    consumer = reader(settings, auto_offset_reset="earliest")
    topic = settings.topic_profile_events
    try:
        await consumer.start()
        stops, _missing = await assign_range(consumer, [topic], since, None)
        try:
            await drain(consumer, {topic: add}, stops, None, timeout)
        except _Enough:
            pass
    finally:
        await consumer.stop()
    return events, bad


def _load(path: str, also: tuple[str, ...]) -> list[JourneyDefinition]:
    try:
        return [load_journey(p) for p in (path, *also)]
    except JourneyValidationError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)


@click.command("simulate")
@click.argument("journey", type=click.Path())
@click.option("--events", "events_file", type=click.Path(), help="profile events, JSON lines")
@click.option("--profiles", "profiles_file", type=click.Path(), help="profiles, JSON lines")
@click.option("--from-topic", is_flag=True, help="read the events from profile-events")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    default=None,
    help="with --from-topic: records written at or after this time (UTC without a zone)",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=10_000,
    show_default=True,
    help="with --from-topic: at most this many events",
)
@click.option("--compare", "old_file", type=click.Path(), help="an older version to compare with")
@click.option("--also", multiple=True, type=click.Path(), help="journeys a jump may enter")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def simulate_command(
    journey: str,
    events_file: str | None,
    profiles_file: str | None,
    from_topic: bool,
    since: datetime | None,
    limit: int,
    old_file: str | None,
    also: tuple[str, ...],
    fmt: str,
) -> None:
    """Run profile events through JOURNEY on a virtual clock and show what it would do."""
    if (events_file is None) == (not from_topic):
        raise click.UsageError("give --events FILE or --from-topic (one of them)")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    new = _load(journey, also)
    old = _load(old_file, also) if old_file else None
    try:
        profiles = read_profiles(profiles_file) if profiles_file else {}
        if events_file is not None:
            events, bad = read_events(events_file), 0
        else:
            events, bad = _read_topic(since, limit)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    grouped = group_events(events)
    start = min((e.occurred_at for e in events), default=DEFAULT_START)
    traces = replay(Simulator(new, deployed_at=start), grouped, profiles)
    old_traces = replay(Simulator(old, deployed_at=start), grouped, profiles) if old else None
    new_id, old_id = new[0].id, old[0].id if old else ""
    report: dict[str, Any] = {
        "journey": new_id,
        "events": len(events),
        "skipped_records": bad,
        "summary": summarize(traces, new_id).to_json(),
        "profiles": [_profile_json(pid, trace) for pid, trace in traces.items()],
    }
    if old_traces is not None:
        report["compare"] = {
            "old": summarize(old_traces, old_id).to_json(),
            "differences": [
                {"profile_id": d.profile_id, "old": d.old, "new": d.new}
                for d in differences(old_traces, traces, old_id, new_id)
            ],
        }
    if fmt == "json":
        click.echo(masked(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()))
    else:
        _print_table(report, traces)


def _read_topic(since: datetime | None, limit: int) -> tuple[list[ProfileEvent], int]:
    settings = load_settings()
    return run_kafka(read_topic(settings, since, limit, READ_TIMEOUT_SECONDS), settings)


def _profile_json(pid: str, trace: Trace) -> dict[str, Any]:
    return {
        "profile_id": pid,
        "timeline": [
            {"at": iso(x.at), "journey_id": x.journey_id, "activity_id": x.activity_id}
            | {"what": x.what, "detail": x.detail}
            for x in trace.timeline
        ],
        "messages": [
            {"activity_id": m.activity_id, "template": m.template, "language": m.language}
            | {"at": iso(m.at), "body": m.body, "status": m.status}
            for m in trace.messages
        ],
        "exits": trace.exits(),
    }


def _print_table(report: dict[str, Any], traces: Mapping[str, Trace]) -> None:
    for pid, trace in traces.items():
        click.echo(f"profile {masked(pid)}")
        for line in timeline_lines(trace):
            click.echo(f"  {line}")
    click.echo("")
    rows = [("", report["summary"])]
    if "compare" in report:
        rows = [("old", report["compare"]["old"]), ("new", report["summary"])]
    click.echo(f"{report['journey']}: {report['events']} events, {len(traces)} profiles")
    for label, summary in rows:
        click.echo(f"  {label:<4}{_summary_line(summary)}")
    if report["skipped_records"]:
        click.echo(f"  {report['skipped_records']} records were not valid profile events")
    if "compare" in report:
        diffs = report["compare"]["differences"]
        click.echo(f"  {len(diffs)} profile(s) would be treated differently")
        for diff in diffs[:50]:
            click.echo(f"  {masked(diff['profile_id'])}")
            click.echo(f"    old: {'; '.join(diff['old'])}")
            click.echo(f"    new: {'; '.join(diff['new'])}")


def _summary_line(summary: Mapping[str, Any]) -> str:
    def pairs(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

    return (
        f"entries {summary['entries']} · messages {pairs(summary['messages'])} · "
        f"skipped {pairs(summary['skipped'])} · exits {pairs(summary['exits'])}"
    )
