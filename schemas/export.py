"""Write the JSON Schema of every boundary model into schemas/json/ (checked in).

Run `python -m schemas.export`; a test fails when the checked-in files are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from pydantic import BaseModel

from schemas.campaign import (
    AudienceTick,
    CampaignDefinition,
    CampaignRun,
    RunProgress,
    TriggerRequest,
)
from schemas.deadletter import DeadLetter
from schemas.deployment import JourneyDeployment
from schemas.events import InboundMessage, ProfileEvent
from schemas.journey import JourneyDefinition
from schemas.journey_test import JourneyTestFile
from schemas.messages import DeliveryEvent, SendRequest
from schemas.state import JourneyInstance, ProfileState
from schemas.steps import JourneyStepEvent

EXPORTED: dict[str, type[BaseModel]] = {
    "profile-event": ProfileEvent,
    "journey-definition": JourneyDefinition,
    "journey-deployment": JourneyDeployment,
    "journey-instance": JourneyInstance,
    "profile-state": ProfileState,
    "send-request": SendRequest,
    "delivery-event": DeliveryEvent,
    "journey-step-event": JourneyStepEvent,
    "inbound-message": InboundMessage,
    "dead-letter": DeadLetter,
    "campaign-definition": CampaignDefinition,
    "campaign-run": CampaignRun,
    "campaign-run-progress": RunProgress,
    "campaign-trigger": TriggerRequest,
    "audience-tick": AudienceTick,
    "journey-test": JourneyTestFile,
}

JSON_DIR = Path(__file__).parent / "json"


def render_schemas() -> dict[str, bytes]:
    """Each exported model's JSON Schema as the bytes of its checked-in file."""
    out: dict[str, bytes] = {}
    for name, model in EXPORTED.items():
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://journey-engine.dev/schemas/{name}.json"
        out[f"{name}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for filename, content in render_schemas().items():
        (JSON_DIR / filename).write_bytes(content)
    print(f"wrote {len(EXPORTED)} schemas to {JSON_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
