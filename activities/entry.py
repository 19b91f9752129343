"""Whether a profile may enter a journey: the re-entry rule, then the entry condition.

The one-live-instance rule needs the profile's instances, so the interpreter checks it first.
An entry's condition is the event entry's `condition`, or the condition of an audience read
or of an audience qualification; a trigger of a run may add one of its own (`also`).
"""

from __future__ import annotations

from datetime import datetime

from activities.base import StepContext, StepOutcome
from activities.expressions import ExpressionError
from schemas.journey import EntryRule, Reentry
from schemas.state import JourneyHistory


def reentry_refusal(reentry: Reentry, history: JourneyHistory | None, now: datetime) -> str | None:
    """Why the re-entry rule keeps this profile out now, or None when it may enter."""
    if history is None or history.entries == 0:
        return None
    if reentry.mode == "always":
        return None
    if reentry.mode == "never":
        return "re-entry is never allowed and the profile has entered before"
    assert reentry.wait is not None  # the schema requires a wait for mode 'after'
    last = history.last_entered_at
    if last is not None and last + reentry.wait > now:
        return f"re-entry allowed from {(last + reentry.wait).isoformat()}"
    return None


def run(
    ctx: StepContext, rule: EntryRule, now: datetime, *, also: str | None = None
) -> StepOutcome:
    """Go to the journey's start when the entry condition holds (an error declines the entry)."""
    for source, what in ((rule.admission_condition, "entry"), (also, "trigger audience")):
        if source is None:
            continue
        try:
            admitted = ctx.condition(source)
        except ExpressionError as exc:
            return StepOutcome.decline(str(exc))
        if not admitted:
            return StepOutcome.decline(f"{what} condition is false")
    return StepOutcome.go(ctx.journey.start, "entered")
