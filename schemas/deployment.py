"""Records on the compacted `journey-definitions` topic.

Key `<journey id>` holds the journey's current record (newest version and its status);
key `<journey id>@<version>` keeps every deployed version, because live instances
finish on the version they entered with even after a newer one is deployed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import StrictModel
from schemas.journey import JourneyDefinition

JourneyStatus = Literal["active", "paused", "archived"]


class JourneyDeployment(StrictModel):
    journey_id: str
    version: int = Field(ge=1)
    status: JourneyStatus = "active"
    definition: JourneyDefinition
    deployed_at: AwareDatetime
    deployed_by: str | None = None
    source: str | None = Field(default=None, description="the file it was deployed from")


def version_key(journey_id: str, version: int) -> str:
    return f"{journey_id}@{version}"
