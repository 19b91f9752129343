"""The wait_for_event activity: wait for an event of a type (and condition), or time out.

A condition that cannot be evaluated against an event means that event does not match.
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.journey import WaitForEventActivity


def run(ctx: StepContext, activity: WaitForEventActivity, now: datetime) -> StepOutcome:
    return StepOutcome.wait_for("event", now + activity.timeout, activity.event)


def matches(ctx: StepContext, activity: WaitForEventActivity) -> bool:
    """Whether the trigger in `ctx` (already of the awaited type) satisfies the condition."""
    if activity.condition is None:
        return True
    try:
        return ctx.condition(activity.condition)
    except ExpressionError:
        return False


def on_event(ctx: StepContext, activity: WaitForEventActivity, now: datetime) -> StepOutcome:
    return StepOutcome.go(activity.next, "event")


def on_timer(ctx: StepContext, activity: WaitForEventActivity, now: datetime) -> StepOutcome:
    return StepOutcome.go(activity.on_timeout, "timeout")
