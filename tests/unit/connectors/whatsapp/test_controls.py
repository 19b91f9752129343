"""Meta's account webhooks become control records; the view answers the connector's questions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.whatsapp.account_webhooks import control_records, status_error_records
from connectors.whatsapp.controls import REACH_MARGIN_SECONDS, Controls, template_records

NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def view(*records: tuple[bytes, bytes | None], window: float = 100.0) -> Controls:
    controls = Controls(window_seconds=window)
    for key, value in records:
        controls.apply(key, value)
    return controls


def profile(wa_id: str) -> str:
    return f"p-{wa_id}"


def template_change(field: str, **value: object) -> Controls:
    base = {"message_template_name": "promo", "message_template_language": "es"}
    return view(*control_records(field, {**base, **value}, profile, NOW))


def test_status_quality_and_category_merge_into_one_template_state() -> None:
    controls = view(
        *template_records("promo", "es", NOW, status="APPROVED", category="utility"),
        *control_records(
            "message_template_status_update",
            {"event": "PAUSED", "message_template_name": "promo",
             "message_template_language": "es", "reason": "LOW_QUALITY"},
            profile,
            NOW,
        ),
        *control_records(
            "template_category_update",
            {"message_template_name": "promo", "message_template_language": "es",
             "previous_category": "UTILITY", "new_category": "MARKETING"},
            profile,
            NOW,
        ),
    )  # fmt: skip
    state = controls.template("promo", "es")
    assert state is not None
    assert (state.status, state.reason, state.blocked) == ("PAUSED", "LOW_QUALITY", "paused")
    assert (state.previous_category, state.category) == ("utility", "marketing")


def test_reinstated_is_approved_and_unknown_events_are_ignored() -> None:
    reinstated = template_change("message_template_status_update", event="REINSTATED")
    assert reinstated.template("promo", "es") is not None
    assert reinstated.templates["promo:es"].status == "APPROVED"
    assert template_change("message_template_status_update", event="ARCHIVED").templates == {}
    quality = template_change("message_template_quality_update", new_quality_score="RED")
    assert quality.template("promo", "es").quality == "RED"  # type: ignore[union-attr]


def test_user_preferences_set_and_clear_the_marketing_opt_out() -> None:
    def prefs(choice: str) -> list[tuple[bytes, bytes | None]]:
        value = {"user_preferences": [
            {"wa_id": "34600111222", "category": "marketing_messages", "value": choice}
        ]}  # fmt: skip
        return control_records("user_preferences", value, profile, NOW)

    assert view(*prefs("stop")).opted_out == {"p-34600111222"}
    assert view(*prefs("stop"), *prefs("resume")).opted_out == set()


def test_the_tier_comes_from_business_capability_update_and_minus_one_is_unlimited() -> None:
    def tier(value: dict[str, object]) -> Controls:
        return view(*control_records("business_capability_update", value, profile, NOW))

    assert tier({"max_daily_conversations_per_business": 2000}).limit(None) == 2000
    assert tier({"max_daily_conversation_per_phone": 250}).limit(None) == 250
    assert tier({"max_daily_conversations_per_business": -1}).limit(None) is None
    assert tier({"max_daily_conversations_per_business": 2000}).limit(250) == 250  # setting wins


def test_131049_holds_marketing_for_a_day_and_131050_opts_out() -> None:
    controls = view(
        *status_error_records("p-1", 131049, NOW), *status_error_records("p-2", 131050, NOW)
    )
    assert controls.marketing_hold("p-1", NOW) == NOW + timedelta(hours=24)
    assert controls.marketing_hold("p-1", NOW + timedelta(hours=25)) is None
    assert controls.opted_out == {"p-2"}
    assert status_error_records("p-3", 131026, NOW) == []


def test_new_users_beyond_the_limit_wait_for_the_oldest_to_leave_the_window() -> None:
    controls = Controls(window_seconds=100.0)
    assert controls.admit("a", 2, 0.0) and controls.admit("b", 2, 10.0)
    assert not controls.admit("c", 2, 20.0)
    assert controls.admit("a", 2, 20.0)  # already reached: not a new user
    assert controls.frees_in(20.0) == 80.0 + REACH_MARGIN_SECONDS
    assert controls.admit("c", 2, 100.0 + REACH_MARGIN_SECONDS)
    assert sorted(controls.reach) == ["b", "c"]
