"""The wait activity: pause for a duration, or until the time an expression gives.

`until` gives a CEL timestamp or an ISO-8601 string with an offset; a past time continues at once.
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.journey import WaitActivity
from schemas.steps import ExitReason


def run(ctx: StepContext, activity: WaitActivity, now: datetime) -> StepOutcome:
    if activity.duration is not None:
        return StepOutcome.wait_for("timer", now + activity.duration)
    assert activity.until is not None  # the schema requires exactly one of duration and until
    try:
        wake_at = _as_time(activity.until, ctx.evaluate(activity.until))
    except ExpressionError as exc:
        return StepOutcome.end(ExitReason.ERROR, str(exc), outcome="error")
    if wake_at <= now:
        return StepOutcome.go(activity.next, "elapsed")
    return StepOutcome.wait_for("timer", wake_at)


def on_timer(ctx: StepContext, activity: WaitActivity, now: datetime) -> StepOutcome:
    return StepOutcome.go(activity.next, "elapsed")


def _as_time(source: str, value: object) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ExpressionError(source, f"{value!r} is not an ISO-8601 time") from None
    if not isinstance(value, datetime):
        raise ExpressionError(source, f"gave {type(value).__name__}, not a time")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ExpressionError(source, f"{value.isoformat()} has no UTC offset")
    return value
