"""`journeyctl templates` (sync, list) and `--templates FILE` on validate and deploy.

`sync` reads the account's templates from the Cloud API into the templates YAML the sandbox
reads; with `--publish` it also puts each one's status, quality and category on
whatsapp-controls, which the connectors follow. `list` shows that topic's view: what Meta
last said about each template. `--templates FILE` on `validate` and `deploy` (journeys and
campaigns) checks every WhatsApp step against FILE (engine.core.templatecheck); without it
nothing changes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli.common import EXIT_FAILURE, EXIT_INVALID, EXIT_KAFKA, fail, load_settings
from engine.core.loader import JourneyValidationError, load_campaign, load_journey, read_yaml_file
from engine.core.templatecheck import check_templates, index
from schemas.settings import Settings
from schemas.templates import TemplateFileError, dump_templates, load_templates


@click.group("templates", context_settings={"help_option_names": ["-h", "--help"]})
def templates_group() -> None:
    """WhatsApp message templates: read them from Meta, see what Meta says about them."""


@templates_group.command("sync")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="default: stdout")
@click.option(
    "--publish", is_flag=True, help="also publish status, quality and category for the connectors"
)
def sync(output: str | None, publish: bool) -> None:
    """Read WHATSAPP_WABA_ID's templates (GET message_templates) into templates YAML."""
    from connectors.whatsapp.templates_api import TemplatesApiError, fetch_templates

    settings = load_settings()
    try:
        templates, problems = fetch_templates(settings)
    except TemplatesApiError as exc:
        fail(str(exc), EXIT_FAILURE)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    text = dump_templates(templates)
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(templates)} template(s) to {output}", err=True)
    if publish:
        _publish(settings, templates)


def _publish(settings: Settings, templates: list[Any]) -> None:
    from datetime import UTC, datetime

    from aiokafka.errors import KafkaError

    from connectors.whatsapp.controls import publish_controls, template_records

    now = datetime.now(UTC)
    records = []
    for t in templates:
        records += template_records(
            t.name, t.language, now, status=t.status, quality=t.quality, category=t.category
        )
    try:
        asyncio.run(asyncio.wait_for(publish_controls(settings, records), 60))
    except (KafkaError, OSError, TimeoutError) as exc:
        fail(f"cannot publish to {settings.topic_whatsapp_controls}: {exc!r}", EXIT_KAFKA)
    click.echo(
        f"published {len(templates)} template(s) to {settings.topic_whatsapp_controls}", err=True
    )


@templates_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines instead of a table")
def list_(as_json: bool) -> None:
    """What Meta last said about each template: status, quality, category changes."""
    from aiokafka.errors import KafkaError

    from connectors.whatsapp.controls import read_controls

    settings = load_settings()
    try:
        controls = asyncio.run(read_controls(settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        fail(f"cannot read {settings.topic_whatsapp_controls}: {exc!r}", EXIT_KAFKA)
    states = sorted(controls.templates.values(), key=lambda s: (s.name, s.language))
    if as_json:
        for state in states:
            click.echo(state.model_dump_json(exclude_none=True))
        return
    rows = [("TEMPLATE", "LANGUAGE", "STATUS", "QUALITY", "CATEGORY", "UPDATED", "REASON")]
    for s in states:
        category: str = s.category or "-"
        if s.previous_category and s.previous_category != s.category:
            category = f"{s.previous_category} -> {category}"
        rows.append(
            (
                s.name,
                s.language,
                s.status or "-",
                s.quality or "-",
                category,
                s.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                s.reason or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -------------------------------------------------------------------- --templates FILE


def check_files(files: tuple[str, ...], templates_file: str, load: Callable[[str], Any]) -> None:
    """Print each template problem of `files` and exit 1 if any; files that do not load are
    left to the command itself, which reports them."""
    try:
        templates = index(load_templates(templates_file))
    except TemplateFileError as exc:
        fail(str(exc), EXIT_INVALID)
    problems = []
    for f in files:
        try:
            definition = load(f)
            text, name = read_yaml_file(f)
        except JourneyValidationError:
            continue
        problems += check_templates(definition, text, name, templates)
    if problems:
        for p in problems:
            click.echo(str(p), err=True)
        files_wrong = len({p.file for p in problems})
        fail(f"{len(problems)} template problem(s) in {files_wrong} file(s)", EXIT_INVALID)


def _with_templates(command: click.Command, load: Callable[[str], Any]) -> None:
    command.params.append(
        click.Option(
            ["--templates", "templates_file"],
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="also check every WhatsApp step against this templates YAML",
        )
    )
    original = command.callback
    assert original is not None

    @functools.wraps(original)
    def callback(*args: Any, templates_file: str | None = None, **kwargs: Any) -> Any:
        if templates_file is not None:
            check_files(kwargs["files"], templates_file, load)
        return original(*args, **kwargs)

    command.callback = callback


def install(main: click.Group, campaign: click.Group) -> None:
    """Add `templates` to journeyctl and `--templates` to journey and campaign validate/deploy."""
    main.add_command(templates_group)
    for name in ("validate", "deploy"):
        _with_templates(main.commands[name], load_journey)
        _with_templates(campaign.commands[name], load_campaign)
