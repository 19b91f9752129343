"""The http activity (custom action): evaluate the body, ask the HTTP connector, await the answer.

The answer is an `http.response` event {request_id, ok, status, body}; no answer is an error.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from activities.base import HttpCall, StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.common import format_duration
from schemas.journey import HttpActivity

RESPONSE_EVENT = "http.response"


def request_id(instance_id: str, activity_id: str, visit: int) -> str:
    """Deterministic, so a replay after a crash asks the connector for the same call again."""
    return f"{instance_id}:{activity_id}:{visit}"


def run(ctx: StepContext, activity: HttpActivity, now: datetime) -> StepOutcome:
    try:
        body = {key: _json_value(ctx.evaluate(src)) for key, src in activity.body.items()}
    except ExpressionError as exc:
        return StepOutcome.go(activity.on_error, "error", str(exc))
    call = HttpCall(
        request_id=request_id(ctx.instance_id, ctx.activity_id, ctx.visit),
        instance_id=ctx.instance_id,
        profile_id=ctx.profile_id,
        journey_id=ctx.journey.id,
        journey_version=ctx.version,
        activity_id=ctx.activity_id,
        method=activity.method,
        url=activity.url,
        body=body,
        timeout_seconds=activity.timeout.total_seconds(),
    )
    outcome = StepOutcome.wait_for("http", now + activity.timeout, RESPONSE_EVENT)
    outcome.http_call = call
    return outcome


def on_response(ctx: StepContext, activity: HttpActivity, ok: bool, status: object) -> StepOutcome:
    if ok:
        return StepOutcome.go(activity.next, "ok")
    return StepOutcome.go(activity.on_error, "error", f"HTTP status {status}")


def on_timer(ctx: StepContext, activity: HttpActivity, now: datetime) -> StepOutcome:
    return StepOutcome.go(
        activity.on_error, "timeout", f"no response within {format_duration(activity.timeout)}"
    )


def _json_value(value: Any) -> Any:
    # The connector serialises the body as JSON; CEL timestamps and bytes are not JSON values.
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value
