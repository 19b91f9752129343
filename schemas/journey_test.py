"""The journey test file (`journeyctl test`): cases that play events through a journey.

One YAML file holds the journey it tests (a path relative to the file), optional other
journeys a jump may enter, optional templates to check sends against, and cases. Each
case is a profile, its events in order, what the channel reports back, and what must
happen. Every `expect` key is optional; its lists are exact (same items, same order), and
within an item only the fields given are compared.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    JsonValue,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from schemas.common import DURATION_PATTERN, EventType, StrictModel, format_duration, parse_duration
from schemas.events import ProfileAttributes


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a delay cannot be negative")
    return value


Delay = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    AfterValidator(_not_negative),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["0s", "5m", "2h"]}),
]

ExitName = Literal[
    "completed", "exit_event", "timeout", "archived", "jumped", "error", "not_entered"
]


class TestProfile(StrictModel):
    """The profile as the engine knows it before the case's first event."""

    __test__ = False  # not a pytest class

    id: str = Field(default="p1", min_length=1, max_length=200)
    attributes: ProfileAttributes = Field(default_factory=ProfileAttributes)


class TestEvent(StrictModel):
    """One profile event: at an absolute time, or `after` the previous one (or the start)."""

    __test__ = False

    at: AwareDatetime | None = None
    after: Delay | None = None
    type: EventType
    data: dict[str, JsonValue] = Field(default_factory=dict)
    attributes: ProfileAttributes | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_time(self) -> TestEvent:
        if self.at is not None and self.after is not None:
            raise ValueError("give `at` or `after`, not both")
        return self


class TestDelivery(StrictModel):
    """A status the channel reports for every message an activity sends, `after` the send."""

    __test__ = False

    activity: str
    status: Literal["sent", "delivered", "read", "failed"]
    after: Delay = timedelta(0)
    error_code: int | None = Field(default=None, description="for `failed`: Meta's error code")


class TestHttpResponse(StrictModel):
    """How the HTTP connector answers an `http` activity's calls (default: 200 at once)."""

    __test__ = False

    activity: str
    status: int | Literal["timeout"] = Field(
        default=200, description="an HTTP status, or `timeout` for no answer"
    )
    after: Delay = timedelta(0)


class ExpectedMessage(StrictModel):
    activity: str
    template: str | None = None
    language: str | None = None
    at: AwareDatetime | None = None
    body: list[str] | None = None


class ExpectedSkip(StrictModel):
    activity: str
    reason: str | None = None


class ExpectedHttp(StrictModel):
    activity: str
    method: str | None = None
    url: str | None = None
    body: dict[str, Any] | None = None


class Expectations(StrictModel):
    """What must happen; a key left out is not checked."""

    messages: list[ExpectedMessage] | None = None
    path: list[str] | None = Field(
        default=None,
        description="activity ids in the order they ran; another journey's as `journey:activity`",
    )
    exit: ExitName | None = Field(
        default=None, description="how the journey's last instance ended (`not_entered`: none)"
    )
    exits: list[ExitName] | None = Field(
        default=None, description="how each instance ended, one reason per entry, in order"
    )
    skipped: list[ExpectedSkip] | None = None
    http: list[ExpectedHttp] | None = None


class TestCase(StrictModel):
    __test__ = False

    name: str = Field(min_length=1)
    profile: TestProfile = Field(default_factory=TestProfile)
    events: list[TestEvent] = Field(default_factory=list)
    deliveries: list[TestDelivery] = Field(default_factory=list)
    responses: list[TestHttpResponse] = Field(default_factory=list)
    expect: Expectations = Field(default_factory=Expectations)


class JourneyTestFile(StrictModel):
    """A journey test file (`journeyctl test FILE`); paths are relative to the file."""

    journey: str = Field(min_length=1, description="the journey under test")
    also: list[str] = Field(default_factory=list, description="journeys a jump may enter")
    templates: str | None = Field(
        default=None, description="a template file (the sandbox's format) to check sends against"
    )
    now: AwareDatetime | None = Field(default=None, description="where the virtual clock starts")
    cases: list[TestCase] = Field(min_length=1)
