"""Pydantic v2 models of everything that crosses a boundary, with JSON Schema export.

This package is the contract other teams build on: extend it, never rename.
"""

from schemas.campaign import (
    AudienceTick,
    CampaignDefinition,
    CampaignRun,
    RunProgress,
    TriggerRequest,
)
from schemas.common import (
    Duration,
    E164Phone,
    Expression,
    StrictModel,
    compile_expression,
    format_duration,
    is_e164,
    normalize_e164,
    parse_duration,
)
from schemas.deadletter import DeadLetter
from schemas.deployment import JourneyDeployment, JourneyStatus, version_key
from schemas.events import MAX_EVENT_BYTES, InboundMessage, ProfileAttributes, ProfileEvent
from schemas.journey import (
    MAX_ACTIVITIES,
    MAX_JOURNEY_TIMEOUT,
    Activity,
    AudienceEntry,
    ConditionActivity,
    EndActivity,
    EntryRule,
    HttpActivity,
    JourneyDefinition,
    JumpActivity,
    QualificationEntry,
    SplitActivity,
    WaitActivity,
    WaitForEventActivity,
    WhatsAppActivity,
    activity_targets,
    check_graph,
)
from schemas.messages import (
    DeliveryError,
    DeliveryEvent,
    DeliveryStatus,
    RenderedMedia,
    RenderedParameters,
    SendRequest,
    SkipReason,
)
from schemas.schedule import Schedule
from schemas.state import EventContext, JourneyHistory, JourneyInstance, ProfileState
from schemas.steps import ExitReason, JourneyStepEvent

__all__ = [
    "MAX_ACTIVITIES",
    "MAX_EVENT_BYTES",
    "MAX_JOURNEY_TIMEOUT",
    "Activity",
    "AudienceEntry",
    "AudienceTick",
    "CampaignDefinition",
    "CampaignRun",
    "ConditionActivity",
    "DeadLetter",
    "DeliveryError",
    "DeliveryEvent",
    "DeliveryStatus",
    "Duration",
    "E164Phone",
    "EndActivity",
    "EntryRule",
    "EventContext",
    "ExitReason",
    "Expression",
    "HttpActivity",
    "InboundMessage",
    "JourneyDefinition",
    "JourneyDeployment",
    "JourneyHistory",
    "JourneyInstance",
    "JourneyStatus",
    "JourneyStepEvent",
    "JumpActivity",
    "ProfileAttributes",
    "ProfileEvent",
    "ProfileState",
    "QualificationEntry",
    "RenderedMedia",
    "RenderedParameters",
    "RunProgress",
    "Schedule",
    "SendRequest",
    "SkipReason",
    "SplitActivity",
    "StrictModel",
    "TriggerRequest",
    "WaitActivity",
    "WaitForEventActivity",
    "WhatsAppActivity",
    "activity_targets",
    "check_graph",
    "compile_expression",
    "format_duration",
    "is_e164",
    "normalize_e164",
    "parse_duration",
    "version_key",
]
