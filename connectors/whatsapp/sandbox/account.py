"""The business account as Meta runs it: templates' list, status, quality and category;
the messaging limit; users' marketing preferences; per-user error injection.

Each change an operator (or a test) makes here is also sent as Meta's account webhook
(message_template_status_update, message_template_quality_update,
template_category_update, business_capability_update, user_preferences), awaited so the
answer says whether the receiver took it.
"""

from __future__ import annotations

import base64
from typing import Any, get_args

from aiohttp import web

from connectors.whatsapp.sandbox.config import normalize_phone
from connectors.whatsapp.sandbox.handlers import auth_error, error_response
from connectors.whatsapp.sandbox.state import (
    STATE,
    SandboxState,
    json_object,
    json_response,
    sandbox_error,
)
from connectors.whatsapp.sandbox.webhooks import post_webhook
from schemas.templates import STATUS_EVENTS, Quality, Template, to_graph

INJECTABLE = frozenset({131049, 131050, 131056})
PAGE_LIMIT = 25


def account_envelope(state: SandboxState, field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": state.config.waba_id,
                "time": int(state.now()),
                "changes": [{"field": field, "value": value}],
            }
        ],
    }


async def _notify(state: SandboxState, field: str, value: dict[str, Any]) -> bool:
    return await post_webhook(state, account_envelope(state, field, value))


def _cursor(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode()


async def handle_list_templates(request: web.Request) -> web.Response:
    """GET /{version}/{waba_id}/message_templates?limit=&after=: Graph's paginated list."""
    state = request.app[STATE]
    error = auth_error(request, state)
    if error is not None:
        return error_response(state, error)
    try:
        limit = int(request.query.get("limit", PAGE_LIMIT))
        after = request.query.get("after")
        start = int(base64.urlsafe_b64decode(after.encode()).decode()) if after else 0
    except ValueError:
        return sandbox_error("limit must be an integer and after a cursor from this list")
    limit = max(1, min(limit, 100))
    everything = sorted(state.templates.values(), key=lambda t: (t.name, t.language))
    page = everything[start : start + limit]
    body: dict[str, Any] = {
        "data": [to_graph(t, state.template_id(t)) for t in page],
        "paging": {"cursors": {"before": _cursor(start), "after": _cursor(start + len(page))}},
    }
    if start + len(page) < len(everything):
        next_url = request.url.update_query(
            {"limit": str(limit), "after": _cursor(start + len(page))}
        )
        body["paging"]["next"] = str(next_url)
    return json_response(body)


def _template(request: web.Request) -> tuple[SandboxState, Template]:
    state = request.app[STATE]
    key = (request.match_info["name"], request.match_info["language"])
    template = state.templates.get(key)
    if template is None:
        raise web.HTTPNotFound(text=f"no template {key[0]!r} in {key[1]!r}")
    return state, template


def _ids(state: SandboxState, template: Template) -> dict[str, Any]:
    return {
        "message_template_id": int(state.template_id(template)),
        "message_template_name": template.name,
        "message_template_language": template.language,
    }


async def handle_template_status(request: web.Request) -> web.Response:
    """POST /sandbox/templates/{name}/{language}/status {"status": "PAUSED", "reason": "..."}."""
    state, template = _template(request)
    data = await json_object(request)
    event = str(data.get("status", "")).upper()
    if event not in STATUS_EVENTS:
        return sandbox_error(f"status must be one of {', '.join(STATUS_EVENTS)}")
    reason = data.get("reason")
    updated = template.model_copy(update={"status": STATUS_EVENTS[event]})
    state.templates[(template.name, template.language)] = updated
    value = {"event": event, **_ids(state, template), "reason": str(reason or "NONE")}
    delivered = await _notify(state, "message_template_status_update", value)
    return json_response({"status": updated.status, "webhook_delivered": delivered})


async def handle_template_quality(request: web.Request) -> web.Response:
    """POST /sandbox/templates/{name}/{language}/quality {"quality": "RED"}."""
    state, template = _template(request)
    quality = str((await json_object(request)).get("quality", "")).upper()
    if quality not in get_args(Quality):
        return sandbox_error("quality must be GREEN, YELLOW, RED or UNKNOWN")
    value = {
        "previous_quality_score": template.quality,
        "new_quality_score": quality,
        **_ids(state, template),
    }
    state.templates[(template.name, template.language)] = template.model_copy(
        update={"quality": quality}
    )
    delivered = await _notify(state, "message_template_quality_update", value)
    return json_response({"quality": quality, "webhook_delivered": delivered})


async def handle_template_category(request: web.Request) -> web.Response:
    """POST /sandbox/templates/{name}/{language}/category {"category": "marketing"}."""
    state, template = _template(request)
    category = str((await json_object(request)).get("category", "")).lower()
    if category not in ("marketing", "utility", "authentication"):
        return sandbox_error("category must be marketing, utility or authentication")
    value = {
        **_ids(state, template),
        "previous_category": template.category.upper(),
        "new_category": category.upper(),
    }
    state.templates[(template.name, template.language)] = template.model_copy(
        update={"category": category}
    )
    delivered = await _notify(state, "template_category_update", value)
    return json_response({"category": category, "webhook_delivered": delivered})


async def handle_messaging_limit(request: web.Request) -> web.Response:
    """POST /sandbox/messaging-limit {"limit": 250 | null, "window_seconds": 86400}."""
    state = request.app[STATE]
    data = await json_object(request)
    limit, window = data.get("limit"), data.get("window_seconds")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return sandbox_error("limit must be a positive integer or null (unlimited)")
    if window is not None and (not isinstance(window, int | float) or window <= 0):
        return sandbox_error("window_seconds must be a positive number")
    state.messaging_limit = limit
    if window is not None:
        state.messaging_window = float(window)
    value = {
        "max_daily_conversations_per_business": -1 if limit is None else limit,
        "max_phone_numbers_per_business": 2,
    }
    delivered = await _notify(state, "business_capability_update", value)
    return json_response({"limit": limit, "webhook_delivered": delivered})


async def handle_user_preferences(request: web.Request) -> web.Response:
    """POST /sandbox/user-preferences {"from": "+34...", "value": "stop" | "resume"}."""
    state = request.app[STATE]
    data = await json_object(request)
    sender, choice = data.get("from"), data.get("value")
    wa_id = normalize_phone(sender) if isinstance(sender, str) else None
    if wa_id is None:
        return sandbox_error("'from' must be a phone number")
    if choice not in ("stop", "resume"):
        return sandbox_error("value must be 'stop' or 'resume'")
    if choice == "stop":
        state.marketing_stopped.add(wa_id)
    else:
        state.marketing_stopped.discard(wa_id)
    phone_number_id = state.config.phone_number_ids[0] if state.config.phone_number_ids else ""
    value = {
        "messaging_product": "whatsapp",
        "metadata": state.metadata(phone_number_id),
        "contacts": [{"wa_id": wa_id, "profile": {"name": "Sandbox User"}}],
        "user_preferences": [
            {
                "wa_id": wa_id,
                "detail": f"User requested to {choice} marketing messages",
                "category": "marketing_messages",
                "value": choice,
                "timestamp": int(state.now()),
            }
        ],
    }
    delivered = await _notify(state, "user_preferences", value)
    return json_response({"value": choice, "webhook_delivered": delivered})


async def handle_recipient_errors(request: web.Request) -> web.Response:
    """POST /sandbox/recipient-errors {"to": "+34...", "code": 131049, "count": 1}."""
    state = request.app[STATE]
    data = await json_object(request)
    to, code, count = data.get("to"), data.get("code"), data.get("count", 1)
    wa_id = normalize_phone(to) if isinstance(to, str) else None
    if wa_id is None:
        return sandbox_error("'to' must be a phone number")
    if code not in INJECTABLE:
        return sandbox_error(f"code must be one of {sorted(INJECTABLE)}")
    if not isinstance(count, int) or count < 1:
        return sandbox_error("count must be a positive integer")
    state.recipient_errors.setdefault(wa_id, []).extend([code] * count)
    return json_response({"pending": len(state.recipient_errors[wa_id])})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/{version}/{waba_id}/message_templates", handle_list_templates)
    base = "/sandbox/templates/{name}/{language}"
    app.router.add_post(base + "/status", handle_template_status)
    app.router.add_post(base + "/quality", handle_template_quality)
    app.router.add_post(base + "/category", handle_template_category)
    app.router.add_post("/sandbox/messaging-limit", handle_messaging_limit)
    app.router.add_post("/sandbox/user-preferences", handle_user_preferences)
    app.router.add_post("/sandbox/recipient-errors", handle_recipient_errors)
