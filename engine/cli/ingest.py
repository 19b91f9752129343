"""`journeyctl ingest`: the HTTP ingestion API (engine/ingest/server.py) in its own process."""

from __future__ import annotations

from typing import Any

import click

from engine.cli.common import EXIT_INVALID, fail, load_settings, run_forever, run_kafka
from engine.observability import configure_logging
from engine.streaming.topics import ensure_topics


@click.command("ingest")
@click.option("--host", default=None, help="default: INGEST_HOST (127.0.0.1)")
@click.option("--port", type=int, default=None, help="default: INGEST_PORT (8090)")
def ingest_command(host: str | None, port: int | None) -> None:
    """Serve POST /v1/events: profile events over HTTP, produced to profile-events."""
    from engine.ingest.server import run_ingest

    settings = load_settings()
    updates: dict[str, Any] = {}
    if host is not None:
        updates["ingest_host"] = host
    if port is not None:
        updates["ingest_port"] = port
    settings = settings.model_copy(update=updates)
    configure_logging(settings.log_format, settings.log_level)
    token = settings.ingest_api_token
    if token is None or not token.get_secret_value():
        fail(
            "INGEST_API_TOKEN (or INGEST_API_TOKEN_FILE) is not set: the ingestion API "
            "does not start without a bearer token",
            EXIT_INVALID,
        )
    # profile-events must exist with the engine's partition count before the first event,
    # or a broker would auto-create it with its own and the partitions would not match.
    run_kafka(ensure_topics(settings), settings)
    run_forever(run_ingest(settings))
