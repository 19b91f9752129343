"""The journey-definition registry: every deployed version, each journey's status, an entry index.

Fed from the compacted `journey-definitions` topic; the interpreter reads it, never writes it.

Choices where the contract is silent:
- Status belongs to the journey, not to a version: whichever record was deployed last
  (`deployed_at`, ties to the record applied last) sets it, whatever its version. So a
  `pause` record written for version N pauses the journey even after N+1 exists, and an old
  `<id>@<version>` record replayed out of order (keys live on different partitions) never
  resurrects an old status.
- A journey's current version is the highest version seen; its definition serves new entries.
- Every expression is compiled when a version is applied, so a broken record is refused here
  (DeploymentRejected) instead of failing per profile.
- Campaigns are journeys of `kind: campaign` (archived = cancelled). Cancelled runs of a
  campaign are known here too, because the interpreter must skip their queued work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from schemas.campaign import CampaignDefinition
from schemas.common import compile_expression
from schemas.deployment import JourneyDeployment, JourneyStatus
from schemas.journey import (
    ConditionActivity,
    HttpActivity,
    JourneyDefinition,
    WaitActivity,
    WaitForEventActivity,
    WhatsAppActivity,
)


class DeploymentRejected(ValueError):
    """A deployment record cannot be used; the message says which field and why."""


@dataclass(frozen=True, slots=True, eq=False)
class CompiledJourney:
    """One deployed version, ready to run: definition, status and its expressions compiled."""

    journey_id: str
    version: int
    status: JourneyStatus
    definition: JourneyDefinition
    deployed_at: datetime
    programs: Mapping[str, Any] = field(default_factory=dict)
    exit_types: frozenset[str] = frozenset()
    campaign: CampaignDefinition | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def is_campaign(self) -> bool:
        return self.campaign is not None


def compile_journey(deployment: JourneyDeployment) -> CompiledJourney:
    definition = deployment.definition
    if definition.id != deployment.journey_id:
        raise DeploymentRejected(
            f"deployment of {deployment.journey_id!r} carries the definition of {definition.id!r}"
        )
    programs: dict[str, Any] = {}
    for source in _expressions(definition):
        try:
            programs[source] = compile_expression(source)
        except ValueError as exc:
            raise DeploymentRejected(
                f"{deployment.journey_id}@{deployment.version}: {exc}"
            ) from None
    return CompiledJourney(
        journey_id=deployment.journey_id,
        version=deployment.version,
        status=deployment.status,
        definition=definition,
        deployed_at=deployment.deployed_at,
        programs=programs,
        exit_types=frozenset(rule.event for rule in definition.exit_on),
        campaign=deployment.campaign if deployment.kind == "campaign" else None,
    )


@dataclass(slots=True)
class _Journey:
    versions: dict[int, CompiledJourney]
    status: JourneyStatus
    status_at: datetime

    @property
    def current(self) -> CompiledJourney:
        return self.versions[max(self.versions)]


class JourneyCatalog:
    """All known journeys and versions; `entries_for` is a dictionary lookup per event."""

    def __init__(self) -> None:
        self._journeys: dict[str, _Journey] = {}
        self._entries: dict[str, list[CompiledJourney]] = {}
        self._paused_entries: dict[str, list[CompiledJourney]] = {}
        self._audiences: list[CompiledJourney] = []
        self._qualifications: list[CompiledJourney] = []
        self._cancelled_runs: set[tuple[str, str]] = set()
        self._heard: frozenset[str] = frozenset()
        self.longest_cap_window = timedelta(0)
        self.largest_cap = 0

    def apply(self, deployment: JourneyDeployment) -> None:
        """Add a version, or change a journey's status (a record for a version already known)."""
        compiled = compile_journey(deployment)
        journey = self._journeys.get(deployment.journey_id)
        if journey is None:
            journey = _Journey({}, compiled.status, compiled.deployed_at)
            self._journeys[deployment.journey_id] = journey
        elif compiled.deployed_at >= journey.status_at:
            journey.status, journey.status_at = compiled.status, compiled.deployed_at
        journey.versions[compiled.version] = compiled
        if any(v.status != journey.status for v in journey.versions.values()):
            journey.versions = {
                n: replace(v, status=journey.status) for n, v in journey.versions.items()
            }
        self._reindex()

    def current(self, journey_id: str) -> CompiledJourney | None:
        journey = self._journeys.get(journey_id)
        return journey.current if journey is not None else None

    def get(self, journey_id: str, version: int) -> CompiledJourney | None:
        journey = self._journeys.get(journey_id)
        return journey.versions.get(version) if journey is not None else None

    def status(self, journey_id: str) -> JourneyStatus | None:
        journey = self._journeys.get(journey_id)
        return journey.status if journey is not None else None

    def versions(self, journey_id: str) -> list[int]:
        journey = self._journeys.get(journey_id)
        return sorted(journey.versions) if journey is not None else []

    def entries_for(self, event_type: str) -> list[CompiledJourney]:
        """Current versions of the active journeys this event type can admit a profile into."""
        return self._entries.get(event_type, [])

    def paused_entries_for(self, event_type: str) -> list[CompiledJourney]:
        """Current versions of the paused journeys entered by this event type (a refusal to
        record, not an entry)."""
        return self._paused_entries.get(event_type, [])

    def listens_to(self, event_type: str) -> bool:
        """Whether any journey could act on an event of this type: an active entry on it,
        or, in any version an instance may still run, a wait for it or an exit on it."""
        return event_type in self._heard

    def audiences(self) -> list[CompiledJourney]:
        """Current versions of the active journeys and campaigns that enter by audience."""
        return self._audiences

    def qualifications(self) -> list[CompiledJourney]:
        """Current versions of the active journeys that enter by audience qualification."""
        return self._qualifications

    def cancel_run(self, journey_id: str, run_id: str) -> None:
        self._cancelled_runs.add((journey_id, run_id))

    def run_cancelled(self, journey_id: str, run_id: str) -> bool:
        return (journey_id, run_id) in self._cancelled_runs

    def __iter__(self) -> Iterator[CompiledJourney]:
        """Each journey's current version, by journey id."""
        return (self._journeys[jid].current for jid in sorted(self._journeys))

    def __len__(self) -> int:
        return len(self._journeys)

    def __contains__(self, journey_id: object) -> bool:
        return journey_id in self._journeys

    def _reindex(self) -> None:
        # Deployments are rare and catalogs small; rebuilding keeps the index obviously right.
        entries: dict[str, list[CompiledJourney]] = {}
        paused: dict[str, list[CompiledJourney]] = {}
        audiences: list[CompiledJourney] = []
        qualifications: list[CompiledJourney] = []
        window, largest = timedelta(0), 0
        heard: set[str] = set()
        for jid in sorted(self._journeys):
            journey = self._journeys[jid]
            current = journey.current
            rule = current.definition.entry
            if current.active and rule.event is not None:
                entries.setdefault(rule.event, []).append(current)
            elif current.status == "paused" and rule.event is not None:
                paused.setdefault(rule.event, []).append(current)
            elif current.active and rule.audience is not None:
                audiences.append(current)
            elif current.active and rule.qualification is not None:
                qualifications.append(current)
            if current.active and rule.event is not None:
                heard.add(rule.event)
            for version in journey.versions.values():
                heard |= version.exit_types
                heard.update(
                    activity.event
                    for activity in version.definition.activities.values()
                    if isinstance(activity, WaitForEventActivity)
                )
                cap = version.definition.frequency_cap
                if cap is not None:
                    window, largest = max(window, cap.per), max(largest, cap.max)
        self._entries, self._paused_entries = entries, paused
        self._heard = frozenset(heard)
        self._audiences, self._qualifications = audiences, qualifications
        self.longest_cap_window, self.largest_cap = window, largest


def _expressions(definition: JourneyDefinition) -> Iterator[str]:
    if definition.entry.admission_condition:
        yield definition.entry.admission_condition
    for rule in definition.exit_on:
        if rule.condition:
            yield rule.condition
    for activity in definition.activities.values():
        match activity:
            case ConditionActivity():
                yield from (branch.when for branch in activity.branches)
            case WaitActivity() if activity.until:
                yield activity.until
            case WaitForEventActivity() if activity.condition:
                yield activity.condition
            case WhatsAppActivity():
                params = activity.parameters
                yield from (*params.header, *params.body, *params.buttons)
                if activity.media is not None:
                    yield activity.media.link
            case HttpActivity():
                yield from activity.body.values()
            case _:
                pass
