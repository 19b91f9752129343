"""`journeyctl`: validate, deploy and operate journeys; run the worker, webhook and sandbox.

Exit codes are engine/cli/common.py's: 0 ok, 1 invalid input, 2 cannot reach Kafka, 3 not
found, 4 other failure. Commands that need faust or aiohttp import them when they run, so
the others start without them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from engine.cli.bulk_import import import_command
from engine.cli.campaign import campaign_group
from engine.cli.common import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    fail,
    load_files,
    load_settings,
    run_forever,
    run_kafka,
)
from engine.cli.ingest import ingest_command
from engine.cli.inspect import inspect_command
from engine.cli.publish import publish_file
from engine.cli.report import report_command
from engine.cli.simulate import simulate_command
from engine.cli.tail import tail_topic
from engine.cli.templates import install as install_templates
from engine.cli.test import test_command
from engine.core.graph import to_mermaid
from engine.core.loader import load_journey
from engine.observability import configure_logging
from engine.reporting.html import mermaid_page
from engine.streaming.registry import (
    next_deployment,
    publish_deployments,
    read_deployments,
    with_status,
)
from engine.streaming.topics import ensure_topics


class _Journeyctl(click.Group):
    """click exits 2 on a usage error; here 2 means "cannot reach Kafka", so those exit 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_INVALID)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILURE)


@click.group(cls=_Journeyctl, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate the journey engine. Configuration comes from the environment
    (KAFKA_BOOTSTRAP_SERVERS, WHATSAPP_*, ...; see the README)."""


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def validate(files: tuple[str, ...]) -> None:
    """Check journey YAML files; print FILE:LINE:COLUMN: field: message for each problem."""
    for f, journey in load_files(files, load_journey):
        click.echo(f"ok  {f}  ({journey.id}, {len(journey.activities)} activities)")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--by", "deployed_by", default=None, help="who deploys (recorded with the version)")
def deploy(files: tuple[str, ...], deployed_by: str | None) -> None:
    """Validate and deploy journeys; an unchanged journey keeps its version."""
    settings = load_settings()
    loaded = load_files(files, load_journey)

    async def go() -> list[str]:
        await ensure_topics(settings)
        current = await read_deployments(settings)
        records, lines = [], []
        for f, journey in loaded:
            dep = next_deployment(
                journey, current.get(journey.id), source=f, deployed_by=deployed_by
            )
            if dep is None:
                lines.append(f"unchanged  {journey.id}  v{current[journey.id].version}")
            else:
                records.append(dep)
                lines.append(f"deployed   {journey.id}  v{dep.version}")
        await publish_deployments(settings, records)
        return lines

    for line in run_kafka(go(), settings):
        click.echo(line)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def list_(as_json: bool) -> None:
    """List deployed journeys with their newest version and status."""
    settings = load_settings()
    deps = run_kafka(read_deployments(settings), settings)
    if as_json:
        click.echo(
            orjson.dumps(
                [
                    {
                        "id": d.journey_id,
                        "version": d.version,
                        "status": d.status,
                        "name": d.definition.name,
                        "deployed_at": d.deployed_at.isoformat(),
                    }
                    for d in sorted(deps.values(), key=lambda d: d.journey_id)
                ]
            ).decode()
        )
        return
    click.echo(f"{'ID':<28} {'VERSION':>7}  {'STATUS':<9} {'DEPLOYED':<25} NAME")
    for d in sorted(deps.values(), key=lambda d: d.journey_id):
        click.echo(
            f"{d.journey_id:<28} {d.version:>7}  {d.status:<9} {d.deployed_at.isoformat()[:19]:<25} {d.definition.name}"
        )


def _set_status(journey_id: str, status: str) -> None:
    settings = load_settings()

    async def go() -> str:
        deps = await read_deployments(settings)
        dep = deps.get(journey_id)
        if dep is None:
            return ""
        if dep.status == "archived" and status != "archived":
            return "archived"
        await publish_deployments(settings, [with_status(dep, status)])  # type: ignore[arg-type]
        return f"{journey_id} v{dep.version} is now {status}"

    out = run_kafka(go(), settings)
    if not out:
        fail(f"no journey {journey_id!r} is deployed (see `journeyctl list`)", EXIT_NOT_FOUND)
    if out == "archived":
        fail(f"{journey_id!r} is archived; deploy it again to bring it back", EXIT_INVALID)
    click.echo(out)


@main.command()
@click.argument("journey_id")
def pause(journey_id: str) -> None:
    """Stop admitting profiles; live instances go on."""
    _set_status(journey_id, "paused")


@main.command()
@click.argument("journey_id")
def resume(journey_id: str) -> None:
    """Admit profiles again after a pause."""
    _set_status(journey_id, "active")


@main.command()
@click.argument("journey_id")
def archive(journey_id: str) -> None:
    """Admit nobody and end every live instance (reason: archived)."""
    _set_status(journey_id, "archived")


@main.command()
@click.argument("target")
@click.option(
    "--html",
    "html_out",
    type=click.Path(),
    default=None,
    help="also write a self-contained HTML page",
)
def graph(target: str, html_out: str | None) -> None:
    """Print a journey (a FILE, or the ID of a deployed one) as a Mermaid flowchart."""
    if Path(target).exists():
        definition = load_files((target,), load_journey)[0][1]
    else:
        settings = load_settings()
        deps = run_kafka(read_deployments(settings), settings)
        if target not in deps:
            fail(f"{target!r} is neither a file nor a deployed journey", EXIT_NOT_FOUND)
        definition = deps[target].definition
    text = to_mermaid(definition)
    click.echo(text)
    if html_out:
        Path(html_out).write_text(
            mermaid_page(definition.name, [(definition, text)]), encoding="utf-8"
        )
        click.echo(f"wrote {html_out}", err=True)


@main.command()
@click.option(
    "--role",
    default="all",
    show_default=True,
    help="all, or a comma-separated list of engine, whatsapp, http",
)
@click.option("--no-web", is_flag=True, help="do not serve /healthz, /readyz and /metrics")
def worker(role: str, no_web: bool) -> None:
    """Run the engine and the WhatsApp connector (or one role) until stopped."""
    from engine.streaming.app import ROLES, run_worker

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    roles = ROLES if role == "all" else frozenset(r.strip() for r in role.split(",") if r.strip())
    if not roles <= ROLES:
        fail(f"unknown role(s) {sorted(roles - ROLES)}; choose from {sorted(ROLES)}", EXIT_INVALID)
    run_kafka(ensure_topics(settings), settings)
    run_worker(settings, roles, web=not no_web)


@main.command()
@click.option("--port", type=int, default=None, help="default: WEBHOOK_PORT (8080)")
@click.option("--host", default=None, help="default: WEBHOOK_HOST (127.0.0.1)")
def webhook(port: int | None, host: str | None) -> None:
    """Receive WhatsApp webhooks (statuses, inbound messages) at /webhooks/whatsapp."""
    from connectors.whatsapp.webhook import run_webhook

    settings = load_settings()
    updates: dict[str, Any] = {}
    if port is not None:
        updates["webhook_port"] = port
    if host is not None:
        updates["webhook_host"] = host
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_format, settings.log_level)
    if settings.whatsapp_app_secret is None:
        fail("WHATSAPP_APP_SECRET is not set: webhooks cannot be verified", EXIT_INVALID)
    # The receiver reads profile-phones and delivery-events: create them with their
    # settings (compacted, partitions) before a broker auto-creates them with defaults.
    run_kafka(ensure_topics(settings), settings)
    run_forever(run_webhook(settings))


@main.command()
@click.option("--port", type=int, default=8070, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--templates", "templates_file", type=click.Path(exists=True), required=True)
@click.option("--webhook-url", default=None, help="where to post signed status webhooks")
@click.option(
    "--rate",
    type=float,
    default=None,
    help="per-number cap in messages/s (default WHATSAPP_RATE_PER_SECOND)",
)
@click.option("--failure-share", type=float, default=0.0, show_default=True)
@click.option("--read-share", type=float, default=1.0, show_default=True)
def sandbox(
    port: int,
    host: str,
    templates_file: str,
    webhook_url: str | None,
    rate: float | None,
    failure_share: float,
    read_share: float,
) -> None:
    """Serve a local WhatsApp Cloud API for development and tests (loopback only)."""
    from connectors.whatsapp.sandbox import SandboxConfig, load_templates, run_sandbox

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    if settings.whatsapp_token is None:
        fail("WHATSAPP_TOKEN is not set: the sandbox checks the bearer token", EXIT_INVALID)
    try:
        templates = load_templates(templates_file)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID)
    config = SandboxConfig(
        host=host,
        port=port,
        token=settings.whatsapp_token.get_secret_value(),
        app_secret=settings.whatsapp_app_secret.get_secret_value()
        if settings.whatsapp_app_secret
        else "",
        phone_number_ids=[settings.whatsapp_phone_number_id],
        templates=templates,
        webhook_url=webhook_url,
        rate_per_second=rate or settings.whatsapp_rate_per_second,
        failure_share=failure_share,
        read_share=read_share,
    )
    run_forever(run_sandbox(config))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--topic", default=None, help="default: TOPIC_PROFILE_EVENTS (profile-events)")
@click.option(
    "--validate/--no-validate",
    default=True,
    show_default=True,
    help="check each line against the ProfileEvent schema before sending",
)
def publish(file: str, topic: str | None, validate: bool) -> None:
    """Publish JSON lines of profile events, keyed by profile id."""
    settings = load_settings()
    sent, problems = run_kafka(
        publish_file(
            settings, Path(file), topic or settings.topic_profile_events, validate=validate
        ),
        settings,
    )
    for p in problems:
        click.echo(p, err=True)
    click.echo(f"published {sent} event(s) to {topic or settings.topic_profile_events}")
    if problems:
        fail(f"{len(problems)} line(s) were not published", EXIT_INVALID)


@main.command()
@click.argument("topic")
@click.option("--from-beginning", is_flag=True)
@click.option("--limit", type=int, default=None, help="stop after this many records")
@click.option("--timeout", type=float, default=None, help="stop after this many seconds")
@click.option("--json", "as_json", is_flag=True, help="print raw JSON lines")
def tail(
    topic: str, from_beginning: bool, limit: int | None, timeout: float | None, as_json: bool
) -> None:
    """Print records of a topic as they arrive (delivery and step events as a table)."""
    settings = load_settings()
    names = {
        "delivery-events": settings.topic_delivery_events,
        "journey-steps": settings.topic_journey_steps,
        "dead-letter": settings.topic_dead_letter,
        "whatsapp-requests": settings.topic_whatsapp_requests,
        "profile-events": settings.topic_profile_events,
    }
    coro = tail_topic(
        settings,
        names.get(topic, topic),
        from_beginning=from_beginning,
        limit=limit,
        timeout=timeout,
        as_json=as_json,
    )
    try:
        run_kafka(coro, settings, timeout=None)
    except KeyboardInterrupt:
        pass


main.add_command(report_command)
main.add_command(inspect_command)
main.add_command(campaign_group)
main.add_command(test_command)
main.add_command(ingest_command)
main.add_command(import_command)
main.add_command(simulate_command)
install_templates(main, campaign_group)
