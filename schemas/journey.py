"""The journey definition: what an operator writes as YAML, validated into typed models.

Graph-level rules (targets exist, everything reachable, no wait-free cycles) live in
`check_graph`, which names the field of each problem so the loader can point at a line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.common import (
    ActivityId,
    Duration,
    EventType,
    Expression,
    JourneyId,
    StrictModel,
    TimeZoneName,
)
from schemas.schedule import Schedule

MAX_ACTIVITIES = 50  # AJO's limit per journey
MAX_JOURNEY_TIMEOUT = timedelta(days=91)  # AJO's global journey timeout
_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class AudienceEntry(StrictModel):
    """Read the audience: every stored profile the condition holds for, on deploy or on a schedule."""

    condition: Expression
    schedule: Schedule | None = Field(
        default=None, description="when the audience is read; absent: when the journey is deployed"
    )


class QualificationEntry(StrictModel):
    """Audience qualification: a profile enters the moment an attribute update makes it match."""

    condition: Expression


class EntryRule(StrictModel):
    """How a profile enters: exactly one of an `event` (with an optional CEL `condition`),
    an `audience` read, or an audience `qualification`."""

    event: EventType | None = None
    condition: Expression | None = None
    audience: AudienceEntry | None = None
    qualification: QualificationEntry | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> EntryRule:
        given = [
            name
            for name in ("event", "audience", "qualification")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none"
            raise ValueError(
                "an entry takes exactly one of 'event', 'audience' or 'qualification' "
                f"({found}), for example {{event: cart.abandoned}} or "
                "{audience: {condition: 'profile.tier == \"gold\"'}}"
            )
        if self.condition is not None and self.event is None:
            raise ValueError(
                f"'condition' beside {given[0]!r} is not used: put it inside, "
                f"like {{{given[0]}: {{condition: ...}}}}"
            )
        return self

    @property
    def kind(self) -> Literal["event", "audience", "qualification"]:
        if self.audience is not None:
            return "audience"
        if self.qualification is not None:
            return "qualification"
        return "event"

    @property
    def admission_condition(self) -> str | None:
        """The CEL condition a profile must meet to enter, whatever the kind of entry."""
        if self.audience is not None:
            return self.audience.condition
        if self.qualification is not None:
            return self.qualification.condition
        return self.condition


class Reentry(StrictModel):
    mode: Literal["never", "always", "after"] = "never"
    wait: Duration | None = None

    @model_validator(mode="after")
    def _wait_goes_with_after(self) -> Reentry:
        if self.mode == "after" and self.wait is None:
            raise ValueError(
                "reentry mode 'after' needs a wait, for example {mode: after, wait: 7d}"
            )
        if self.mode != "after" and self.wait is not None:
            raise ValueError(f"reentry mode {self.mode!r} takes no wait; use mode 'after'")
        return self


class ExitCriterion(StrictModel):
    event: EventType
    condition: Expression | None = None


class FrequencyCap(StrictModel):
    channel: Literal["whatsapp"] = "whatsapp"
    max: int = Field(ge=1, le=1000)
    per: Duration


class QuietHours(StrictModel):
    """A daily window in which no message goes out; `timezone: profile` uses the profile's zone."""

    start: str
    end: str
    timezone: Literal["profile"] | TimeZoneName = "profile"
    action: Literal["delay", "skip"] = "delay"
    default_timezone: TimeZoneName = "UTC"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK_RE.match(value):
            raise ValueError(f"invalid time {value!r}: use 24-hour HH:MM, like '21:00'")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours start and end are equal: the window would be empty")
        return self


# --- activities --------------------------------------------------------------------


class WaitActivity(StrictModel):
    """Pause for a duration, or until the time an expression gives."""

    type: Literal["wait"]
    duration: Duration | None = None
    until: Expression | None = None
    next: ActivityId

    @model_validator(mode="after")
    def _one_of(self) -> WaitActivity:
        if (self.duration is None) == (self.until is None):
            raise ValueError("a wait takes exactly one of 'duration' or 'until'")
        return self


class Branch(StrictModel):
    when: Expression
    next: ActivityId


class ConditionActivity(StrictModel):
    """Ordered branches: the first whose `when` holds is taken, else `else`."""

    type: Literal["condition"]
    branches: list[Branch] = Field(min_length=1, max_length=20)
    else_: ActivityId = Field(alias="else")
    on_error: ActivityId | None = None


class WaitForEventActivity(StrictModel):
    """Wait for an event of a type (optionally matching a condition) or time out."""

    type: Literal["wait_for_event"]
    event: EventType
    condition: Expression | None = None
    timeout: Duration
    next: ActivityId
    on_timeout: ActivityId


class SplitPath(StrictModel):
    weight: float = Field(gt=0)
    next: ActivityId
    name: str | None = None


class SplitActivity(StrictModel):
    """Random split, sticky per profile: a hash of profile and activity picks the path."""

    type: Literal["split"]
    paths: list[SplitPath] = Field(min_length=2, max_length=10)


class WhatsAppParameters(StrictModel):
    header: list[Expression] = Field(default_factory=list, max_length=1)
    body: list[Expression] = Field(default_factory=list, max_length=20)
    buttons: list[Expression] = Field(default_factory=list, max_length=10)


class MediaHeader(StrictModel):
    type: Literal["image", "video", "document"]
    link: Expression


class WhatsAppActivity(StrictModel):
    """Send an approved template; rendered values come from CEL over the profile and event."""

    type: Literal["whatsapp"]
    template: str = Field(pattern=r"^[a-z0-9_]+$", max_length=512)
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    parameters: WhatsAppParameters = Field(default_factory=WhatsAppParameters)
    media: MediaHeader | None = None
    on_paused: Literal["skip", "wait"] = Field(
        default="skip",
        description="when Meta has paused the template: skip the send (template_paused), or "
        "wait until it is reinstated or the journey times out",
    )
    next: ActivityId
    on_error: ActivityId | None = None


class HttpActivity(StrictModel):
    """A custom action: an HTTP call made by the engine's HTTP connector, never by the core."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(pattern=r"^https?://", max_length=2000)
    body: dict[str, Expression] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    next: ActivityId
    on_error: ActivityId


class JumpActivity(StrictModel):
    """End this instance and enter the profile into another journey's entry."""

    type: Literal["jump"]
    journey: JourneyId


class EndActivity(StrictModel):
    type: Literal["end"]


Activity = Annotated[
    WaitActivity
    | ConditionActivity
    | WaitForEventActivity
    | SplitActivity
    | WhatsAppActivity
    | HttpActivity
    | JumpActivity
    | EndActivity,
    Field(discriminator="type"),
]

WAITING_TYPES = frozenset({"wait", "wait_for_event", "http"})


def activity_targets(activity: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every (field path, target id) a step can move to, for graph checks and drawing."""
    match activity:
        case WaitActivity() | WhatsAppActivity() | HttpActivity():
            yield ("next",), activity.next
            on_error = getattr(activity, "on_error", None)
            if on_error:
                yield ("on_error",), on_error
        case ConditionActivity():
            for i, branch in enumerate(activity.branches):
                yield ("branches", i, "next"), branch.next
            yield ("else",), activity.else_
            if activity.on_error:
                yield ("on_error",), activity.on_error
        case WaitForEventActivity():
            yield ("next",), activity.next
            yield ("on_timeout",), activity.on_timeout
        case SplitActivity():
            for i, path in enumerate(activity.paths):
                yield ("paths", i, "next"), path.next
        case _:
            return


class JourneyDefinition(StrictModel):
    """One journey, as written in YAML (see DESIGN.md, Contracts)."""

    id: JourneyId
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    entry: EntryRule
    reentry: Reentry = Field(default_factory=Reentry)
    exit_on: list[ExitCriterion] = Field(default_factory=list)
    timeout: Duration = MAX_JOURNEY_TIMEOUT
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None
    start: ActivityId
    activities: dict[ActivityId, Activity] = Field(min_length=1)

    @field_validator("timeout")
    @classmethod
    def _timeout_cap(cls, value: timedelta) -> timedelta:
        if value > MAX_JOURNEY_TIMEOUT:
            raise ValueError("the journey timeout cannot exceed 91d")
        return value

    @field_validator("activities")
    @classmethod
    def _activity_cap(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_ACTIVITIES:
            raise ValueError(
                f"a journey has at most {MAX_ACTIVITIES} activities; this one has {len(value)}"
            )
        return value

    @model_validator(mode="after")
    def _graph(self, info: ValidationInfo) -> JourneyDefinition:
        # The loader asks to skip this so it can report each problem at its own line.
        if info.context and info.context.get("skip_graph"):
            return self
        problems = check_graph(self)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))
        return self


def check_graph(journey: JourneyDefinition) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of the activity graph, each with the path of the field at fault."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    acts = journey.activities
    if journey.start not in acts:
        problems.append(
            (("start",), f"start activity {journey.start!r} is not defined in activities")
        )
    edges: dict[str, list[str]] = {}
    for act_id, act in acts.items():
        edges[act_id] = []
        for path, target in activity_targets(act):
            if target not in acts:
                problems.append(
                    (("activities", act_id, *path), f"transition to missing activity {target!r}")
                )
            else:
                edges[act_id].append(target)
    if journey.start in acts:
        seen: set[str] = set()
        stack = [journey.start]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(edges[node])
        for act_id in acts:
            if act_id not in seen:
                problems.append(
                    (("activities", act_id), f"activity {act_id!r} is unreachable from start")
                )
    problems.extend(_wait_free_cycles(acts, edges))
    return problems


def _wait_free_cycles(
    acts: dict[str, Any], edges: dict[str, list[str]]
) -> list[tuple[tuple[str | int, ...], str]]:
    # A cycle through only instant steps would spin forever on one event.
    instant = {a for a, act in acts.items() if act.type not in WAITING_TYPES}
    color: dict[str, int] = {}
    found: list[tuple[tuple[str | int, ...], str]] = []

    def visit(node: str, trail: list[str]) -> None:
        color[node] = 1
        trail.append(node)
        for nxt in edges.get(node, []):
            if nxt not in instant:
                continue
            if color.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt]
                found.append((("activities", nxt), "cycle passes no wait: " + " -> ".join(cycle)))
            elif color.get(nxt) is None:
                visit(nxt, trail)
        trail.pop()
        color[node] = 2

    for node in sorted(instant):
        if color.get(node) is None:
            visit(node, [])
    return found
