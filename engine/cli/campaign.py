"""`journeyctl campaign`: validate, deploy, list, trigger and cancel campaigns.

Triggers and cancels are published straight to Kafka (no HTTP): a run record on
`campaign-runs` and, for an explicit profile list, one tick per profile on `journey-timers`.
Exit codes as for `journeyctl`: 1 invalid input (or refused: cancelled, paused), 2 cannot
reach Kafka, 3 not found.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from pydantic import ValidationError

from engine.campaigns.planning import next_campaign_deployment, plan_trigger, trigger_refusal
from engine.campaigns.runs import publish_run, read_runs
from engine.campaigns.schedule import describe, next_occurrence, one_off_time
from engine.cli.common import (
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    fail,
    load_files,
    load_settings,
    run_kafka,
)
from engine.core.loader import load_campaign
from engine.streaming.registry import publish_deployments, read_deployments, with_status
from engine.streaming.topics import ensure_topics
from schemas.campaign import CampaignRun, TriggerRequest
from schemas.deployment import JourneyDeployment

if TYPE_CHECKING:
    from engine.campaigns.planning import RunRegistry


def _campaigns(deployments: dict[str, JourneyDeployment]) -> list[JourneyDeployment]:
    return sorted(
        (d for d in deployments.values() if d.kind == "campaign"), key=lambda d: d.journey_id
    )


def _status(deployment: JourneyDeployment) -> str:
    return "cancelled" if deployment.status == "archived" else deployment.status


@click.group("campaign", context_settings={"help_option_names": ["-h", "--help"]})
def campaign_group() -> None:
    """Campaigns: one WhatsApp message to an audience, on a schedule or when triggered."""


@campaign_group.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def validate(files: tuple[str, ...]) -> None:
    """Check campaign YAML files; print FILE:LINE:COLUMN: field: message for each problem."""
    for f, campaign in load_files(files, load_campaign):
        click.echo(f"ok  {f}  ({campaign.id}, {describe(campaign.schedule)})")


@campaign_group.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--by", "deployed_by", default=None, help="who deploys (recorded with the version)")
def deploy(files: tuple[str, ...], deployed_by: str | None) -> None:
    """Validate and deploy campaigns; an unchanged campaign keeps its version.

    Deploying a cancelled campaign again makes it active again.
    """

    settings = load_settings()
    loaded = load_files(files, load_campaign)

    async def go() -> list[str]:
        await ensure_topics(settings)
        current = await read_deployments(settings)
        records, lines = [], []
        for f, campaign in loaded:
            try:
                dep = next_campaign_deployment(
                    campaign, current.get(campaign.id), source=f, deployed_by=deployed_by
                )
            except ValueError as exc:
                return [f"error: {exc}"]
            when = describe(campaign.schedule)
            if dep is None:
                lines.append(f"unchanged  {campaign.id}  v{current[campaign.id].version}  {when}")
                continue
            records.append(dep)
            lines.append(f"deployed   {campaign.id}  v{dep.version}  {when}")
            schedule = campaign.schedule
            if schedule is not None and not schedule.on_deploy:
                upcoming = next_occurrence(schedule, dep.deployed_at)
                if upcoming is not None:
                    lines.append(f"           next run at {upcoming.isoformat()}")
                elif schedule.every is None:
                    past = one_off_time(schedule).isoformat()
                    lines.append(
                        f"warning:   {campaign.id}: `at` {past} has passed; it will not run"
                    )
        await publish_deployments(settings, records)
        return lines

    lines = run_kafka(go(), settings)
    for line in lines:
        click.echo(line, err=line.startswith("error:"))
    if lines and lines[0].startswith("error:"):
        raise SystemExit(EXIT_INVALID)


@campaign_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON, with every run")
def list_(as_json: bool) -> None:
    """List deployed campaigns: status, schedule, next run and runs so far."""

    settings = load_settings()

    async def go() -> tuple[dict[str, JourneyDeployment], RunRegistry]:
        return await read_deployments(settings), await read_runs(settings)

    deployments, registry = run_kafka(go(), settings)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for dep in _campaigns(deployments):
        assert dep.campaign is not None
        schedule = dep.campaign.schedule
        upcoming = next_occurrence(schedule, now) if schedule is not None else None
        runs = []
        for run_id in registry.run_ids(dep.journey_id):
            run = registry.get(dep.journey_id, run_id)
            progress = registry.progress.get((dep.journey_id, run_id), {})
            runs.append(
                {
                    "run_id": run_id,
                    "status": run.status if run else "running",
                    "target": run.target if run else "audience",
                    "source": run.source if run else "schedule",
                    "requested_at": run.requested_at.isoformat() if run else None,
                    "profiles": run.profiles if run else 0,
                    "partitions_done": len(progress),
                    "queued": sum(p.queued for p in progress.values()),
                }
            )
        rows.append(
            {
                "id": dep.journey_id,
                "version": dep.version,
                "status": _status(dep),
                "name": dep.definition.name,
                "schedule": describe(schedule),
                "next_run": upcoming.isoformat() if upcoming and dep.status == "active" else None,
                "runs": runs,
            }
        )
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    click.echo(f"{'ID':<24} {'VERSION':>7}  {'STATUS':<9} {'RUNS':>4}  {'NEXT RUN':<25} SCHEDULE")
    for row in rows:
        click.echo(
            f"{row['id']:<24} {row['version']:>7}  {row['status']:<9} {len(row['runs']):>4}  "
            f"{(row['next_run'] or '-')[:19]:<25} {row['schedule']}"
        )


def _profile_ids(profiles_file: str | None, profiles: tuple[str, ...]) -> list[str] | None:
    ids = list(profiles)
    if profiles_file:
        for line in Path(profiles_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                ids.append(line)
    return ids or None


@campaign_group.command()
@click.argument("campaign_id")
@click.option("--run-id", default=None, help="idempotency: the same run never messages twice")
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="a file of profile ids, one a line (instead of the whole audience)",
)
@click.option("--profile", "profiles", multiple=True, help="a profile id (repeatable)")
@click.option("--audience", default=None, help="a CEL condition that narrows the audience")
@click.option("--context", "context_json", default=None, help="JSON object: `context.*`")
def trigger(
    campaign_id: str,
    run_id: str | None,
    profiles_file: str | None,
    profiles: tuple[str, ...],
    audience: str | None,
    context_json: str | None,
) -> None:
    """Start a run of a campaign: its whole audience, or the profiles named."""

    settings = load_settings()
    try:
        context = orjson.loads(context_json) if context_json else {}
        request = TriggerRequest(
            run_id=run_id,
            profile_ids=_profile_ids(profiles_file, profiles),
            audience=audience,
            context=context,
        )
    except (orjson.JSONDecodeError, ValidationError) as exc:
        fail(f"invalid trigger: {exc}", EXIT_INVALID)

    async def go() -> tuple[int, str]:
        deployed = (await read_deployments(settings)).get(campaign_id)
        known = await read_runs(settings)
        existing = known.get(campaign_id, request.run_id) if request.run_id else None
        refused = trigger_refusal(campaign_id, deployed, existing)
        if refused is not None:
            return refused
        assert deployed is not None
        run, ticks = plan_trigger(
            campaign_id, deployed.version, request, now=datetime.now(UTC), source="cli"
        )
        await publish_run(settings, run, ticks)
        who = f"{run.profiles} profile(s)" if run.target == "profiles" else "its audience"
        again = " (again: nobody gets it twice)" if existing is not None else ""
        return 202, f"triggered {campaign_id} run {run.run_id} for {who}{again}"

    status, message = run_kafka(go(), settings)
    if status == 404:
        fail(message, EXIT_NOT_FOUND)
    if status != 202:
        fail(message, EXIT_INVALID)
    click.echo(message)


@campaign_group.command()
@click.argument("campaign_id")
@click.option("--run-id", default=None, help="cancel only this run; the campaign goes on")
def cancel(campaign_id: str, run_id: str | None) -> None:
    """Stop sending: the whole campaign (runs, schedule, triggers), or one run of it.

    Workers stop fanning the run out, and work already queued for it is skipped.
    """

    settings = load_settings()

    async def go() -> str:
        deployed = (await read_deployments(settings)).get(campaign_id)
        if deployed is None or deployed.kind != "campaign":
            return ""
        registry = await read_runs(settings)
        if run_id is None:
            await publish_deployments(settings, [with_status(deployed, "archived")])
            # Its triggered runs end too, so deploying the campaign again does not resume them.
            for run in registry.audience_runs():
                if run.campaign_id == campaign_id:
                    await publish_run(settings, run.model_copy(update={"status": "cancelled"}))
            return f"{campaign_id} v{deployed.version} is cancelled"
        known = registry.get(campaign_id, run_id)
        now = datetime.now(UTC)
        run = (
            known.model_copy(update={"status": "cancelled"})
            if known is not None
            else CampaignRun(
                campaign_id=campaign_id,
                run_id=run_id,
                status="cancelled",
                source="cli",
                requested_at=now,
            )
        )
        await publish_run(settings, run)
        return f"{campaign_id} run {run_id} is cancelled"

    try:
        message = run_kafka(go(), settings)
    except ValidationError as exc:
        fail(f"invalid run id: {exc.errors()[0]['msg']}", EXIT_INVALID)
    if not message:
        fail(
            f"no campaign {campaign_id!r} is deployed (see `journeyctl campaign list`)",
            EXIT_NOT_FOUND,
        )
    click.echo(message)


if __name__ == "__main__":
    campaign_group()
