"""The end activity: the instance completes.

Nothing else happens here; the interpreter writes the exit step event and the history.
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from schemas.journey import EndActivity
from schemas.steps import ExitReason


def run(ctx: StepContext, activity: EndActivity, now: datetime) -> StepOutcome:
    return StepOutcome.end(ExitReason.COMPLETED, outcome="completed")
