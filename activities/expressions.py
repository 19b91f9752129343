"""Safe CEL evaluation for conditions and template parameters, one error type for every failure.

Callers build one `Variables` per activity run; its CEL context is converted once and reused.
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
    """The variables of one activity run; the CEL-side conversion is done once, on first use."""

    __slots__ = ("_context", "programs", "values")

    def __init__(self, values: dict[str, Any], programs: Mapping[str, Any] | None = None) -> None:
        self.values = values
        # Programs compiled when the journey was deployed; others come from the shared cache.
        self.programs: Mapping[str, Any] = programs or {}
        self._context: Any = None

    def context(self) -> Any:
        # Converting Python values into CEL values is most of an evaluation's cost.
        if self._context is None:
            self._context = cel.Context(self.values)
        return self._context


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
        return program.execute(
            variables.context() if isinstance(variables, Variables) else dict(variables)
        )
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
