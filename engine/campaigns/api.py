"""The campaign trigger API of each engine worker: POST /api/campaigns/{id}/trigger."""

from __future__ import annotations

import hmac
from typing import Any

import faust
import structlog
from faust.web import Response, View
from pydantic import ValidationError

from engine.campaigns.fanout import AudienceRuns
from schemas.campaign import (
    TriggerRequest,
)
from schemas.settings import Settings

log = structlog.get_logger(__name__)

MAX_TRIGGER_BODY_BYTES = 2 * 1024 * 1024


def register_trigger_api(app: faust.App, audience: AudienceRuns, settings: Settings) -> None:
    """`POST /campaigns/{campaign_id}/trigger` on the worker's web server (bearer token)."""
    token = settings.campaign_api_token

    @app.page("/campaigns/{campaign_id}/trigger")
    class CampaignTrigger(View):
        async def post(self, request: Any, campaign_id: str) -> Response:
            if token is None:
                return self.json(
                    {"error": "the trigger API is off: set CAMPAIGN_API_TOKEN"}, status=503
                )
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token.get_secret_value()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return self.json(
                    {"error": "missing or wrong bearer token"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            body = await request.read()
            if len(body) > MAX_TRIGGER_BODY_BYTES:
                return self.json({"error": "body too large"}, status=413)
            try:
                trigger = TriggerRequest.model_validate_json(body or b"{}")
            except ValidationError as exc:
                problems = [
                    f"{'.'.join(map(str, e['loc'])) or '<body>'}: {e['msg']}"
                    for e in exc.errors()[:10]
                ]
                return self.json({"error": "invalid trigger", "problems": problems}, status=422)
            status, answer = await audience.trigger(campaign_id, trigger)
            return self.json(answer, status=status)
