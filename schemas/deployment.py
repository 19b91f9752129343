"""Records on the compacted `journey-definitions` topic.

Campaigns share the topic (and the id space): their records say `kind: campaign`.
Key `<journey id>` holds the journey's current record (newest version and its status);
key `<journey id>@<version>` keeps every deployed version, because live instances
finish on the version they entered with even after a newer one is deployed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.campaign import CampaignDefinition
from schemas.common import StrictModel
from schemas.journey import JourneyDefinition

JourneyStatus = Literal["active", "paused", "archived"]


class JourneyDeployment(StrictModel):
    """A journey version, or a campaign version (`kind: campaign`).

    A campaign travels as the one-step journey it compiles to (`definition`, which the engine
    runs) beside the campaign as written (`campaign`). Archiving a campaign cancels it.
    """

    journey_id: str
    version: int = Field(ge=1)
    status: JourneyStatus = "active"
    kind: Literal["journey", "campaign"] = "journey"
    definition: JourneyDefinition
    campaign: CampaignDefinition | None = None
    deployed_at: AwareDatetime
    deployed_by: str | None = None
    source: str | None = Field(default=None, description="the file it was deployed from")


def version_key(journey_id: str, version: int) -> str:
    return f"{journey_id}@{version}"
