"""Boundary models: good inputs pass, each bad input fails with its exact message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    DeliveryEvent,
    DeliveryStatus,
    JourneyDefinition,
    ProfileEvent,
    SendRequest,
    format_duration,
    parse_duration,
)
from schemas.common import compile_expression, macro_depth
from schemas.export import JSON_DIR, render_schemas
from schemas.settings import Settings

GOOD_EVENT = {
    "event_id": "evt-0001",
    "type": "cart.abandoned",
    "profile_id": "p-42",
    "occurred_at": "2026-11-24T10:00:00Z",
    "attributes": {
        "phone": "+34600111222",
        "first_name": "Ana",
        "language": "es",
        "timezone": "Europe/Madrid",
        "whatsapp_consent": "opted_in",
    },
    "data": {"cart_total": 42.5, "items": 3},
}


def errors_of(
    exc: pytest.ExceptionInfo[ValidationError],
) -> list[tuple[tuple[str | int, ...], str]]:
    return [(tuple(e["loc"]), e["msg"]) for e in exc.value.errors()]


def test_design_example_event_is_valid() -> None:
    event = ProfileEvent.model_validate(GOOD_EVENT)
    assert event.attributes is not None
    assert event.attributes.phone == "+34600111222"
    assert event.data == {"cart_total": 42.5, "items": 3}


@pytest.mark.parametrize(
    ("patch", "loc", "message"),
    [
        ({"colour": "red"}, ("colour",), "Extra inputs are not permitted"),
        ({"profile_id": ""}, ("profile_id",), "String should have at least 1 character"),
        (
            {"occurred_at": "2026-11-24T10:00:00"},
            ("occurred_at",),
            "Input should have timezone info",
        ),
        (
            {"type": "has space"},
            ("type",),
            "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]*$'",
        ),
        (
            {"attributes": {"phone": "600111222"}},
            ("attributes", "phone"),
            "Value error, phone numbers must be in E.164 form: '+' then country code and number",
        ),
        (
            {"attributes": {"phone": "+3460011"}},
            ("attributes", "phone"),
            "Value error, not a valid phone number for its country code",
        ),
        (
            {"attributes": {"timezone": "CET+1"}},
            ("attributes", "timezone"),
            "Value error, unknown time zone 'CET+1': use an IANA name such as Europe/Madrid",
        ),
        (
            {"attributes": {"whatsapp_consent": "yes"}},
            ("attributes", "whatsapp_consent"),
            "Input should be 'opted_in', 'opted_out' or 'unknown'",
        ),
    ],
)
def test_bad_events_name_the_field(
    patch: dict[str, object], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        ProfileEvent.model_validate({**GOOD_EVENT, **patch})
    assert errors_of(exc) == [(loc, message)]


def test_missing_profile_id_is_reported() -> None:
    data = {k: v for k, v in GOOD_EVENT.items() if k != "profile_id"}
    with pytest.raises(ValidationError) as exc:
        ProfileEvent.model_validate(data)
    assert errors_of(exc) == [(("profile_id",), "Field required")]


def test_extra_profile_attributes_are_kept() -> None:
    event = ProfileEvent.model_validate({**GOOD_EVENT, "attributes": {"tier": "gold"}})
    assert event.attributes is not None
    assert event.attributes.model_dump(exclude_none=True) == {"tier": "gold"}


def test_phone_is_normalised_to_e164() -> None:
    event = ProfileEvent.model_validate({**GOOD_EVENT, "attributes": {"phone": "+34 600 111 222"}})
    assert event.attributes is not None and event.attributes.phone == "+34600111222"


@pytest.mark.parametrize(
    ("text", "delta", "back"),
    [
        ("30s", timedelta(seconds=30), "30s"),
        ("15m", timedelta(minutes=15), "15m"),
        ("1h", timedelta(hours=1), "1h"),
        ("7d", timedelta(days=7), "7d"),
        ("90m", timedelta(minutes=90), "90m"),
    ],
)
def test_durations_round_trip(text: str, delta: timedelta, back: str) -> None:
    assert parse_duration(text) == delta
    assert format_duration(delta) == back


@pytest.mark.parametrize("bad", ["1w", "h", "1.5h", "-1h", "", "10 minutes", True])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match="30s, 15m, 1h or 7d"):
        parse_duration(bad)


def test_delivery_event_contract_example() -> None:
    example = {
        "message_id": "cart-recovery:3:p-42:send-es:1",
        "wamid": "wamid.HBg...",
        "journey_id": "cart-recovery",
        "journey_version": 3,
        "activity_id": "send-es",
        "profile_id": "p-42",
        "channel": "whatsapp",
        "template": "cart_reminder",
        "language": "es",
        "status": "delivered",
        "error": None,
        "occurred_at": "2026-11-24T11:00:03Z",
    }
    event = DeliveryEvent.model_validate(example)
    assert event.status is DeliveryStatus.DELIVERED
    assert event.model_dump(mode="json")["occurred_at"] == "2026-11-24T11:00:03Z"


def test_delivery_status_rejects_unknown() -> None:
    with pytest.raises(ValidationError) as exc:
        DeliveryEvent.model_validate(
            {
                "message_id": "m",
                "journey_id": "j",
                "journey_version": 1,
                "activity_id": "a",
                "profile_id": "p",
                "status": "bounced",
                "occurred_at": "2026-11-24T11:00:03Z",
            }
        )
    assert errors_of(exc)[0][0] == ("status",)


def test_send_request_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError) as exc:
        SendRequest.model_validate(
            {
                "message_id": "m",
                "journey_id": "j",
                "journey_version": 1,
                "activity_id": "a",
                "profile_id": "p",
                "requested_at": "2026-11-24T11:00:03Z",
                "priority": 1,
            }
        )
    assert errors_of(exc) == [(("priority",), "Extra inputs are not permitted")]


def test_journey_definition_checks_graph_outside_the_loader() -> None:
    with pytest.raises(ValidationError, match="transition to missing activity 'nowhere'"):
        JourneyDefinition.model_validate(
            {
                "id": "j",
                "name": "J",
                "entry": {"event": "e"},
                "start": "a",
                "activities": {"a": {"type": "wait", "duration": "1h", "next": "nowhere"}},
            }
        )


def test_checked_in_json_schemas_are_current() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_bytes() for p in JSON_DIR.glob("*.json")}
    stale = sorted(name for name in rendered if on_disk.get(name) != rendered[name])
    assert not stale, f"schemas/json is stale for {stale}: run `make schemas`"
    assert set(on_disk) == set(rendered)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19999")
    monkeypatch.setenv("WHATSAPP_RATE_PER_SECOND", "250")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19999"
    assert settings.whatsapp_rate_per_second == 250


def test_secrets_can_come_from_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    secret = tmp_path / "token"  # type: ignore[operator]
    secret.write_text("s3cret\n")
    monkeypatch.delenv("WHATSAPP_TOKEN", raising=False)
    monkeypatch.setenv("WHATSAPP_TOKEN_FILE", str(secret))
    settings = Settings()
    assert settings.whatsapp_token is not None
    assert settings.whatsapp_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_rate_cap_above_meta_maximum_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_RATE_PER_SECOND", "5000")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("source", "depth"),
    [
        ("profile.tier == 'gold'", 0),
        ("event.data.items.exists(i, i.price > 20)", 1),
        ("event.data.items.exists(i, i.tags.exists(t, t == 'sale'))", 2),
        ("[1].all(a, [2].all(b, [3].all(c, true)))", 3),
        ("x.filter(i, (i > 1)).map(j, j * 2) == [4]", 1),
        ("x.exists(i, i.tags.exists(t, t == 'a.all(b.all(c.all('))", 2),
        ('"""x.all(y.all(z.all(""" == s', 0),
        ("size(x.map(i, i)) > 0 && y.all(j, j > 0)", 1),
    ],
)
def test_macro_depth_counts_nested_comprehensions_only(source: str, depth: int) -> None:
    assert macro_depth(source) == depth


def test_three_nested_comprehensions_are_refused_at_load_time() -> None:
    with pytest.raises(ValueError, match="nests 3 comprehensions"):
        compile_expression("[1].all(a, [2].all(b, [3].all(c, true)))")
    assert compile_expression("x.exists(i, i.tags.exists(t, t == 'a'))") is not None


def test_construct_matches_model_construct_and_fills_defaults_when_fields_are_missing():
    from schemas.common import construct
    from schemas.state import JourneyHistory

    full: dict[str, Any] = {
        "entries": 2,
        "last_entered_at": None,
        "last_exited_at": None,
        "visits": {"a": 1},
        "runs": [],
    }
    fast = construct(JourneyHistory, **full)
    assert fast == JourneyHistory.model_construct(**full)
    assert fast.model_dump(mode="json") == JourneyHistory.model_validate(full).model_dump(
        mode="json"
    )
    assert fast.model_fields_set == set(full)
    fast.entries += 1  # assignment still goes through pydantic's __setattr__
    assert fast.entries == 3
    partial = construct(JourneyHistory, entries=1)
    assert partial.visits == {} and partial.runs == [] and partial.last_entered_at is None
