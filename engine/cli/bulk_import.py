"""`journeyctl import FILE`: profiles from a CSV or JSON-lines file (engine/ingest/bulk.py)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from engine.cli.common import EXIT_INVALID, fail, load_settings, run_kafka

SHOWN_REJECTIONS = 50


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="check every row; publish nothing")
@click.option("--progress/--no-progress", default=True, show_default=True)
def import_command(file: str, dry_run: bool, progress: bool) -> None:
    """Publish one profile.updated event per row of FILE (CSV with a header, or JSON lines).

    A profile_id column is required; the other columns are the profile's attributes (empty
    cells are left out). Importing the same file again publishes the same event ids, which
    the engine drops as duplicates.
    """
    from engine.ingest.bulk import ImportFileError, import_file

    settings = load_settings()
    path = Path(file)
    if not dry_run:
        from engine.streaming.topics import ensure_topics

        # With the engine's partition count, before a broker auto-creates it with its own.
        run_kafka(ensure_topics(settings), settings)
    bar = Progress(
        TextColumn("checking" if dry_run else "importing"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        disable=not progress,
        transient=False,
    )
    with bar:
        task = bar.add_task("import", total=path.stat().st_size, rows=0)

        def advance(done: int, rows: int) -> None:
            bar.update(task, completed=done, rows=rows)

        try:
            summary = run_kafka(
                import_file(settings, path, dry_run=dry_run, on_progress=advance),
                settings,
                timeout=None,
            )
        except ImportFileError as exc:
            fail(str(exc), EXIT_INVALID)
    for problem in summary.rejected[:SHOWN_REJECTIONS]:
        click.echo(problem, err=True)
    more = len(summary.rejected) - SHOWN_REJECTIONS
    if more > 0:
        click.echo(f"... and {more} more rejected row(s)", err=True)
    verb = "would publish" if dry_run else "published"
    click.echo(
        f"rows: {summary.rows}, {verb}: {summary.published}, rejected: {len(summary.rejected)}"
        f" (topic {settings.topic_profile_events})"
    )
    if summary.rejected:
        fail(f"{len(summary.rejected)} row(s) were not published", EXIT_INVALID)
