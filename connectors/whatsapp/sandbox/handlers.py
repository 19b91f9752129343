"""The Graph API send endpoint and the sandbox's own /sandbox/* endpoints."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

import orjson
import structlog
from aiohttp import web

from connectors.whatsapp.sandbox.config import is_valid_number, normalize_phone
from connectors.whatsapp.sandbox.errors import ASYNC_DETAILS, ApiError
from connectors.whatsapp.sandbox.faults import apply_fault
from connectors.whatsapp.sandbox.rendering import render_free_form, render_template
from connectors.whatsapp.sandbox.state import (
    STATE,
    SandboxState,
    SentMessage,
    Stats,
    iso,
    json_object,
    json_response,
    sandbox_error,
)
from connectors.whatsapp.sandbox.webhooks import plan, post_and_forget, run_lifecycle
from schemas.common import mask_phone
from schemas.templates import Template

log = structlog.get_logger("connectors.whatsapp.sandbox")

API_VERSION_RE = re.compile(r"v\d+\.\d+")
CALLBACK_DATA_MAX_CHARS = 512
FREE_FORM_TYPES = frozenset(
    {
        "text",
        "image",
        "video",
        "audio",
        "document",
        "sticker",
        "interactive",
        "reaction",
        "location",
        "contacts",
    }
)


def auth_error(request: web.Request, state: SandboxState) -> ApiError | None:
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    token = supplied.strip() if scheme.lower() == "bearer" else ""
    # Graph also takes the token as a query parameter; some clients still use it.
    token = token or request.query.get("access_token", "")
    expected = state.config.token.get_secret_value()
    if not token:
        return ApiError(
            190,
            message="An access token is required to request this resource.",
            with_error_data=False,
        )
    if not secrets.compare_digest(token.encode(), expected.encode()):
        return ApiError(190, with_error_data=False)
    return None


def error_response(state: SandboxState, error: ApiError) -> web.Response:
    state.reject(error.code)
    headers: dict[str, str] = {}
    if error.code == 190:
        headers["WWW-Authenticate"] = 'OAuth "Facebook Platform" "invalid_token" "Invalid token"'
    if error.code != 190:
        log.info("whatsapp_sandbox.rejected", code=error.code, http_status=error.http_status)
    return json_response(error.body(), status=error.http_status, headers=headers)


async def handle_send(request: web.Request) -> web.Response:
    """POST /{version}/{phone_number_id}/messages, Meta's send endpoint."""
    state = request.app[STATE]
    version = request.match_info["version"]
    phone_number_id = request.match_info["phone_number_id"]
    error = await apply_fault(state) or auth_error(request, state)
    if error is None and not API_VERSION_RE.fullmatch(version):
        error = ApiError(
            2500,
            message=f"Unknown path components: /{phone_number_id}/messages",
            with_error_data=False,
        )
    if error is None and not state.accepts_phone_number_id(phone_number_id):
        error = ApiError(
            100,
            message=(
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this operation."
            ),
            error_type="GraphMethodException",
            subcode=33,
            with_error_data=False,
        )
    if error is None and not state.take_token(phone_number_id):
        state.stats.rate_limited += 1
        error = ApiError(
            130429,
            "Message failed to send because there were too many messages sent from this phone "
            "number in a short period of time",
            http_status=state.config.rate_limit_http_status,
        )
    if error is not None:
        return error_response(state, error)
    try:
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise ApiError(100, "Request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(100, "Request body must be a JSON object")
        response = _accept(state, phone_number_id, payload)
    except ApiError as exc:
        return error_response(state, exc)
    if state.config.answer_delay > 0:
        await asyncio.sleep(state.config.answer_delay)
    return response


def _accept(state: SandboxState, phone_number_id: str, payload: dict[str, Any]) -> web.Response:
    product = payload.get("messaging_product")
    if product is None:
        raise ApiError(100, message="(#100) The parameter messaging_product is required.")
    if product != "whatsapp":
        raise ApiError(
            100,
            message=(
                f"(#100) Param messaging_product must be one of {{WHATSAPP}} - got {product!r}."
            ),
        )

    if payload.get("status") == "read":
        # Marking an inbound message as read shares the endpoint but has its own reply.
        message_id = payload.get("message_id")
        if not isinstance(message_id, str) or message_id not in state.inbound_ids:
            raise ApiError(100, "message_id does not name a received message")
        return json_response({"success": True})

    rtype = payload.get("recipient_type", "individual")
    if rtype != "individual":
        raise ApiError(
            100,
            message=f"(#100) Param recipient_type must be one of {{INDIVIDUAL}} - got {rtype!r}.",
        )
    to_raw = payload.get("to")
    if to_raw is None or to_raw == "":
        raise ApiError(100, message="(#100) The parameter to is required.")
    wa_id = normalize_phone(to_raw) if isinstance(to_raw, str) else None
    if wa_id is None:
        raise ApiError(100, f"Invalid 'to' parameter: {to_raw!r} is not a phone number")

    kind = payload.get("type", "text")
    if kind != "template" and kind not in FREE_FORM_TYPES:
        choices = ", ".join(sorted(FREE_FORM_TYPES | {"template"}))
        raise ApiError(
            100, message=f'(#100) Param type must be one of {{{choices}}} - got "{kind}".'
        )

    callback_data = payload.get("biz_opaque_callback_data")
    if callback_data is not None and (
        not isinstance(callback_data, str) or len(callback_data) > CALLBACK_DATA_MAX_CHARS
    ):
        raise ApiError(100, "biz_opaque_callback_data must be a string of at most 512 characters")

    context = payload.get("context")
    context_wamid: str | None = None
    if context is not None:
        if not isinstance(context, dict) or not isinstance(context.get("message_id"), str):
            raise ApiError(100, "context.message_id must be a string")
        context_wamid = context["message_id"]

    template: Template | None = None
    if kind == "template":
        template = _find_template(state, payload.get("template"))
        tpl_payload = payload["template"]
        rendered = render_template(template, tpl_payload.get("components"))
    else:
        rendered = render_free_form(kind, payload)

    async_error: int | None = None
    injected = state.next_recipient_error(wa_id)
    if injected == 131056:
        raise ApiError(
            131056,
            "Message failed to send because there were too many messages sent from this phone "
            "number to the same phone number in a short period of time.",
        )
    if state.is_unreachable(wa_id) or not is_valid_number(wa_id):
        async_error = 131026
    elif template is None and not state.in_window(wa_id):
        if state.config.reengagement_error == "sync":
            raise ApiError(131047, ASYNC_DETAILS[131047])
        async_error = 131047
    elif injected is not None:
        async_error = injected
    elif template is not None:
        if template.category == "marketing" and wa_id in state.marketing_stopped:
            async_error = 131050
        elif not state.in_window(wa_id) and state.over_messaging_limit(wa_id):
            async_error = 131048

    wamid = state.new_wamid(wa_id)
    message = SentMessage(
        wamid=wamid,
        to="+" + wa_id,
        wa_id=wa_id,
        phone_number_id=phone_number_id,
        type="template" if template else kind,
        text=rendered.text,
        received_at=state.now(),
        template=template.name if template else None,
        language=template.language if template else None,
        category=template.category if template else None,
        biz_opaque_callback_data=callback_data,
        context_wamid=context_wamid,
        media=rendered.media,
        request=payload,
    )
    state.messages.append(message)
    state.by_wamid[wamid] = message
    state.stats.accepted += 1
    state.spawn(
        run_lifecycle(state, message, plan(state, message, async_error)), "whatsapp-sandbox-status"
    )
    log.info(
        "whatsapp_sandbox.accepted",
        to=mask_phone(wa_id),
        type=message.type,
        template=message.template,
        outcome="failed" if async_error else "ok",
    )
    return json_response(
        {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to_raw, "wa_id": wa_id}],
            "messages": [{"id": wamid, "message_status": "accepted"}],
        }
    )


def _find_template(state: SandboxState, spec: Any) -> Template:
    if not isinstance(spec, dict):
        raise ApiError(100, message="(#100) The parameter template is required.")
    name = spec.get("name")
    language = spec.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(name, str) or not name:
        raise ApiError(131008, "template.name is required")
    if not isinstance(code, str) or not code:
        raise ApiError(131008, "template.language.code is required")
    template = state.templates.get((name, code))
    not_found = f"template name ({name}) does not exist in {code}"
    if template is None or template.status in ("PENDING", "REJECTED"):
        # Only approved translations exist for sending, so Meta gives the same answer.
        raise ApiError(132001, not_found)
    if template.status == "PAUSED":
        raise ApiError(132015, f"Template {name} ({code}) is paused due to low quality")
    if template.status == "DISABLED":
        raise ApiError(132016, f"Template {name} ({code}) is disabled")
    return template


async def handle_inbound(request: web.Request) -> web.Response:
    """POST /sandbox/inbound: a person writes to the business; opens the 24-hour window."""
    state = request.app[STATE]
    data = await json_object(request)
    sender = data.get("from")
    wa_id = normalize_phone(sender) if isinstance(sender, str) else None
    if wa_id is None:
        return sandbox_error("'from' must be a phone number")
    text, button = data.get("text"), data.get("button")
    if not (isinstance(text, str) and text) and not isinstance(button, dict):
        return sandbox_error("give 'text' or 'button': {payload, text}")
    phone_number_id = data.get("phone_number_id") or (
        state.config.phone_number_ids[0] if state.config.phone_number_ids else "100000000000001"
    )
    if not isinstance(phone_number_id, str) or not state.accepts_phone_number_id(phone_number_id):
        return sandbox_error("unknown phone_number_id")

    now = state.now()
    wamid = state.new_wamid(wa_id, inbound=True)
    message: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(int(now))}
    if isinstance(button, dict):
        message["type"] = "button"
        message["button"] = {
            "payload": str(button.get("payload", "")),
            "text": str(button.get("text", "")),
        }
    else:
        message["type"] = "text"
        message["text"] = {"body": text}
    context_wamid = data.get("context_wamid")
    if isinstance(context_wamid, str) and context_wamid:
        message["context"] = {"from": state.config.display_phone_number, "id": context_wamid}
    name = data.get("name")
    value = {
        "messaging_product": "whatsapp",
        "metadata": state.metadata(phone_number_id),
        "contacts": [
            {"profile": {"name": name if isinstance(name, str) else "Sandbox User"}, "wa_id": wa_id}
        ],
        "messages": [message],
    }
    state.last_inbound[wa_id] = now
    state.inbound.append({**message, "phone_number_id": phone_number_id, "received_at": iso(now)})
    state.inbound_ids.add(wamid)
    state.stats.inbound += 1
    state.spawn(post_and_forget(state, state.envelope(value)), "whatsapp-sandbox-inbound")
    log.info("whatsapp_sandbox.inbound", sender=mask_phone(wa_id), type=message["type"])
    return json_response({"wamid": wamid})


def _digits_filter(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    # A '+' in a query string arrives as a space unless the client encoded it; accept both.
    return re.sub(r"\D", "", raw)


async def handle_list_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    to = _digits_filter(request, "to")
    template = request.query.get("template")
    status = request.query.get("status")
    phone_number_id = request.query.get("phone_number_id")
    found = [
        m.to_json()
        for m in state.messages
        if (to is None or m.wa_id == to)
        and (template is None or m.template == template)
        and (status is None or status in m.statuses)
        and (phone_number_id is None or m.phone_number_id == phone_number_id)
    ]
    return json_response(found)


async def handle_get_message(request: web.Request) -> web.Response:
    message = request.app[STATE].by_wamid.get(request.match_info["wamid"])
    if message is None:
        return sandbox_error("no such message", status=404)
    return json_response(message.to_json())


async def handle_clear_messages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.messages.clear()
    state.by_wamid.clear()
    return web.Response(status=204)


async def handle_list_inbound(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].inbound)


async def handle_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats.to_json())


async def handle_reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].stats = Stats()
    return web.Response(status=204)


async def handle_reset(request: web.Request) -> web.Response:
    """POST /sandbox/reset: forget messages, windows, buckets, faults and counters."""
    state = request.app[STATE]
    state.messages.clear()
    state.by_wamid.clear()
    state.inbound.clear()
    state.inbound_ids.clear()
    state.last_inbound.clear()
    state.buckets.clear()
    state.conversations.clear()
    state.fault = None
    state.stats = Stats()
    state.clock_offset = 0.0
    state.reset_account()
    return web.Response(status=204)


async def handle_clock(request: web.Request) -> web.Response:
    """POST /sandbox/clock {"advance_seconds": 90000}: let HTTP-only tests age the 24h window."""
    state = request.app[STATE]
    advance = (await json_object(request)).get("advance_seconds")
    if not isinstance(advance, int | float) or advance < 0:
        return sandbox_error("advance_seconds must be a non-negative number")
    state.clock_offset += float(advance)
    return json_response({"now": iso(state.now())})


async def handle_templates(request: web.Request) -> web.Response:
    templates = request.app[STATE].templates.values()
    return json_response([t.model_dump(mode="json") for t in templates])


async def handle_health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


# --------------------------------------------------------------------------- app
