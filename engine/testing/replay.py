"""Replay recorded profile events through a journey on the virtual clock (`journeyctl simulate`).

Events are grouped by profile (each profile's in time order, ties in the order read) and
every profile runs on its own, as the worker's per-profile state would. `summarize` counts
what a journey version did; `differences` lists the profiles for which two versions
disagree on entry, messages (activity, template, language, time) or exit reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.testing.runner import Simulator, Trace
from engine.testing.show import iso
from schemas.events import ProfileEvent

__all__ = ["Difference", "Summary", "differences", "group_events", "replay", "summarize"]


def group_events(events: Iterable[ProfileEvent]) -> dict[str, list[ProfileEvent]]:
    """Events by profile id, in order of first appearance; each profile's sorted by time."""
    grouped: dict[str, list[ProfileEvent]] = {}
    for event in events:
        grouped.setdefault(event.profile_id, []).append(event)
    for events_of in grouped.values():
        events_of.sort(key=lambda e: e.occurred_at)  # stable: ties keep their order
    return grouped


def replay(
    simulator: Simulator,
    grouped: Mapping[str, list[ProfileEvent]],
    profiles: Mapping[str, dict[str, Any]] | None = None,
) -> dict[str, Trace]:
    """Each profile's trace; `profiles` gives attributes known before its first event."""
    known = profiles or {}
    return {pid: simulator.run(pid, known.get(pid, {}), events) for pid, events in grouped.items()}


@dataclass(slots=True)
class Summary:
    """What one journey (version) did over a replay."""

    profiles: int = 0
    entries: int = 0
    messages: Counter[str] = field(default_factory=Counter)  # by activity
    skipped: Counter[str] = field(default_factory=Counter)  # by reason
    exits: Counter[str] = field(default_factory=Counter)  # by reason

    def to_json(self) -> dict[str, Any]:
        return {
            "profiles": self.profiles,
            "entries": self.entries,
            "messages": dict(sorted(self.messages.items())),
            "skipped": dict(sorted(self.skipped.items())),
            "exits": dict(sorted(self.exits.items())),
        }


def summarize(traces: Mapping[str, Trace], journey_id: str) -> Summary:
    summary = Summary(profiles=len(traces))
    for trace in traces.values():
        summary.entries += trace.entries(journey_id)
        summary.messages.update(m.activity_id for m in trace.messages if m.journey_id == journey_id)
        summary.skipped.update(s.reason for s in trace.skips if s.journey_id == journey_id)
        summary.exits.update(trace.exits(journey_id))
    return summary


@dataclass(frozen=True, slots=True)
class Difference:
    profile_id: str
    old: list[str]
    new: list[str]


def outcome(trace: Trace, journey_id: str) -> list[str]:
    """A profile's result in one journey, as comparable lines: messages, then exits."""
    lines = [
        f"message {m.activity_id} {m.template}/{m.language} at {iso(m.at)}"
        for m in trace.messages
        if m.journey_id == journey_id
    ]
    lines += [
        f"skipped {s.activity_id} {s.reason}" for s in trace.skips if s.journey_id == journey_id
    ]
    exits = trace.exits(journey_id)
    lines.append(f"exit {', '.join(exits)}" if exits else "not entered")
    return lines


def differences(
    old: Mapping[str, Trace], new: Mapping[str, Trace], old_id: str, new_id: str
) -> list[Difference]:
    """Profiles whose outcome differs between two replays of the same events."""
    out = []
    for pid, trace in new.items():
        before = outcome(old[pid], old_id) if pid in old else ["not replayed"]
        after = outcome(trace, new_id)
        if before != after:
            out.append(Difference(pid, before, after))
    return out
