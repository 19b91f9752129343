"""The event check the engine and the ingestion API share: each reason, and a good event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from engine.core.admission import InvalidEvent, admit_profile_event, parse_profile_event

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
WINDOW = {"max_age": timedelta(days=91), "max_future": timedelta(hours=1)}


def raw(**fields: object) -> bytes:
    event = {
        "event_id": "e-1",
        "type": "user.signed_up",
        "profile_id": "p-1",
        "occurred_at": "2026-12-08T11:59:00Z",
        **fields,
    }
    return orjson.dumps(event)


def reason(value: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as caught:
        admit_profile_event(value, NOW, **WINDOW)
    return caught.value.reason


def test_a_good_event_is_admitted() -> None:
    assert admit_profile_event(raw(), NOW, **WINDOW).profile_id == "p-1"


def test_each_reason() -> None:
    assert reason(b"") == "empty record value"
    assert reason(b"{nope") == "malformed JSON"
    assert reason(raw(data={"x": "y" * 70_000})).startswith("event too large: ")
    assert reason(raw(profile_id="")) == (
        "invalid profile event: profile_id: String should have at least 1 character"
    )
    assert "more than 91d before" in reason(raw(occurred_at="2020-01-01T00:00:00Z"))
    assert "check the sender's clock" in reason(raw(occurred_at="2026-12-09T00:00:00Z"))


def test_parsing_alone_does_not_look_at_the_time() -> None:
    assert parse_profile_event(raw(occurred_at="2020-01-01T00:00:00Z")).event_id == "e-1"
