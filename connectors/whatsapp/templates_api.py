"""Read the business account's message templates from the Cloud API (GET message_templates).

Follows Graph's cursor pagination (`paging.next`) to the end. Entries this engine cannot
model (a format it does not know) are reported by name and skipped, never fatal.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from schemas.settings import Settings
from schemas.templates import Template, from_graph

PAGE_SIZE = 100
MAX_PAGES = 1000


class TemplatesApiError(RuntimeError):
    """The Cloud API refused the listing; the message says why (never the token)."""


def fetch_templates(
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> tuple[list[Template], list[str]]:
    """(templates, problems): every translation of WHATSAPP_WABA_ID's templates."""
    if not settings.whatsapp_waba_id:
        raise TemplatesApiError("WHATSAPP_WABA_ID is not set: whose templates to read?")
    if settings.whatsapp_token is None:
        raise TemplatesApiError("WHATSAPP_TOKEN is not set")
    base = settings.whatsapp_api_url.rstrip("/")
    url: str | None = (
        f"{base}/{settings.whatsapp_api_version}/{settings.whatsapp_waba_id}/message_templates"
    )
    params: dict[str, Any] | None = {"limit": PAGE_SIZE}
    headers = {"Authorization": f"Bearer {settings.whatsapp_token.get_secret_value()}"}
    templates: list[Template] = []
    problems: list[str] = []
    with httpx.Client(
        timeout=settings.whatsapp_timeout_seconds, transport=transport, trust_env=False
    ) as http:
        for _ in range(MAX_PAGES):
            if url is None:
                break
            try:
                response = http.get(url, params=params, headers=headers)
            except httpx.HTTPError as exc:
                raise TemplatesApiError(f"cannot reach {base}: {type(exc).__name__}") from None
            try:
                body = response.json()
            except ValueError:
                body = {}
            if response.status_code != 200:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                message = error.get("message", "") if isinstance(error, dict) else ""
                raise TemplatesApiError(f"HTTP {response.status_code} from Graph API: {message}")
            for entry in body.get("data") or ():
                try:
                    templates.append(from_graph(entry))
                except ValidationError as exc:
                    where = f"{entry.get('name', '?')}/{entry.get('language', '?')}"
                    problems.append(f"{where}: skipped: {exc.errors()[0]['msg']}")
            url = (body.get("paging") or {}).get("next")
            params = None  # `next` carries the query
    return templates, problems
