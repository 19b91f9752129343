"""Campaign runs as data: the records on `campaign-runs`, what a trigger plans, when one is
refused, a campaign's next deployment, and RunRegistry, what those records say. Pure: no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson
import structlog
from pydantic import ValidationError

from engine.core.catalog import CompiledJourney
from schemas.campaign import (
    AudienceTick,
    CampaignDefinition,
    CampaignRun,
    RunProgress,
    TriggerRequest,
)
from schemas.deployment import JourneyDeployment

log = structlog.get_logger(__name__)


def encode(record: CampaignRun | RunProgress | AudienceTick) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))


def tick_value(profile_id: str, tick_json: bytes) -> bytes:
    """The journey-timers record of one profile's share of a run (tick_json: the encoded tick)."""
    return b'{"profile_id":' + orjson.dumps(profile_id) + b',"audience":' + tick_json + b"}"


def decode_run_record(value: bytes | None) -> CampaignRun | RunProgress | None:
    """A campaign-runs record (a run, or a partition's progress); None for a tombstone."""
    if not value:
        return None
    data = orjson.loads(value)
    if isinstance(data, dict) and "partition" in data:
        return RunProgress.model_validate(data)
    return CampaignRun.model_validate(data)


def new_run_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def plan_trigger(
    campaign_id: str,
    version: int,
    request: TriggerRequest,
    *,
    now: datetime,
    source: Literal["api", "cli"],
    requested_by: str | None = None,
) -> tuple[CampaignRun, list[tuple[str, bytes]]]:
    """The run record to publish and, for an explicit profile list, each profile's tick."""
    run_id = request.run_id or new_run_id(now)
    profile_ids = list(dict.fromkeys(request.profile_ids or ()))
    run = CampaignRun(
        campaign_id=campaign_id,
        run_id=run_id,
        target="profiles" if profile_ids else "audience",
        audience=request.audience,
        profiles=len(profile_ids),
        context=request.context,
        source=source,
        requested_at=now,
        requested_by=requested_by,
    )
    tick_json = encode(run_tick(run, version))
    return run, [(pid, tick_value(pid, tick_json)) for pid in profile_ids]


def run_tick(run: CampaignRun, version: int | None) -> AudienceTick:
    return AudienceTick(
        journey_id=run.campaign_id,
        version=version,
        run_id=run.run_id,
        condition=run.audience,
        context=run.context,
        requested_at=run.requested_at,
    )


def trigger_refusal(
    campaign_id: str, deployed: CompiledJourney | JourneyDeployment | None, run: CampaignRun | None
) -> tuple[int, str] | None:
    """Why a trigger is refused, as (HTTP status, message), or None to go ahead."""
    is_campaign = deployed is not None and (
        deployed.is_campaign
        if isinstance(deployed, CompiledJourney)
        else deployed.kind == "campaign"
    )
    if deployed is None or not is_campaign:
        return 404, f"no campaign {campaign_id!r} is deployed (see `journeyctl campaign list`)"
    if deployed.status == "archived":
        return 409, f"campaign {campaign_id!r} is cancelled; deploy it again to bring it back"
    if deployed.status == "paused":
        return 409, f"campaign {campaign_id!r} is paused; `journeyctl resume {campaign_id}` first"
    if run is not None and run.status == "cancelled":
        return 409, f"run {run.run_id!r} of campaign {campaign_id!r} is cancelled"
    return None


def next_campaign_deployment(
    campaign: CampaignDefinition,
    existing: JourneyDeployment | None,
    *,
    source: str | None = None,
    deployed_by: str | None = None,
    now: datetime | None = None,
) -> JourneyDeployment | None:
    """The record to publish for a campaign, or None when it is unchanged and active.

    A cancelled (archived) campaign deployed again unchanged is active again, same version.
    """
    if existing is not None and existing.kind != "campaign":
        raise ValueError(
            f"{campaign.id!r} is a journey; a campaign needs an id of its own (ids are shared)"
        )
    same = existing is not None and existing.campaign == campaign
    if existing is not None and same and existing.status == "active":
        return None
    version = 1 if existing is None else existing.version + (0 if same else 1)
    return JourneyDeployment(
        journey_id=campaign.id,
        version=version,
        status="active",
        kind="campaign",
        definition=campaign.to_journey(),
        campaign=campaign,
        deployed_at=now or datetime.now(UTC),
        deployed_by=deployed_by,
        source=source,
    )


@dataclass(slots=True)
class RunRegistry:
    """Runs and per-partition progress from `campaign-runs`; tells the catalog of cancels."""

    on_cancel: Callable[[str, str], None] | None = None
    runs: dict[tuple[str, str], CampaignRun] = field(default_factory=dict)
    progress: dict[tuple[str, str], dict[int, RunProgress]] = field(default_factory=dict)

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            record = decode_run_record(value)
        except (ValidationError, ValueError) as exc:
            log.error("unreadable campaign-runs record", key=key, error=str(exc)[:300])
            return
        if record is not None:
            self.apply(record)

    def apply(self, record: CampaignRun | RunProgress) -> None:
        if isinstance(record, RunProgress):
            runs = self.progress.setdefault((record.journey_id, record.run_id), {})
            runs[record.partition] = record
            return
        key = (record.campaign_id, record.run_id)
        before = self.runs.get(key)
        if before is not None and before.status == "cancelled":
            return  # a cancelled run stays cancelled, whatever is written after
        self.runs[key] = record
        if record.status == "cancelled" and self.on_cancel is not None:
            self.on_cancel(record.campaign_id, record.run_id)

    def get(self, journey_id: str, run_id: str) -> CampaignRun | None:
        return self.runs.get((journey_id, run_id))

    def done(self, journey_id: str, run_id: str, partition: int) -> bool:
        return partition in self.progress.get((journey_id, run_id), {})

    def audience_runs(self) -> Iterator[CampaignRun]:
        """Triggered runs that are fanned out over the audience, not cancelled."""
        for run in self.runs.values():
            if run.status == "running" and run.target == "audience":
                yield run

    def run_ids(self, journey_id: str) -> list[str]:
        """Every run of a journey or campaign known here (triggered, or with progress)."""
        ids = {rid for jid, rid in self.runs if jid == journey_id}
        ids |= {rid for jid, rid in self.progress if jid == journey_id}
        return sorted(ids)
