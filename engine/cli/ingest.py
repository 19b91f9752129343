"""`journeyctl ingest`: the HTTP ingestion API (engine/ingest/server.py) in its own process."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import click


def _cli() -> ModuleType:
    # engine.cli.main adds this command to `journeyctl`, so it is imported when it is used.
    import engine.cli.main as cli

    return cli


@click.command("ingest")
@click.option("--host", default=None, help="default: INGEST_HOST (127.0.0.1)")
@click.option("--port", type=int, default=None, help="default: INGEST_PORT (8090)")
def ingest_command(host: str | None, port: int | None) -> None:
    """Serve POST /v1/events: profile events over HTTP, produced to profile-events."""
    from engine.ingest.server import run_ingest
    from engine.observability import configure_logging
    from engine.streaming.topics import ensure_topics

    cli = _cli()
    settings = cli._settings()
    updates: dict[str, Any] = {}
    if host is not None:
        updates["ingest_host"] = host
    if port is not None:
        updates["ingest_port"] = port
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_format, settings.log_level)
    token = settings.ingest_api_token
    if token is None or not token.get_secret_value():
        cli._fail(
            "INGEST_API_TOKEN (or INGEST_API_TOKEN_FILE) is not set: the ingestion API "
            "does not start without a bearer token",
            cli.EXIT_INVALID,
        )
    # profile-events must exist with the engine's partition count before the first event,
    # or a broker would auto-create it with its own and the partitions would not match.
    cli._run_kafka(ensure_topics(settings), settings)
    cli._run_forever(run_ingest(settings))
