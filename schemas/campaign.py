"""Campaigns: one WhatsApp message to an audience, sent on a schedule or when triggered.

A campaign runs as a one-step journey (audience -> whatsapp -> end) so consent, frequency
caps, quiet hours, step and delivery events work exactly as for journeys. Its runs travel
on the compacted `campaign-runs` topic; per-profile work travels on `journey-timers`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import orjson
from pydantic import AwareDatetime, Field, JsonValue, field_validator

from schemas.common import Expression, JourneyId, StrictModel
from schemas.journey import (
    AudienceEntry,
    EndActivity,
    EntryRule,
    FrequencyCap,
    JourneyDefinition,
    MediaHeader,
    QuietHours,
    Reentry,
    WhatsAppActivity,
    WhatsAppParameters,
)
from schemas.schedule import Schedule

# The compiled journey's activities: the message ids of a campaign name the first one.
SEND_ACTIVITY = "send"
END_ACTIVITY = "done"
# Long enough for any quiet-hours delay; a campaign message is never older than this.
CAMPAIGN_TIMEOUT = timedelta(days=2)
MAX_CONTEXT_BYTES = 16 * 1024
MAX_TRIGGER_PROFILES = 10_000

RunId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        min_length=1,
        max_length=100,
        description="letters, digits, '.', '_' and '-' (no ':', which separates message id parts)",
    ),
]
ProfileId = Annotated[str, Field(min_length=1, max_length=200)]
RunContext = dict[str, JsonValue]


def _small_context(value: RunContext) -> RunContext:
    size = len(orjson.dumps(value))
    if size > MAX_CONTEXT_BYTES:
        raise ValueError(f"context is {size} bytes; the limit is {MAX_CONTEXT_BYTES}")
    return value


class CampaignAudience(StrictModel):
    condition: Expression


class CampaignMessage(StrictModel):
    """The WhatsApp template message, with parameters as for the whatsapp activity."""

    template: str = Field(pattern=r"^[a-z0-9_]+$", max_length=512)
    language: str = Field(pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    parameters: WhatsAppParameters = Field(default_factory=WhatsAppParameters)
    media: MediaHeader | None = None


class CampaignDefinition(StrictModel):
    """One campaign, as written in YAML (`kind: campaign`)."""

    kind: Literal["campaign"]
    id: JourneyId
    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    audience: CampaignAudience
    schedule: Schedule | None = Field(
        default=None,
        description="absent: sent only when triggered (HTTP API or `journeyctl campaign trigger`)",
    )
    message: CampaignMessage
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None

    def to_journey(self) -> JourneyDefinition:
        """The one-step journey the engine runs: audience -> whatsapp -> end, once per run."""
        message = self.message
        return JourneyDefinition(
            id=self.id,
            name=self.name,
            description=self.description,
            entry=EntryRule(audience=AudienceEntry(condition=self.audience.condition)),
            reentry=Reentry(mode="always"),
            timeout=CAMPAIGN_TIMEOUT,
            frequency_cap=self.frequency_cap,
            quiet_hours=self.quiet_hours,
            start=SEND_ACTIVITY,
            activities={
                SEND_ACTIVITY: WhatsAppActivity(
                    type="whatsapp",
                    template=message.template,
                    language=message.language,
                    parameters=message.parameters,
                    media=message.media,
                    next=END_ACTIVITY,
                ),
                END_ACTIVITY: EndActivity(type="end"),
            },
        )


class TriggerRequest(StrictModel):
    """The body of `POST /campaigns/{id}/trigger` (every field optional)."""

    run_id: RunId | None = None
    profile_ids: list[ProfileId] | None = Field(
        default=None, min_length=1, max_length=MAX_TRIGGER_PROFILES
    )
    audience: Expression | None = Field(
        default=None, description="narrows the campaign's audience for this run (both must hold)"
    )
    context: RunContext = Field(default_factory=dict)

    @field_validator("context")
    @classmethod
    def _context_size(cls, value: RunContext) -> RunContext:
        return _small_context(value)


class CampaignRun(StrictModel):
    """One run of a campaign, on `campaign-runs` under the key `<campaign id>:<run id>`.

    `target: audience` runs are fanned out by every worker over its own partitions;
    `target: profiles` runs were sent to each named profile directly (`profiles` says how many).
    """

    campaign_id: JourneyId
    run_id: RunId
    status: Literal["running", "cancelled"] = "running"
    target: Literal["audience", "profiles"] = "audience"
    audience: Expression | None = None
    profiles: int = Field(default=0, ge=0)
    context: RunContext = Field(default_factory=dict)
    source: Literal["api", "cli"] = "api"
    requested_at: AwareDatetime
    requested_by: str | None = None

    @field_validator("context")
    @classmethod
    def _context_size(cls, value: RunContext) -> RunContext:
        return _small_context(value)

    @property
    def key(self) -> str:
        return run_key(self.campaign_id, self.run_id)


class RunProgress(StrictModel):
    """One partition's share of an audience run is done, under `<id>:<run id>:<partition>`.

    Written by the worker that fanned it out, so no other worker (after a restart or a
    rebalance) reads that partition's audience for that run again.
    """

    journey_id: JourneyId
    run_id: RunId
    partition: int = Field(ge=0)
    scanned: int = Field(ge=0)
    queued: int = Field(ge=0)
    finished_at: AwareDatetime


class AudienceTick(StrictModel):
    """Per-profile work on `journey-timers`: admit this profile into this run, if it qualifies.

    The record is `{"profile_id": ..., "audience": AudienceTick}`, keyed by profile id, so the
    engine applies it in order with the profile's other records.
    """

    journey_id: JourneyId
    version: int | None = Field(default=None, description="the version the producer knew")
    run_id: RunId
    condition: Expression | None = Field(
        default=None, description="the trigger's own audience, on top of the journey's"
    )
    context: RunContext = Field(default_factory=dict)
    requested_at: AwareDatetime


def run_key(journey_id: str, run_id: str) -> str:
    return f"{journey_id}:{run_id}"


def progress_key(journey_id: str, run_id: str, partition: int) -> str:
    return f"{journey_id}:{run_id}:{partition}"
