"""Safe CEL evaluation for conditions and template parameters, one error type for every failure.

Callers build one `Variables` per activity run; each expression sees only the variables it names.
A field, `string(field)` or a field compared with a literal of its own type is answered
without the binding (activities/simple_cel.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import cel

from activities.simple_cel import IDENT, UNDECIDED, SimpleProgram, simple_program
from schemas.common import compile_expression
from schemas.state import EventContext


class ExpressionError(Exception):
    """An expression could not be evaluated against this profile and event."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"expression {source!r} failed: {reason}")


class Variables:
    """The variables of one activity run; converted to CEL values only as expressions need them.

    Converting Python values into CEL values is most of an evaluation's cost (each map
    entry costs microseconds in the binding, more than running the expression), so each
    expression gets a context holding only what it reads (`projection_of`): the variables
    it names and, where it only selects fields (`profile.first_name`), only those fields.
    A context is built once per projection and reused by the run's other expressions
    that read the same.
    """

    __slots__ = ("_contexts", "programs", "values")

    def __init__(self, values: dict[str, Any], programs: Mapping[str, Any] | None = None) -> None:
        self.values = values
        # Programs compiled when the journey was deployed; others come from the shared cache.
        self.programs: Mapping[str, Any] = programs or {}
        self._contexts: dict[Projection | None, Any] = {}

    def context(self, projection: Projection | None = None) -> Any:
        """A CEL context of what `projection` reads (every variable, whole, when None)."""
        context = self._contexts.get(projection)
        if context is None:
            values = self.values
            if projection is not None:
                values = {
                    name: _project(values[name], fields)
                    for name, fields in projection
                    if name in values
                }
            context = self._contexts[projection] = cel.Context(values)
        return context


# What an expression reads: (variable, fields) pairs sorted by name. `fields` is None for
# the whole value, else ((field, fields), ...) for the fields it selects, recursively.
Fields = tuple[tuple[str, "Fields | None"], ...]
Projection = tuple[tuple[str, Fields | None], ...]

# An identifier not preceded by a dot or another identifier's character, its chain of
# `.field` selections, and whether a call follows (then the chain's last name is a
# method or function, not a field).
_USE = re.compile(rf"(?<![\w.])({IDENT})((?:\s*\.\s*{IDENT})*)(\s*\()?")
_DOT = re.compile(r"\s*\.\s*")


def _project(value: Any, fields: Fields | None) -> Any:
    if fields is None or not isinstance(value, Mapping):
        return value
    return {name: _project(value[name], sub) for name, sub in fields if name in value}


def _paths(source: str) -> dict[str, list[tuple[str, ...]]]:
    """Every top-level use of an identifier in `source`, as the field path it selects.

    Conservative by construction: a use not followed by `.field` (indexing, `size(x)`,
    `"k" in x`, a macro on x) is the empty path, which keeps the whole value; a name in a
    string literal only adds a path. An expression that would see a different value
    than the whole variable cannot be built from these paths.
    """
    paths: dict[str, list[tuple[str, ...]]] = {}
    for match in _USE.finditer(source):
        name, chain, call = match.group(1), match.group(2), match.group(3)
        fields = tuple(_DOT.split(chain)[1:]) if chain else ()
        if call is not None:
            if not fields:
                continue  # a function call, not a variable
            fields = fields[:-1]  # a method call on the value before it
        paths.setdefault(name, []).append(fields)
    return paths


def _fields(paths: list[tuple[str, ...]]) -> Fields | None:
    """The fields a set of paths selects; None as soon as one path takes the whole value."""
    if not paths or any(not path for path in paths):
        return None
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        heads.setdefault(path[0], []).append(path[1:])
    return tuple(sorted((head, _fields(rest)) for head, rest in heads.items()))


# What each expression source reads, from the binding's static analysis of the names and
# `_paths` for the fields. None: unknown (a program without `variables()`): every variable.
_PROJECTIONS: dict[str, Projection | None] = {}
_PROJECTIONS_MAX = 8192


def projection_of(source: str, program: Any) -> Projection | None:
    """What `program` (compiled from `source`) reads of the variables, cached per source."""
    try:
        return _PROJECTIONS[source]
    except KeyError:
        pass
    try:
        names: frozenset[str] | None = frozenset(program.variables())
    except Exception:  # not the binding's Program (a test double): give it everything
        names = None
    projection: Projection | None = None
    if names is not None:
        paths = _paths(source)
        projection = tuple(sorted((name, _fields(paths.get(name, []))) for name in names))
    if len(_PROJECTIONS) < _PROJECTIONS_MAX:
        _PROJECTIONS[source] = projection
    return projection


def event_variables(event: EventContext | None) -> dict[str, Any]:
    """An event as expressions see it; no event is an empty map, not null."""
    if event is None:
        return {}
    return {
        "type": event.type,
        "data": event.data,
        "occurred_at": event.occurred_at,
        "event_id": event.event_id,
    }


def build_variables(
    *,
    profile: Mapping[str, Any],
    event: EventContext,
    trigger: EventContext | None,
    journey_id: str,
    version: int,
    instance_id: str,
    entered_at: datetime,
    now: datetime,
    programs: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Variables:
    """The variables every expression of one activity run sees.

    `profile` is the merged attributes, `event` the instance's entry event, `trigger` the
    event that woke this step (an empty map when a timer did, so `has(trigger.x)` works),
    `context` the context of the campaign trigger that admitted the profile (else empty).
    """
    return Variables(
        {
            "profile": profile,
            "event": event_variables(event),
            "trigger": event_variables(trigger),
            "journey": {
                "id": journey_id,
                "version": version,
                "instance_id": instance_id,
                "entered_at": entered_at,
            },
            "context": context or {},
            "now": now,
        },
        programs,
    )


# Each source's direct evaluation (activities/simple_cel.py), or None: CEL's only.
_SIMPLE: dict[str, SimpleProgram | None] = {}
_SIMPLE_MAX = 8192


def _simple(source: str) -> SimpleProgram | None:
    try:
        return _SIMPLE[source]
    except KeyError:
        pass
    try:
        compile_expression(source)  # only valid CEL is answered directly
        simple = simple_program(source)
    except ValueError:
        simple = None
    if len(_SIMPLE) < _SIMPLE_MAX:
        _SIMPLE[source] = simple
    return simple


def evaluate(source: str, variables: Variables | Mapping[str, Any]) -> Any:
    """Evaluate a CEL expression; any failure is raised as ExpressionError(source, reason)."""
    if isinstance(variables, Variables):
        simple = _simple(source)
        if simple is not None:
            value = simple(variables.values)
            if value is not UNDECIDED:
                return value
    program = variables.programs.get(source) if isinstance(variables, Variables) else None
    if program is None:
        try:
            program = compile_expression(source)
        except ValueError as exc:
            raise ExpressionError(source, str(exc)) from None
    try:
        if isinstance(variables, Variables):
            return program.execute(variables.context(projection_of(source, program)))
        return program.execute(dict(variables))
    except KeyError as exc:
        # A missing map key is the common case: name it, and point at has().
        raise ExpressionError(
            source, f"no such key {exc.args[0]!r} (guard it with has())"
        ) from None
    except Exception as exc:  # the binding raises ValueError, TypeError, RuntimeError, ...
        text = str(exc).strip().splitlines()
        raise ExpressionError(source, text[0] if text else type(exc).__name__) from None


def evaluate_condition(source: str, variables: Variables | Mapping[str, Any]) -> bool:
    """Evaluate an expression that must give a boolean; anything else is an ExpressionError."""
    value = evaluate(source, variables)
    if not isinstance(value, bool):
        raise ExpressionError(source, f"gave {type(value).__name__} {value!r}, not true or false")
    return value
