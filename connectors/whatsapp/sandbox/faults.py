"""Injected faults: an HTTP status, a Graph error code and/or a delay for the next sends."""

from __future__ import annotations

import asyncio

from aiohttp import web

from connectors.whatsapp.sandbox.errors import ApiError
from connectors.whatsapp.sandbox.state import (
    STATE,
    Fault,
    SandboxState,
    json_object,
    json_response,
    sandbox_error,
)


async def apply_fault(state: SandboxState) -> ApiError | None:
    fault = state.fault
    if fault is None:
        return None
    now = state.config.monotonic()
    if fault.until is not None and now >= fault.until:
        state.fault = None
        return None
    if fault.remaining is not None:
        fault.remaining -= 1
        if fault.remaining <= 0:
            state.fault = None
    state.stats.faults_injected += 1
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.status is None:
        return None
    code = fault.code
    if code is None:
        code = {500: 131000, 503: 2, 429: 130429}.get(fault.status, 1)
    return ApiError(
        code, "Injected by the sandbox", message=fault.message, http_status=fault.status
    )


async def handle_set_fault(request: web.Request) -> web.Response:
    """POST /sandbox/faults {"status": 500, "count": 10} or {"delay_seconds": 5, "seconds": 3}."""
    state = request.app[STATE]
    data = await json_object(request)
    status, code, delay = data.get("status"), data.get("code"), data.get("delay_seconds", 0)
    count, seconds, message = data.get("count"), data.get("seconds"), data.get("message")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        return sandbox_error("status must be an HTTP error status (400-599)")
    if code is not None and not isinstance(code, int):
        return sandbox_error("code must be an integer")
    if not isinstance(delay, int | float) or delay < 0:
        return sandbox_error("delay_seconds must be a non-negative number")
    if status is None and not delay:
        return sandbox_error("give 'status', 'delay_seconds' or both")
    if count is not None and (not isinstance(count, int) or count < 1):
        return sandbox_error("count must be a positive integer")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        return sandbox_error("seconds must be a positive number")
    if message is not None and not isinstance(message, str):
        return sandbox_error("message must be a string")
    if count is None and seconds is None:
        count = 1
    now = state.config.monotonic()
    state.fault = Fault(
        status=status,
        code=code,
        message=message,
        delay=float(delay),
        remaining=count,
        until=None if seconds is None else now + float(seconds),
    )
    return json_response(state.fault.to_json(now))


async def handle_get_fault(request: web.Request) -> web.Response:
    state = request.app[STATE]
    fault = state.fault
    return json_response(None if fault is None else fault.to_json(state.config.monotonic()))


async def handle_clear_fault(request: web.Request) -> web.Response:
    request.app[STATE].fault = None
    return web.Response(status=204)
