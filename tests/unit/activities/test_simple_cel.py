"""The direct answers of activities/simple_cel.py are CEL's answers, value and type."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from activities import expressions
from activities.expressions import ExpressionError, Variables, evaluate
from activities.simple_cel import UNDECIDED, simple_program

MISSING = object()

VALUES: list[Any] = [
    "a",
    "b",
    "é",
    "",
    "\ud800",  # a lone surrogate: the binding refuses it
    0,
    5,
    -3,
    26,
    2**63,
    2**64,
    -(2**63) - 1,
    2.5,
    -0.0,
    26.0,
    20.0,
    19.999999999999996,
    20.000000000000004,
    26.5,
    -3.0,
    0.0,
    5e-324,
    1e300,
    2.0**53,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    float(2**53 + 2),
    float("nan"),
    float("inf"),
    True,
    False,
    None,
    {"k": 1},
    [1],
    MISSING,
]
LITERALS = ['"a"', "'é'", '""', "0", "5", "-3", "20", "2.5", "-0.0", "26.0", "20.0", "true"]
LITERALS.append("false")
OPERATORS = ["==", "!=", "<", "<=", ">", ">="]
SOURCES = [
    *(f"profile.x {op} {lit}" for op, lit in itertools.product(OPERATORS, LITERALS)),
    "profile.x",
    "string(profile.x)",
    "event.data.x > 20",
    "event.data.x",
    " string( event.data.x ) ",
]


def _variables(value: Any) -> dict[str, Any]:
    fields = {} if value is MISSING else {"x": value}
    return {"profile": fields, "event": {"data": dict(fields)}}


def _outcome(source: str, variables: Variables | dict[str, Any]) -> tuple[str, Any]:
    try:
        value = evaluate(source, variables)
    except ExpressionError as exc:
        return "error", exc.reason
    if isinstance(value, float) and math.isnan(value):
        return "nan", None
    return type(value).__name__, value


@pytest.mark.parametrize("source", SOURCES)
def test_a_direct_answer_is_cel_s_answer(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluated as the engine does (direct when it can) and with the direct path turned
    off (always the binding), every value gives the same result or the same error."""
    for value in VALUES:
        values = _variables(value)
        direct = _outcome(source, Variables(values))
        with monkeypatch.context() as binding_only:
            binding_only.setattr(expressions, "_simple", lambda source: None)
            binding = _outcome(source, Variables(values))
        assert direct == binding, (source, value)


def test_the_common_forms_are_answered_directly() -> None:
    cases: list[tuple[str, dict[str, Any], Any]] = [
        ("event.data.cart_total > 20", {"event": {"data": {"cart_total": 26}}}, True),
        ("event.data.cart_total > 20", {"event": {"data": {"cart_total": 12}}}, False),
        ('profile.language == "es"', {"profile": {"language": "es"}}, True),
        ("profile.language != 'es'", {"profile": {"language": "en"}}, True),
        ("profile.score >= 2.5", {"profile": {"score": 2.5}}, True),
        ("profile.vip == true", {"profile": {"vip": False}}, False),
        ("profile.first_name", {"profile": {"first_name": "Ana"}}, "Ana"),
        ("string(event.data.items)", {"event": {"data": {"items": 42}}}, "42"),
        ("event.data.total > 20", {"event": {"data": {"total": 26.5}}}, True),
        ("event.data.total <= 2.5", {"event": {"data": {"total": 2}}}, True),
        ("event.data.total == 20", {"event": {"data": {"total": 20.0}}}, True),
    ]
    for source, values, expected in cases:
        program = simple_program(source)
        assert program is not None, source
        result = program(values)
        assert result == expected and type(result) is type(expected), source


@pytest.mark.parametrize(
    ("source", "values"),
    [
        ("profile.vip == 1", {"profile": {"vip": True}}),
        ("profile.n > 2", {"profile": {"n": 2**63}}),
        ("profile.n > 2.5", {"profile": {"n": 2**53 + 1}}),  # not exact as a double
        ("profile.n == 1", {"profile": {"n": float("nan")}}),
        ("profile.x == 1", {"profile": {}}),
        ("string(profile.x)", {"profile": {"x": 2.0}}),
        ("profile.x.y == 1", {"profile": {"x": 5}}),
    ],
)
def test_what_cel_decides_differently_is_left_to_cel(source: str, values: dict[str, Any]) -> None:
    program = simple_program(source)
    assert program is not None
    assert program(values) is UNDECIDED


@pytest.mark.parametrize(
    "source",
    [
        "profile.x > 1 && profile.y",
        "profile.x in [1, 2]",
        "size(profile.x) > 1",
        '"a" == profile.x',
        r'profile.x == "a\n"',
        "profile.x == 0x10",
        "profile.x == 1u",
        "profile.x == 1e3",
        "true == profile.x",
        "profile.vip > false",
        "null",
        "in.x == 1",
        "profile['x'] == 1",
        "has(profile.x)",
        "profile.x == 9223372036854775808",
    ],
)
def test_other_forms_are_not_simple(source: str) -> None:
    assert simple_program(source) is None


def test_an_invalid_expression_still_fails_as_before() -> None:
    with pytest.raises(ExpressionError, match="invalid CEL"):
        evaluate("profile.x ==", Variables({"profile": {"x": 1}}))
