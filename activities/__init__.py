"""One pure module per activity type; `run_activity` dispatches on the activity's `type`.

No I/O and no clock here: the interpreter passes `now` and applies each StepOutcome.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from activities import condition, end, entry, http, jump, split, wait, wait_for_event, whatsapp
from activities.base import HttpCall, StepContext, StepOutcome, Wait
from activities.expressions import (
    ExpressionError,
    Variables,
    build_variables,
    evaluate,
    evaluate_condition,
)

Runner = Callable[[StepContext, Any, datetime], StepOutcome]

RUNNERS: dict[str, Runner] = {
    "condition": condition.run,
    "wait": wait.run,
    "wait_for_event": wait_for_event.run,
    "split": split.run,
    "whatsapp": whatsapp.run,
    "http": http.run,
    "jump": jump.run,
    "end": end.run,
}


def run_activity(ctx: StepContext, activity: Any, now: datetime) -> StepOutcome:
    """Run one activity of any type."""
    return RUNNERS[activity.type](ctx, activity, now)


__all__ = [
    "RUNNERS",
    "ExpressionError",
    "HttpCall",
    "StepContext",
    "StepOutcome",
    "Variables",
    "Wait",
    "build_variables",
    "condition",
    "end",
    "entry",
    "evaluate",
    "evaluate_condition",
    "http",
    "jump",
    "run_activity",
    "split",
    "wait",
    "wait_for_event",
    "whatsapp",
]
