"""Journey step events for analysts: an instance entered, took a step, or exited (and why).

They travel on `journey-steps`, keyed by profile id.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import StrictModel


class ExitReason(StrEnum):
    COMPLETED = "completed"
    EXIT_EVENT = "exit_event"
    TIMEOUT = "timeout"
    ARCHIVED = "archived"
    JUMPED = "jumped"
    ERROR = "error"


class RefusalRule(StrEnum):
    """Which rule kept a profile out of a journey whose entry event it sent."""

    ENTRY_CONDITION = "entry_condition"  # false, or failed to evaluate (detail says)
    REENTRY = "reentry"  # the journey's re-entry rule (never, or not before a time)
    ALREADY_IN = "already_in"  # one live instance per journey and profile
    PAUSED = "paused"  # a paused journey admits nobody


class EntryRefusal(StrictModel):
    """The latest refusal at entry, kept in the profile's journey history (not a record per
    event): `journeyctl inspect` and the console explain it."""

    rule: RefusalRule
    detail: str
    at: AwareDatetime
    event_id: str | None = None


class JourneyStepEvent(StrictModel):
    """`outcome` says what the step did: the branch taken, `timeout` vs `event`, a split path."""

    kind: Literal["entered", "activity", "exited"]
    journey_id: str
    journey_version: int
    instance_id: str
    profile_id: str
    activity_id: str | None = None
    activity_type: str | None = None
    outcome: str | None = None
    reason: ExitReason | None = None
    detail: str | None = None
    event_id: str | None = None
    occurred_at: AwareDatetime
    seq: int | None = Field(
        default=None,
        description="the record's number within its instance (0: entered); a record "
        "published again after a crash has the same seq: dedupe on (instance_id, seq)",
    )
