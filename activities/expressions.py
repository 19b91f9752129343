"""Safe CEL evaluation for conditions and template parameters, one error type for every failure.

Callers build one `Variables` per activity run; each expression sees only the variables it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import cel

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

    Converting Python values into CEL values is most of an evaluation's cost (a small
    nested map costs more than running the expression), so each expression gets a context
    holding only the variables it names (`profile`, `event`, ...), built once per set of
    names and reused by the run's other expressions that name the same ones.
    """

    __slots__ = ("_contexts", "programs", "values")

    def __init__(self, values: dict[str, Any], programs: Mapping[str, Any] | None = None) -> None:
        self.values = values
        # Programs compiled when the journey was deployed; others come from the shared cache.
        self.programs: Mapping[str, Any] = programs or {}
        self._contexts: dict[frozenset[str] | None, Any] = {}

    def context(self, names: frozenset[str] | None = None) -> Any:
        """A CEL context of the variables in `names` (all of them when None)."""
        context = self._contexts.get(names)
        if context is None:
            values = self.values
            if names is not None:
                values = {name: values[name] for name in names if name in values}
            context = self._contexts[names] = cel.Context(values)
        return context


# The variables each expression source names, found by the binding's static analysis.
# None: unknown (a program without `variables()`), so the context holds every variable.
_REFERENCED: dict[str, frozenset[str] | None] = {}
_REFERENCED_MAX = 8192


def referenced_names(source: str, program: Any) -> frozenset[str] | None:
    """The top-level variables `program` reads (comprehension variables included), cached."""
    try:
        return _REFERENCED[source]
    except KeyError:
        pass
    try:
        names: frozenset[str] | None = frozenset(program.variables())
    except Exception:  # not the binding's Program (a test double): give it everything
        names = None
    if len(_REFERENCED) < _REFERENCED_MAX:
        _REFERENCED[source] = names
    return names


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


def evaluate(source: str, variables: Variables | Mapping[str, Any]) -> Any:
    """Evaluate a CEL expression; any failure is raised as ExpressionError(source, reason)."""
    program = variables.programs.get(source) if isinstance(variables, Variables) else None
    if program is None:
        try:
            program = compile_expression(source)
        except ValueError as exc:
            raise ExpressionError(source, str(exc)) from None
    try:
        if isinstance(variables, Variables):
            return program.execute(variables.context(referenced_names(source, program)))
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
