"""The simplest CEL expressions answered in Python, where the answer cannot differ from CEL's.

Most journeys' expressions are a field, `string(field)` or a field compared with a
literal. Running them through the binding costs a conversion of every value into CEL,
more than the expression itself; these forms are answered directly when the field's
value has the literal's own type (or both are numbers a double holds exactly, which CEL
compares across int and double as Python does), and are handed back to the binding
otherwise, so no answer can differ from CEL's.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any, Final

# What a simple program returns when the binding must answer: a missing key, a value of
# another type, an out-of-range number. The binding then gives the value or the error.
UNDECIDED: Final = object()

SimpleProgram = Callable[[dict[str, Any]], Any]

_INT64 = (-(2**63), 2**63)
# CEL's reserved words and literals: never a variable's name.
_RESERVED = frozenset(
    [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"  # a CEL identifier (expressions.py uses it too)
_PATH = rf"{IDENT}(?:\.{IDENT})*"
# Literals without escapes, prefixes or exponents: their value is their text.
_LITERAL = r"""(?:"[^"\\\r\n]*"|'[^'\\\r\n]*'|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?|true|false)"""
_COMPARISON = re.compile(rf"\s*({_PATH})\s*(==|!=|<=|>=|<|>)\s*({_LITERAL})\s*")
_FIELD = re.compile(rf"\s*({_PATH})\s*")
_STRING_OF = re.compile(rf"\s*string\(\s*({_PATH})\s*\)\s*")


def _lookup(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = values
    for name in path:
        # Plain dicts only: another mapping type converts however the binding makes it.
        if type(value) is not dict:
            return UNDECIDED
        value = value.get(name, UNDECIDED)
        if value is UNDECIDED:
            return UNDECIDED
    return value


def _text(value: str) -> bool:
    """Text the binding can convert: not a lone surrogate (which it refuses)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain(value: Any) -> bool:
    """A value the binding converts to the same Python value it returns."""
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind is int:
        return bool(_INT64[0] <= value < _INT64[1])
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _literal(text: str) -> Any:
    if text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _path(text: str) -> tuple[str, ...] | None:
    path = tuple(text.split("."))
    return None if path[0] in _RESERVED else path


# Numbers CEL compares across int and double as Python does: a double holds every int
# of at most 53 bits exactly, so neither side is rounded.
_EXACT = 2**53
_NUMBERS = (int, float)


def _exact_number(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        whole: int = value
        return -_EXACT <= whole <= _EXACT
    return kind is float and math.isfinite(value)


def _comparison(path: tuple[str, ...], op: str, literal: Any) -> SimpleProgram | None:
    kind = type(literal)
    if kind is int and not _INT64[0] <= literal < _INT64[1]:
        return None
    if kind is bool and op not in ("==", "!="):
        return None  # bools are only compared for equality here
    compare = _ORDER[op]
    # A number literal also answers for a number field of the other type (an int total
    # against 20.5, a 26.5 total against 20), where both are exact as doubles.
    numeric = kind in _NUMBERS and _exact_number(literal)

    def run(values: dict[str, Any]) -> Any:
        value = _lookup(values, path)
        if type(value) is kind and _plain(value):
            return compare(value, literal)
        # Otherwise CEL's cross-type rules (bool vs int, uint, huge ints) stay its own.
        if numeric and type(value) in _NUMBERS and _exact_number(value):
            return compare(value, literal)
        return UNDECIDED

    return run


def _field(path: tuple[str, ...]) -> SimpleProgram:
    def run(values: dict[str, Any]) -> Any:
        value = _lookup(values, path)
        return value if value is not UNDECIDED and _plain(value) else UNDECIDED

    return run


def _string_of(path: tuple[str, ...]) -> SimpleProgram:
    def run(values: dict[str, Any]) -> Any:
        value = _lookup(values, path)
        kind = type(value)
        if kind is str and _text(value):
            return value
        if kind is int and _plain(value):
            return str(value)
        return UNDECIDED  # floats, bools, null: the binding's own spelling

    return run


def simple_program(source: str) -> SimpleProgram | None:
    """A direct evaluation of `source` (valid CEL) if it has one of the simple forms.

    The program returns the value CEL would, or UNDECIDED when the binding must answer.
    """
    if match := _COMPARISON.fullmatch(source):
        path = _path(match.group(1))
        return _comparison(path, match.group(2), _literal(match.group(3))) if path else None
    if match := _STRING_OF.fullmatch(source):
        path = _path(match.group(1))
        return _string_of(path) if path else None
    if match := _FIELD.fullmatch(source):
        path = _path(match.group(1))
        return _field(path) if path else None
    return None
