"""What an activity receives (StepContext) and what it decides (StepOutcome), as plain data.

Activities are pure: the interpreter applies an outcome to the instance and collects its effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from activities.expressions import Variables, evaluate, evaluate_condition
from schemas.journey import JourneyDefinition
from schemas.messages import DeliveryEvent, SendRequest
from schemas.state import WaitKind
from schemas.steps import ExitReason


@dataclass(slots=True)
class HttpCall:
    """A custom action for the HTTP connector; its answer comes back as an `http.response` event."""

    request_id: str
    instance_id: str
    profile_id: str
    journey_id: str
    journey_version: int
    activity_id: str
    method: str
    url: str
    body: dict[str, Any]
    timeout_seconds: float


@dataclass(slots=True)
class StepContext:
    """Everything one activity run may read. `visit` counts this activity's runs for the journey.

    `run_id` is set for campaign instances: their message ids name the run, not the visit.
    """

    profile_id: str
    profile: Mapping[str, Any]
    journey: JourneyDefinition
    version: int
    instance_id: str
    activity_id: str
    visit: int
    variables: Variables
    trigger_at: datetime
    whatsapp_sends: Sequence[datetime] = ()
    resumed: bool = False
    run_id: str | None = None
    deadline: datetime | None = None  # the instance's journey timeout

    def evaluate(self, source: str) -> Any:
        return evaluate(source, self.variables)

    def condition(self, source: str) -> bool:
        return evaluate_condition(source, self.variables)


@dataclass(frozen=True, slots=True)
class Wait:
    kind: WaitKind
    until: datetime
    event: str | None = None


@dataclass(slots=True)
class StepOutcome:
    """Exactly one of `next`, `wait`, `exit`, `jump_to` is set, or none when an entry is declined.

    `outcome` labels the step for analysts (a branch index, "else", "timeout", a split path).
    """

    outcome: str | None = None
    next: str | None = None
    wait: Wait | None = None
    exit: ExitReason | None = None
    jump_to: str | None = None
    detail: str | None = None
    send: SendRequest | None = None
    delivery: DeliveryEvent | None = None
    http_call: HttpCall | None = None
    message_id: str | None = None

    @classmethod
    def go(cls, next_id: str, outcome: str | None = None, detail: str | None = None) -> StepOutcome:
        return cls(outcome=outcome, next=next_id, detail=detail)

    @classmethod
    def wait_for(cls, kind: WaitKind, until: datetime, event: str | None = None) -> StepOutcome:
        return cls(outcome="waiting", wait=Wait(kind, until, event))

    @classmethod
    def end(
        cls, reason: ExitReason, detail: str | None = None, outcome: str | None = None
    ) -> StepOutcome:
        return cls(outcome=outcome, exit=reason, detail=detail)

    @classmethod
    def jump(cls, journey_id: str) -> StepOutcome:
        return cls(jump_to=journey_id)

    @classmethod
    def decline(cls, detail: str) -> StepOutcome:
        return cls(outcome="declined", detail=detail)
