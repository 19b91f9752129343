"""The why-line of each journey from a profile's state and records (no Kafka)."""

from __future__ import annotations

from typing import Any

from engine.console.profile import profile_view
from engine.console.records import ProfileRecords, partition_for
from engine.console.timeline import inspection
from schemas.partitioning import murmur2
from tests.unit import ANA, Profile, at
from tests.unit.engine.core.test_interpreter import CART, one_send


def step(kind: str, journey: str, at_: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "journey_id": journey,
        "journey_version": 1,
        "instance_id": f"{journey}:1:p-42:1",
        "profile_id": "p-42",
        "occurred_at": at(at_).isoformat(),
        "seq": extra.pop("seq", 0),
        **extra,
    }


def delivery(status: str, at_: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "message_id": "promo:1:p-42:send:1",
        "journey_id": "promo",
        "journey_version": 1,
        "activity_id": "send",
        "profile_id": "p-42",
        "template": "promo",
        "status": status,
        "error": error,
        "occurred_at": at(at_).isoformat(),
    }


def why(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {w["journey_id"]: (w["verdict"], w["text"]) for w in result["why"]}


def test_a_refusal_after_the_last_entry_is_the_why() -> None:
    p = Profile(CART)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 5})
    state = profile_view(p.state, p.catalog, at("1m"))
    result = inspection("p-42", state, ProfileRecords())
    verdict, text = why(result)["cart-recovery"]
    assert verdict == "refused"
    assert text.startswith("refused at entry of cart-recovery by the entry condition")
    assert [t["source"] for t in result["timeline"]] == ["state"]


def test_deployed_journeys_the_profile_never_matched_say_so() -> None:
    p = Profile(CART, one_send())
    p.event("other", "0s", attributes=ANA)
    state = profile_view(p.state, p.catalog, at("1m"))
    assert [m["journey_id"] for m in state["not_matched"]] == ["cart-recovery", "promo"]
    lines = why(inspection("p-42", state, ProfileRecords()))
    assert lines["promo"] == (
        "not matched",
        "not matched: no event of the profile met its entry (on go)",
    )
    assert lines["cart-recovery"][0] == "not matched"


def test_a_live_instance_waits_and_says_until_when() -> None:
    p = Profile(CART)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 50})
    p.event("cart.abandoned", "1m", data={"cart_total": 50})  # refused: already in
    state = profile_view(p.state, p.catalog, at("2m"))
    verdict, text = why(inspection("p-42", state, ProfileRecords()))["cart-recovery"]
    assert verdict == "waiting"
    assert text == f"waiting at wait-1h for a timer until {at('1h').isoformat()}"
    assert state["attributes"]["phone"] == "+34******222"
    [cap] = state["frequency_caps"]
    assert (cap["max"], cap["used"], cap["capped"]) == (2, 0, False)


def test_failed_and_skipped_messages_name_meta_code_and_reason() -> None:
    p = Profile(one_send())
    p.event("go", "0s", attributes=ANA)
    state = profile_view(p.state, p.catalog, at("1m"))
    failed = ProfileRecords(
        steps=[
            step("entered", "promo", "0s"),
            step("exited", "promo", "0s", seq=3, reason="completed"),
        ],
        deliveries=[
            delivery("accepted", "1s"),
            delivery("failed", "2s", {"code": 131026, "title": "Message undeliverable"}),
        ],
    )
    verdict, text = why(inspection("p-42", state, failed))["promo"]
    assert verdict == "failed"
    assert text == "message promo at send: failed (Meta 131026: Message undeliverable)"
    skipped = ProfileRecords(
        deliveries=[delivery("skipped", "1s", {"title": "quiet hours", "reason": "quiet_hours"})]
    )
    assert why(inspection("p-42", state, skipped))["promo"] == (
        "skipped",
        "message promo at send: skipped (quiet_hours: quiet hours)",
    )


def test_exits_completions_and_replayed_records() -> None:
    exited = step(
        "exited",
        "promo",
        "5m",
        seq=1,
        reason="exit_event",
        detail="exit event order.placed",
        activity_id="send",
    )
    records = ProfileRecords(
        steps=[step("entered", "promo", "0s"), exited, dict(exited)],  # one replayed
        dead_letters=[
            {
                "reason": "malformed JSON",
                "component": "engine",
                "occurred_at": at("1m").isoformat(),
                "value_text": "{bad +34600111222",
            }
        ],
    )
    result = inspection("p-42", None, records)
    assert why(result)["promo"] == (
        "exited",
        "exited at send (exit_event): exit event order.placed",
    )
    assert len(result["steps"]) == 2  # the replayed record counted once
    assert [t["source"] for t in result["timeline"]] == ["step", "dead-letter", "step"]
    assert result["dead_letters"][0]["value_text"] == "{bad +34******222"
    assert result["known"] is False


def test_records_are_read_from_the_profiles_partition() -> None:
    assert partition_for("p-42", 8) == (murmur2(b"p-42") & 0x7FFFFFFF) % 8
