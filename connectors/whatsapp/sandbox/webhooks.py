"""Signed webhooks out: status lifecycles and their payloads, retried like Meta retries."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import orjson
import structlog

from connectors.whatsapp.sandbox.errors import ASYNC_DETAILS, ERROR_CODES_URL, ERROR_TITLES
from connectors.whatsapp.sandbox.state import SandboxState, SentMessage, StatusStep, new_http_client
from connectors.whatsapp.signature import sign

log = structlog.get_logger("connectors.whatsapp.sandbox")


async def post_webhook(state: SandboxState, payload: dict[str, Any]) -> bool:
    """POST a signed webhook, retrying a few times; False when the receiver never took it."""
    url = state.config.webhook_url
    secret = state.config.app_secret
    if url is None or secret is None:
        return False
    if state.http is None:
        state.http = new_http_client(state.config)
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": sign(secret.get_secret_value(), body),
        "User-Agent": "facebookexternalua",
    }
    attempts = state.config.webhook_retries + 1
    reason = ""
    for attempt in range(attempts):
        try:
            async with state.webhook_slots:
                response = await state.http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
        else:
            if 200 <= response.status_code < 300:
                state.stats.webhooks_delivered += 1
                return True
            reason = f"HTTP {response.status_code}"
        if attempt + 1 < attempts:
            await asyncio.sleep(state.config.webhook_backoff * 2**attempt)
    state.stats.webhooks_failed += 1
    log.warning("whatsapp_sandbox.webhook_gave_up", attempts=attempts, reason=reason)
    return False


def conversation(state: SandboxState, msg: SentMessage, origin: str, now: float) -> dict[str, Any]:
    key = (msg.phone_number_id, msg.wa_id, origin)
    current = state.conversations.get(key)
    if current is None or current[1] <= now:
        current = (secrets.token_hex(16), now + 24 * 3600)
        state.conversations[key] = current
    return {
        "id": current[0],
        "expiration_timestamp": str(int(current[1])),
        "origin": {"type": origin},
    }


def status_payload(state: SandboxState, msg: SentMessage, step: StatusStep) -> dict[str, Any]:
    now = state.now()
    status: dict[str, Any] = {
        "id": msg.wamid,
        "status": step.status,
        "timestamp": str(int(now)),
        "recipient_id": msg.wa_id,
    }
    if msg.biz_opaque_callback_data is not None:
        status["biz_opaque_callback_data"] = msg.biz_opaque_callback_data
    if step.error_code is not None:
        code = step.error_code
        title = ERROR_TITLES.get(code, "Unknown error")
        status["errors"] = [
            {
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": ASYNC_DETAILS.get(code, title)},
                "href": ERROR_CODES_URL,
            }
        ]
    elif step.status in ("sent", "delivered"):
        service = msg.category is None
        origin = "service" if service else str(msg.category)
        status["conversation"] = conversation(state, msg, origin, now)
        status["pricing"] = {
            "billable": not service,
            "pricing_model": "PMP",
            "category": origin,
            "type": "free_customer_service" if service else "regular",
        }
    value = {
        "messaging_product": "whatsapp",
        "metadata": state.metadata(msg.phone_number_id),
        "statuses": [status],
    }
    return state.envelope(value)


def plan(state: SandboxState, msg: SentMessage, async_error: int | None) -> list[StatusStep]:
    sent_at, delivered_at, read_at = state.config.status_delays
    if async_error is not None:
        return [StatusStep("failed", sent_at, async_error)]
    if state.fraction(msg.wamid, "fail") < state.config.failure_share:
        return [
            StatusStep("sent", sent_at),
            StatusStep("failed", delivered_at, state.config.failure_code),
        ]
    steps = [StatusStep("sent", sent_at), StatusStep("delivered", delivered_at)]
    if state.fraction(msg.wamid, "read") < state.config.read_share:
        steps.append(StatusStep("read", read_at))
    return steps


async def run_lifecycle(state: SandboxState, msg: SentMessage, steps: list[StatusStep]) -> None:
    started = asyncio.get_running_loop().time()
    for step in steps:
        wait = started + step.at - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)
        msg.statuses.append(step.status)
        if step.error_code is not None:
            code = step.error_code
            state.stats.failed_by_code[code] = state.stats.failed_by_code.get(code, 0) + 1
            msg.errors.append({"code": code, "title": ERROR_TITLES.get(code, "")})
        if state.config.webhook_url is None or state.config.app_secret is None:
            continue  # nobody to tell: skip building a payload no one receives
        # Awaiting each post keeps sent -> delivered -> read in order at the receiver.
        await post_webhook(state, status_payload(state, msg, step))


async def post_and_forget(state: SandboxState, payload: dict[str, Any]) -> None:
    await post_webhook(state, payload)
