"""Run a test file's cases and compare what happened with what each case expects.

A difference is a `Mismatch`: the key (`path`, `messages`, ...) and the expected and actual
values as lines in the same shape, so an operator sees both in one read. Lists are exact
(same length, same order); inside a list item only the fields the case gives are compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.core.loader import JourneyProblem, JourneyValidationError
from engine.testing.runner import Call, Message, Skip, Trace
from engine.testing.show import iso, masked, timeline_lines
from engine.testing.suite import Suite, load_suite
from schemas.journey_test import ExpectedHttp, ExpectedMessage, ExpectedSkip, TestCase

__all__ = [
    "CaseResult",
    "Mismatch",
    "TestRun",
    "case_lines",
    "compare",
    "run_case",
    "run_files",
    "run_suite",
]


@dataclass(frozen=True, slots=True)
class Mismatch:
    key: str
    expected: list[str]
    actual: list[str]

    def lines(self) -> list[str]:
        """`key:` then `expected:` and `actual:` blocks, values aligned."""
        out = [f"{self.key}:"]
        for label, values in (("expected", self.expected), ("actual", self.actual)):
            shown = values or ["(none)"]
            out.append(f"  {label + ':':<10}{shown[0]}")
            out.extend(f"  {'':<10}{value}" for value in shown[1:])
        return out


@dataclass(slots=True)
class CaseResult:
    file: str
    name: str
    seconds: float
    trace: Trace
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches


@dataclass(slots=True)
class TestRun:
    """The results of every case of some test files, and the files that did not load."""

    __test__ = False  # not a pytest class

    results: list[CaseResult] = field(default_factory=list)
    invalid: dict[str, list[JourneyProblem]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.invalid

    def summary(self) -> str:
        text = f"{len(self.results) - self.failed} passed, {self.failed} failed"
        if self.invalid:
            text += f", {len(self.invalid)} invalid file(s)"
        return f"{text} in {self.seconds:.2f}s"


def run_files(
    files: Iterable[str],
    on_result: Callable[[CaseResult], None] = lambda _: None,
    on_invalid: Callable[[JourneyProblem], None] = lambda _: None,
) -> TestRun:
    """Load and run each file's cases, reporting each result and problem as it comes."""
    started = time.perf_counter()
    run = TestRun()
    for file in files:
        try:
            suite = load_suite(file)
        except JourneyValidationError as exc:
            run.invalid[file] = exc.problems
            for problem in exc.problems:
                on_invalid(problem)
            continue
        for index in range(len(suite.spec.cases)):
            result = run_case(suite, index)
            run.results.append(result)
            on_result(result)
    run.seconds = time.perf_counter() - started
    return run


def case_lines(result: CaseResult, *, verbose: bool = False) -> list[str]:
    """`PASS|FAIL  file  name  (ms)`, then each mismatch (and with `verbose` the timeline)."""
    mark = "PASS" if result.passed else "FAIL"
    lines = [f"{mark}  {result.file}  {result.name}  ({result.seconds * 1000:.1f} ms)"]
    lines += [f"      {masked(line)}" for m in result.mismatches for line in m.lines()]
    if verbose:
        lines += [f"      | {line}" for line in timeline_lines(result.trace)]
    return lines


def run_suite(suite: Suite) -> list[CaseResult]:
    return [run_case(suite, index) for index in range(len(suite.spec.cases))]


def run_case(suite: Suite, index: int) -> CaseResult:
    case = suite.spec.cases[index]
    started = time.perf_counter()
    trace = suite.simulator.run(
        case.profile.id,
        case.profile.attributes.model_dump(exclude_none=True),
        suite.events[index],
        deliveries=case.deliveries,
        responses=case.responses,
    )
    mismatches = compare(case, trace, suite.journey.id)
    return CaseResult(suite.path, case.name, time.perf_counter() - started, trace, mismatches)


def compare(case: TestCase, trace: Trace, main: str) -> list[Mismatch]:
    """Every difference between the case's expectations and the trace (empty: it passed)."""
    expect = case.expect
    out: list[Mismatch] = []
    if trace.truncated:
        out.append(Mismatch("run", ["finished"], ["stopped after too many steps"]))
    if trace.refusals:
        out.append(Mismatch("templates", [], trace.refusals))
    if expect.path is not None:
        actual_path = trace.path(main)
        if actual_path != expect.path:
            out.append(Mismatch("path", [_arrows(expect.path)], [_arrows(actual_path)]))
    exits = trace.exits(main)
    if expect.exit is not None:
        last = exits[-1] if exits else ("not_entered" if not trace.entries(main) else "live")
        if last != expect.exit:
            out.append(Mismatch("exit", [expect.exit], [_exit_line(trace, main, last)]))
    if expect.exits is not None and exits != expect.exits:
        out.append(Mismatch("exits", [", ".join(expect.exits)], [", ".join(exits)]))
    for key, wanted, actual, matches, show in (
        ("messages", expect.messages, trace.messages, _message_matches, _message),
        ("skipped", expect.skipped, trace.skips, _skip_matches, _skip),
        ("http", expect.http, trace.calls, _http_matches, _http),
    ):
        _compare_list(out, key, wanted, actual, main, matches, show)
    return out


def _compare_list(
    out: list[Mismatch],
    key: str,
    expected: Sequence[Any] | None,
    actual: Sequence[Message | Skip | Call],
    main: str,
    matches: Callable[[Any, Any, str], bool],
    show: Callable[[Any, str], str],
) -> None:
    if expected is None:
        return
    if len(expected) == len(actual) and all(
        matches(e, a, _label(a, main)) for e, a in zip(expected, actual, strict=True)
    ):
        return
    wanted = [show(e, e.activity) for e in expected]
    out.append(Mismatch(key, wanted, [show(a, _label(a, main)) for a in actual]))


def _label(item: Message | Skip | Call, main: str) -> str:
    """The activity id; another journey's as `journey:activity` (as in `path`)."""
    if item.journey_id == main:
        return item.activity_id
    return f"{item.journey_id}:{item.activity_id}"


def _given(expected: Any, actual: Any, names: Sequence[str]) -> bool:
    return all(
        getattr(expected, n) is None or getattr(expected, n) == getattr(actual, n) for n in names
    )


def _message_matches(expected: ExpectedMessage, actual: Message, label: str) -> bool:
    return expected.activity == label and _given(
        expected, actual, ("template", "language", "at", "body")
    )


def _skip_matches(expected: ExpectedSkip, actual: Skip, label: str) -> bool:
    return expected.activity == label and _given(expected, actual, ("reason",))


def _http_matches(expected: ExpectedHttp, actual: Call, label: str) -> bool:
    return expected.activity == label and _given(expected, actual, ("method", "url", "body"))


def _message(m: ExpectedMessage | Message, label: str) -> str:
    parts = [label]
    if m.template is not None or m.language is not None:
        parts.append(f"{m.template or '*'}/{m.language or '*'}")
    if m.at is not None:
        parts.append(f"at {iso(m.at)}")
    if m.body is not None:
        parts.append(f"body {m.body}")
    if isinstance(m, Message) and m.status != "accepted":
        parts.append(f"({m.status}{': ' + m.error if m.error else ''})")
    return "  ".join(parts)


def _skip(s: ExpectedSkip | Skip, label: str) -> str:
    return f"{label}  {s.reason or '*'}"


def _http(h: ExpectedHttp | Call, label: str) -> str:
    parts = [label, h.method or "*"]
    if h.url is not None:
        parts.append(h.url)
    if h.body is not None:
        parts.append(f"body {h.body}")
    return "  ".join(parts)


def _arrows(path: Sequence[str]) -> str:
    return " > ".join(path) if path else "(nothing ran)"


def _exit_line(trace: Trace, main: str, reason: str) -> str:
    """The reason, with the interpreter's detail when there is one ("exit event order.placed")."""
    for step in reversed(trace.steps):
        if step.kind == "exited" and step.journey_id == main:
            return f"{reason} at {step.activity_id} ({step.detail})" if step.detail else reason
    return reason
