"""The condition activity: ordered branches, the first whose `when` is true wins, else `else`.

An expression error (or a non-boolean result) goes to `on_error`, or ends the instance with ERROR.
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.journey import ConditionActivity
from schemas.steps import ExitReason


def run(ctx: StepContext, activity: ConditionActivity, now: datetime) -> StepOutcome:
    try:
        for index, branch in enumerate(activity.branches):
            if ctx.condition(branch.when):
                return StepOutcome.go(branch.next, str(index))
    except ExpressionError as exc:
        if activity.on_error is not None:
            return StepOutcome.go(activity.on_error, "error", str(exc))
        return StepOutcome.end(ExitReason.ERROR, str(exc), outcome="error")
    return StepOutcome.go(activity.else_, "else")
