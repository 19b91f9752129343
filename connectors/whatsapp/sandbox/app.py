"""The sandbox as an aiohttp application, and serving it until cancelled or signalled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from connectors.whatsapp.sandbox.account import add_routes
from connectors.whatsapp.sandbox.config import SandboxConfig
from connectors.whatsapp.sandbox.faults import (
    handle_clear_fault,
    handle_get_fault,
    handle_set_fault,
)
from connectors.whatsapp.sandbox.handlers import (
    handle_clear_messages,
    handle_clock,
    handle_get_message,
    handle_health,
    handle_inbound,
    handle_list_inbound,
    handle_list_messages,
    handle_reset,
    handle_reset_stats,
    handle_send,
    handle_stats,
    handle_templates,
)
from connectors.whatsapp.sandbox.state import STATE, SandboxState, new_http_client

log = structlog.get_logger("connectors.whatsapp.sandbox")


def build_app(config: SandboxConfig) -> web.Application:
    """The sandbox as an aiohttp application; its state is ``app[STATE]``."""
    app = web.Application(client_max_size=2 * 1024 * 1024)
    state = SandboxState(config)
    app[STATE] = state

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        if config.webhook_url is not None:
            state.http = new_http_client(config)
        yield
        await state.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_post("/{version}/{phone_number_id}/messages", handle_send)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/sandbox/messages", handle_list_messages)
    app.router.add_delete("/sandbox/messages", handle_clear_messages)
    app.router.add_get("/sandbox/messages/{wamid}", handle_get_message)
    app.router.add_get("/sandbox/inbound", handle_list_inbound)
    app.router.add_post("/sandbox/inbound", handle_inbound)
    app.router.add_get("/sandbox/stats", handle_stats)
    app.router.add_delete("/sandbox/stats", handle_reset_stats)
    app.router.add_post("/sandbox/reset", handle_reset)
    app.router.add_get("/sandbox/faults", handle_get_fault)
    app.router.add_post("/sandbox/faults", handle_set_fault)
    app.router.add_delete("/sandbox/faults", handle_clear_fault)
    app.router.add_post("/sandbox/clock", handle_clock)
    app.router.add_get("/sandbox/templates", handle_templates)
    add_routes(app)
    return app


async def run_sandbox(config: SandboxConfig) -> None:
    """Serve the sandbox on ``config.host:config.port`` until cancelled."""
    app = build_app(config)
    # No access log: query strings such as ?to=+34... would put phone numbers in it.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        log.info(
            "whatsapp_sandbox.listening",
            host=config.host,
            port=config.port,
            templates=len(config.templates),
            webhooks=config.webhook_url is not None,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def serve_until_signalled(config: SandboxConfig) -> None:
    # SIGTERM (docker stop, make's kill) should run the same cleanup as Ctrl-C.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_sandbox(config)
    log.info("whatsapp_sandbox.stopped")
