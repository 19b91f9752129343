"""Engine state kept per profile in a changelog-backed table.

One ProfileState value holds the profile's merged attributes, its live journey
instances (with their timers) and the counters re-entry and frequency caps need,
so one event's whole state change is one changelog record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field, JsonValue

from schemas.common import StrictModel
from schemas.steps import EntryRefusal

WaitKind = Literal["timer", "event", "http", "quiet_hours"]


class EventContext(StrictModel):
    """The entry event as expressions see it (`event.*`)."""

    event_id: str
    type: str
    data: dict[str, JsonValue] = Field(default_factory=dict)
    occurred_at: AwareDatetime


class JourneyInstance(StrictModel):
    """One profile's run through one version of one journey.

    `wake_at` is the instance's durable timer: a wait, a wait_for_event timeout, a
    quiet-hours delay or an HTTP timeout; the global `deadline` bounds every instance.
    """

    instance_id: str
    journey_id: str
    version: int
    profile_id: str
    entry_no: int
    activity_id: str
    waiting: WaitKind | None = None
    wake_at: AwareDatetime | None = None
    wait_event: str | None = None
    entered_at: AwareDatetime
    step_entered_at: AwareDatetime
    deadline: AwareDatetime
    entry_event: EventContext
    pending_message_id: str | None = None
    steps: int = Field(default=0, description="step records published so far (the next `seq`)")

    def next_due(self) -> datetime:
        """The earliest time this instance needs the clock: its timer or its deadline."""
        if self.wake_at is not None and self.wake_at < self.deadline:
            return self.wake_at
        return self.deadline


class JourneyHistory(StrictModel):
    """What outlives an instance: for re-entry rules and deterministic message ids."""

    entries: int = 0
    last_entered_at: AwareDatetime | None = None
    last_exited_at: AwareDatetime | None = None
    visits: dict[str, int] = Field(default_factory=dict)
    runs: list[str] = Field(
        default_factory=list,
        description="audience and campaign runs the profile was admitted by (the latest 64)",
    )
    refused: int = Field(
        default=0, description="events of the journey's entry type that did not admit the profile"
    )
    last_refusal: EntryRefusal | None = None


class ProfileState(StrictModel):
    profile_id: str
    attributes: dict[str, JsonValue] = Field(default_factory=dict)
    seen_event_ids: list[str] = Field(default_factory=list)
    instances: dict[str, JourneyInstance] = Field(default_factory=dict)
    history: dict[str, JourneyHistory] = Field(default_factory=dict)
    sends: dict[str, list[AwareDatetime]] = Field(default_factory=dict)
    updated_at: AwareDatetime | None = None

    def next_due(self) -> datetime | None:
        """When the engine must next wake this profile, or None if nothing waits."""
        dues = [inst.next_due() for inst in self.instances.values()]
        return min(dues) if dues else None
