"""``python -m connectors.whatsapp.sandbox``: serve the sandbox; secrets come from the environment.

The bearer token is WA_SANDBOX_TOKEN and the webhook secret WA_SANDBOX_APP_SECRET, never options,
so they stay out of process listings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import click
from pydantic import ValidationError

from connectors.whatsapp.sandbox.app import serve_until_signalled
from connectors.whatsapp.sandbox.config import SandboxConfig
from schemas.templates import TemplateFileError, load_templates


@click.command(help="Local WhatsApp Cloud API sandbox")
@click.option("--host", envvar="WA_SANDBOX_HOST", default="127.0.0.1", show_default=True)
@click.option("--port", envvar="WA_SANDBOX_PORT", type=int, default=8070, show_default=True)
@click.option("--templates", "templates_file", envvar="WA_SANDBOX_TEMPLATES", default=None)
@click.option("--webhook-url", envvar="WA_SANDBOX_WEBHOOK_URL", default=None)
@click.option("--phone-number-id", "phone_number_ids", multiple=True)
@click.option("--unreachable", multiple=True)
@click.option("--failure-share", type=float, default=0.0, show_default=True)
@click.option("--read-share", type=float, default=1.0, show_default=True)
@click.option("--rate", type=float, default=80.0, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option("--messaging-limit", type=int, default=None, help="Meta's tier (250, 2000, ...)")
@click.option("--messaging-window", type=float, default=24 * 3600.0, show_default=True)
@click.option("--reengagement-error", type=click.Choice(["webhook", "sync"]), default="webhook")
def command(
    host: str,
    port: int,
    templates_file: str | None,
    webhook_url: str | None,
    phone_number_ids: tuple[str, ...],
    unreachable: tuple[str, ...],
    failure_share: float,
    read_share: float,
    rate: float,
    seed: int | None,
    messaging_limit: int | None,
    messaging_window: float,
    reengagement_error: str,
) -> None:
    token = os.environ.get("WA_SANDBOX_TOKEN")
    if not token:
        raise click.UsageError("set WA_SANDBOX_TOKEN to the bearer token the sandbox should expect")
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "token": token,
        "app_secret": os.environ.get("WA_SANDBOX_APP_SECRET") or None,
        "webhook_url": webhook_url or None,
        "unreachable": frozenset(unreachable),
        "failure_share": failure_share,
        "read_share": read_share,
        "rate_per_second": rate,
        "seed": seed,
        "messaging_limit": messaging_limit,
        "messaging_window_seconds": messaging_window,
        "reengagement_error": reengagement_error,
    }
    if phone_number_ids:
        settings["phone_number_ids"] = phone_number_ids
    try:
        if templates_file:
            settings["templates"] = tuple(load_templates(templates_file))
        config = SandboxConfig(**settings)
    except (TemplateFileError, ValidationError) as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(serve_until_signalled(config))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command on ``argv`` (default: the process's arguments)."""
    command.main(args=None if argv is None else list(argv), prog_name="whatsapp-sandbox")
