"""record_json, the per-event records' fast JSON, must write what the models' own
serializer writes: the pydantic models stay the contract and the JSON Schema source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from pydantic import BaseModel

from schemas import messages
from schemas.common import json_bytes, record_json
from schemas.messages import DeliveryError, DeliveryEvent, DeliveryStatus, SendRequest
from schemas.steps import ExitReason, JourneyStepEvent
from tests.unit import ANA, Profile

RECORD_MODELS: tuple[type[BaseModel], ...] = (
    SendRequest,
    DeliveryEvent,
    JourneyStepEvent,
    messages.RenderedParameters,
    messages.RenderedMedia,
    DeliveryError,
)

# Sends with a media header, a skip by the frequency cap, a branch, a wait, an exit.
JOURNEY = """
id: promo
name: Promo
entry: {event: go}
reentry: {mode: always}
exit_on: [{event: stop}]
frequency_cap: {channel: whatsapp, max: 1, per: 1d}
start: pick
activities:
  pick:
    type: condition
    branches: [{when: 'profile.language == "es"', next: send}]
    else: send
  send:
    type: whatsapp
    template: promo
    language: es
    media: {type: image, link: '"https://cdn.example.com/" + profile.first_name + ".png"'}
    parameters: {body: ['profile.first_name', 'string(event.data.total)']}
    next: rest
  rest: {type: wait, duration: 1h, next: done}
  done: {type: end}
"""


def _interpreter_records() -> list[BaseModel]:
    p = Profile(JOURNEY)
    records: list[BaseModel] = []
    for fx in (
        p.event("go", "0s", attributes=ANA, data={"total": 42.5}),
        p.tick("1h"),
        p.event("go", "2h", data={"total": 7}),  # capped: a skip delivery event
        p.event("stop", "3h"),  # an exit
    ):
        records += [*fx.sends, *fx.deliveries, *fx.steps]
    return records


def _varied() -> list[BaseModel]:
    """The interpreter's records with other times (no microseconds, other offsets), every
    exit reason, and a failure with a code."""
    odd_zone = timezone(timedelta(hours=5, minutes=30))
    times = [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds
        datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=odd_zone),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0))),
    ]
    out: list[BaseModel] = []
    for record in _interpreter_records():
        stamps = [name for name, value in record.__dict__.items() if isinstance(value, datetime)]
        out += [record.model_copy(update=dict.fromkeys(stamps, when)) for when in times]
        if isinstance(record, JourneyStepEvent) and record.kind == "exited":
            out += [record.model_copy(update={"reason": reason}) for reason in ExitReason]
        if isinstance(record, DeliveryEvent) and record.error is not None:
            error = DeliveryError(code=131047, title="t\n", retriable=True, reason=None)
            update = {"status": DeliveryStatus.FAILED, "error": error, "wamid": "wamid.é"}
            out.append(record.model_copy(update=update))
    return out


def test_the_record_models_have_nothing_orjson_would_write_differently():
    """No aliases, custom serializers, computed or excluded fields: the fields as they are."""
    for model in RECORD_MODELS:
        decorators = model.__pydantic_decorators__
        assert not decorators.field_serializers, model
        assert not decorators.model_serializers, model
        assert not model.model_computed_fields, model
        for name, info in model.model_fields.items():
            assert info.alias in (None, name) and info.serialization_alias in (None, name), name
            assert not info.exclude, name
            assert not [m for m in info.metadata if "Serializer" in type(m).__name__], name


@pytest.mark.parametrize("source", ["interpreter", "varied"])
def test_record_json_is_byte_for_byte_the_models_json(source: str):
    records = _interpreter_records() if source == "interpreter" else _varied()
    kinds = {type(r) for r in records}
    assert {SendRequest, DeliveryEvent, JourneyStepEvent} <= kinds
    for record in records:
        fast = record_json(record)
        assert fast == json_bytes(record), record
        assert orjson.loads(fast) == record.model_dump(mode="json")
        assert type(record).model_validate_json(fast) == type(record).model_validate(
            record.model_dump()
        )


def test_a_value_orjson_cannot_write_goes_through_pydantic():
    step = next(r for r in _interpreter_records() if isinstance(r, JourneyStepEvent))
    huge = step.model_copy(update={"journey_version": 2**70})  # beyond orjson's 64 bits
    assert record_json(huge) == json_bytes(huge)
