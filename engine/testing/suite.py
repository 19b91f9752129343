"""Load journey test files, or say exactly what is wrong, as FILE:LINE:COLUMN: field: message.

The YAML location machinery is the journey loader's own (`engine.core.loader`). Beyond the
schema, a test file is checked against the journeys it names: files that exist and load,
events in time order, and every activity a case mentions existing in those journeys (so a
typo in an expectation is an error, not a test that can never pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from connectors.whatsapp.policy import Keyword
from engine.core.catalog import DeploymentRejected
from engine.core.loader import (
    JourneyProblem,
    JourneyValidationError,
    Path_,
    _compose,
    _duplicate_problems,
    _field_name,
    _sorted,
    _validation_problems,
    load_journey,
    read_yaml_file,
)
from engine.testing.runner import Simulator
from engine.testing.templates import TemplateBook
from schemas.events import ProfileEvent
from schemas.journey import JourneyDefinition
from schemas.journey_test import JourneyTestFile, TestCase

DEFAULT_START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
KEYWORD_JOURNEY = "whatsapp-keywords"  # connectors.whatsapp.webhook.KEYWORD_JOURNEY
TEST_SUFFIXES = (".test.yaml", ".test.yml")

__all__ = ["DEFAULT_START", "Suite", "find_test_files", "load_suite", "parse_suite"]


@dataclass(slots=True)
class Suite:
    """A loaded test file: its journeys deployed on a simulator, and its cases' events."""

    path: str
    spec: JourneyTestFile
    journey: JourneyDefinition
    simulator: Simulator
    start: datetime
    events: list[list[ProfileEvent]]  # per case, in time order


def find_test_files(paths: Iterable[str]) -> list[str]:
    """Files as given; directories searched (recursively, sorted) for `*.test.yaml|yml`."""
    found: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(str(f) for f in sorted(p.rglob("*")) if f.name.endswith(TEST_SUFFIXES))
        else:
            found.append(raw)
    return found


def load_suite(path: str | Path) -> Suite:
    """Read and check one test file; raise JourneyValidationError listing every problem."""
    return parse_suite(*read_yaml_file(path))


def parse_suite(text: str, filename: str) -> Suite:
    data, marks = _compose(text, filename, "a test file holds one YAML mapping (journey, cases)")
    problems = _duplicate_problems(marks, filename)
    try:
        spec = JourneyTestFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, data, marks, filename))
        raise JourneyValidationError(_sorted(problems)) from None
    here = Path(filename).parent

    def problem(path: Path_, message: str) -> JourneyProblem:
        line, col = marks.locate(path)
        return JourneyProblem(filename, line, col, _field_name(path), message)

    journeys: list[JourneyDefinition] = []
    for where, name in [(("journey",), spec.journey)] + [
        (("also", i), other) for i, other in enumerate(spec.also)
    ]:
        target = here / name
        if not target.is_file():
            problems.append(problem(where, f"no journey file at {target}"))
            continue
        try:
            journeys.append(load_journey(target))
        except JourneyValidationError as exc:
            problems.extend(exc.problems)
    templates = None
    if spec.templates is not None:
        from connectors.whatsapp.sandbox import TemplateFileError

        try:
            templates = TemplateBook(here / spec.templates)
        except TemplateFileError as exc:
            problems.append(problem(("templates",), str(exc)))
    if problems:
        raise JourneyValidationError(_sorted(problems))
    start = spec.now or DEFAULT_START
    known = {j.id: set(j.activities) for j in journeys}
    known[KEYWORD_JOURNEY] = {k.value for k in Keyword}  # the webhook's keyword replies
    all_events = []
    for index, case in enumerate(spec.cases):
        events = list(_events(case, start, ("cases", index), problem, problems))
        all_events.append(events)
        for path, activity in _activities_named(case, ("cases", index)):
            if not _qualified(activity, known) and not any(activity in i for i in known.values()):
                problems.append(problem(path, f"no activity {activity!r} in the journeys"))
    try:
        simulator = Simulator(journeys, deployed_at=start, templates=templates)
    except DeploymentRejected as exc:
        problems.append(problem(("journey",), str(exc)))
    if problems:
        raise JourneyValidationError(_sorted(problems))
    return Suite(filename, spec, journeys[0], simulator, start, all_events)


def _qualified(activity: str, known: dict[str, set[str]]) -> bool:
    journey, _, inner = activity.partition(":")
    return inner in known.get(journey, ())


def _events(
    case: TestCase,
    start: datetime,
    where: Path_,
    problem: Callable[[Path_, str], JourneyProblem],
    problems: list[JourneyProblem],
) -> Iterator[ProfileEvent]:
    clock = start
    for i, spec in enumerate(case.events):
        at = spec.at if spec.at is not None else clock + (spec.after or timedelta(0))
        if at < clock:
            problems.append(
                problem(
                    (*where, "events", i, "at"),
                    f"{at.isoformat()} is before the previous event ({clock.isoformat()})",
                )
            )
        clock = max(clock, at)
        yield ProfileEvent(
            event_id=spec.event_id or f"{case.profile.id}-event-{i + 1}",
            type=spec.type,
            profile_id=case.profile.id,
            occurred_at=at,
            attributes=spec.attributes,
            data=spec.data,
        )


def _activities_named(case: TestCase, where: Path_) -> Iterator[tuple[Path_, str]]:
    expect = case.expect
    lists: list[tuple[Path_, Sequence[Any] | None]] = [
        ((*where, "deliveries"), case.deliveries),
        ((*where, "responses"), case.responses),
        ((*where, "expect", "messages"), expect.messages),
        ((*where, "expect", "skipped"), expect.skipped),
        ((*where, "expect", "http"), expect.http),
    ]
    for at, items in lists:
        for i, item in enumerate(items or ()):
            yield (*at, i, "activity"), item.activity
    for i, activity in enumerate(expect.path or ()):
        yield (*where, "expect", "path", i), activity
