"""The jump activity: end this instance and enter the profile into another journey.

Only the interpreter can see the catalog, so it checks the target and applies its re-entry rules.
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from schemas.journey import JumpActivity


def run(ctx: StepContext, activity: JumpActivity, now: datetime) -> StepOutcome:
    return StepOutcome.jump(activity.journey)
