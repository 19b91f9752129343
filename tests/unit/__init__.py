"""Unit tests of the pure core, and the small harness they share to read like journeys.

`Profile` lives through journeys: deploy YAML, send events at times, let the clock run.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.core.catalog import JourneyCatalog
from engine.core.interpreter import (
    Effects,
    ProcessResult,
    apply_event,
    apply_timers,
    new_profile_state,
)
from engine.core.loader import parse_journey
from schemas.common import parse_duration
from schemas.deployment import JourneyDeployment, JourneyStatus
from schemas.events import ProfileEvent

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, 11:00 in Madrid

ANA = {
    "phone": "+34600111222",
    "first_name": "Ana",
    "language": "es",
    "timezone": "Europe/Madrid",
    "whatsapp_consent": "opted_in",
}


def at(offset: str | timedelta = "0s") -> datetime:
    """T0 plus a duration: at("90m"), at("1d2h"), at("-3d")."""
    if isinstance(offset, timedelta):
        return T0 + offset
    sign = -1 if offset.startswith("-") else 1
    parts = re.findall(r"\d+[smhd]", offset)
    if "".join(parts) != offset.lstrip("-"):
        raise ValueError(f"not an offset like 90m, 1d2h or -3d: {offset!r}")
    return T0 + sign * sum((parse_duration(part) for part in parts), timedelta(0))


def deployment(
    yaml_text: str,
    version: int = 1,
    status: JourneyStatus = "active",
    deployed_at: datetime = T0 - timedelta(days=1),
) -> JourneyDeployment:
    definition = parse_journey(yaml_text)
    return JourneyDeployment(
        journey_id=definition.id,
        version=version,
        status=status,
        definition=definition,
        deployed_at=deployed_at,
    )


def catalog_of(*yamls: str) -> JourneyCatalog:
    catalog = JourneyCatalog()
    for text in yamls:
        catalog.apply(deployment(text))
    return catalog


_ids = itertools.count(1)


def event(
    type_: str,
    when: str | datetime = "0s",
    *,
    event_id: str | None = None,
    profile_id: str = "p-42",
    data: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> ProfileEvent:
    """A profile event as an upstream system would publish it (validated like the real thing)."""
    return ProfileEvent.model_validate(
        {
            "event_id": event_id or f"evt-{next(_ids)}",
            "type": type_,
            "profile_id": profile_id,
            "occurred_at": when if isinstance(when, datetime) else at(when),
            "attributes": attributes,
            "data": data or {},
        }
    )


Step = tuple[str, ...]


def steps(effects: Effects) -> list[Step]:
    """Step events in short form: ("entered", start), (activity, outcome), ("exited", reason)."""
    out: list[Step] = []
    for step in effects.steps:
        if step.kind == "entered":
            out.append(("entered", step.activity_id or ""))
        elif step.kind == "activity":
            out.append((step.activity_id or "", step.outcome or ""))
        else:
            out.append(("exited", step.reason.value if step.reason else ""))
    return out


class Profile:
    """One profile living through the journeys of a catalog, one call at a time."""

    def __init__(
        self, *yamls: str, catalog: JourneyCatalog | None = None, profile_id: str = "p-42"
    ) -> None:
        self.catalog = catalog if catalog is not None else catalog_of(*yamls)
        self.state = new_profile_state(profile_id)
        self.profile_id = profile_id
        self.last: ProcessResult | None = None

    def event(
        self,
        type_: str,
        when: str | datetime = "0s",
        *,
        now: str | datetime | None = None,
        **kwargs: Any,
    ) -> Effects:
        """Publish an event that occurred at `when` and is processed at `now` (default: `when`)."""
        ev = event(type_, when, profile_id=self.profile_id, **kwargs)
        return self.apply(ev, now if now is not None else when)

    def apply(self, ev: ProfileEvent, now: str | datetime) -> Effects:
        self.last = apply_event(self.state, ev, self.catalog, _time(now))
        return self.last.effects

    def tick(self, now: str | datetime) -> Effects:
        """Let the clock reach `now` and fire what is due."""
        self.last = apply_timers(self.state, self.catalog, _time(now))
        return self.last.effects

    @property
    def journeys(self) -> dict[str, str]:
        """Live instances: journey id -> the activity it is at."""
        return {jid: inst.activity_id for jid, inst in self.state.instances.items()}


def _time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else at(value)
