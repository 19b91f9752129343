"""Audience entry for journeys: read the audience (on deploy or a schedule), or admit a profile
the moment an attribute update makes it qualify. Pure: no Kafka, the clock passed in.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from engine.core.graph import to_mermaid
from engine.core.interpreter import AudienceFilter, apply_audience, new_profile_state
from engine.core.loader import JourneyValidationError, parse_journey
from engine.worker.codec import state_to_bytes
from schemas.campaign import AudienceTick
from tests.unit import ANA, T0, Profile, at, catalog_of, steps

from .test_campaigns import Audience

VIP = """\
id: vip-welcome
name: VIP welcome
entry:
  qualification: {condition: 'profile.tier == "gold"'}
start: send
activities:
  send: {type: whatsapp, template: vip, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""

READ = VIP.replace(
    "  qualification: {condition: 'profile.tier == \"gold\"'}",
    "  audience: {condition: 'profile.tier == \"gold\"'}",
).replace("id: vip-welcome", "id: gold-read")


def problems(text: str) -> list[str]:
    with pytest.raises(JourneyValidationError) as exc:
        parse_journey(text, "j.yaml")
    return [str(p) for p in exc.value.problems]


# --- the entry rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "entry: {event: signed_up, audience: {condition: 'true'}}",
            "j.yaml:3:8: entry: an entry takes exactly one of 'event', 'audience' or "
            "'qualification' (got event and audience), for example {event: cart.abandoned} or "
            "{audience: {condition: 'profile.tier == \"gold\"'}}",
        ),
        (
            "entry: {}",
            "j.yaml:3:8: entry: an entry takes exactly one of 'event', 'audience' or "
            "'qualification' (got none), for example {event: cart.abandoned} or "
            "{audience: {condition: 'profile.tier == \"gold\"'}}",
        ),
        (
            "entry: {qualification: {condition: 'true'}, condition: 'true'}",
            "j.yaml:3:8: entry: 'condition' beside 'qualification' is not used: put it inside, "
            "like {qualification: {condition: ...}}",
        ),
        (
            "entry: {audience: {condition: 'true', schedule: {every: week, at: '07:00'}}}",
            "j.yaml:3:49: entry.audience.schedule.days: a weekly schedule needs days, like [mon, thu]",
        ),
        (
            "entry: {audience: {}}",
            "j.yaml:3:19: entry.audience.condition: required field is missing",
        ),
    ],
)
def test_an_entry_takes_exactly_one_kind(entry: str, expected: str) -> None:
    text = VIP.replace("entry:\n  qualification: {condition: 'profile.tier == \"gold\"'}", entry)
    assert problems(text) == [expected]


def test_the_graph_says_how_profiles_enter() -> None:
    assert 'entry(("qualifies profile.tier == #quot;gold#quot;"))' in to_mermaid(parse_journey(VIP))
    assert 'entry(("audience profile.tier == #quot;gold#quot;"))' in to_mermaid(parse_journey(READ))


def test_the_catalog_indexes_entries_by_kind() -> None:
    catalog = catalog_of(VIP, READ)
    assert [c.journey_id for c in catalog.qualifications()] == ["vip-welcome"]
    assert [c.journey_id for c in catalog.audiences()] == ["gold-read"]
    assert catalog.entries_for("profile.updated") == []


# --- qualification -------------------------------------------------------------------------


def test_a_profile_enters_when_an_update_makes_it_match() -> None:
    ana = Profile(VIP)
    assert ana.event("profile.updated", attributes={**ANA, "tier": "silver"}).sends == []
    effects = ana.event("profile.updated", "1h", attributes={"tier": "gold"})
    [send] = effects.sends
    assert send.message_id == "vip-welcome:1:p-42:send:1"
    assert steps(effects)[0] == ("entered", "send")
    assert effects.steps[0].event_id is not None


def test_an_unknown_profile_that_arrives_matching_qualifies() -> None:
    ana = Profile(VIP)
    assert len(ana.event("profile.updated", attributes={**ANA, "tier": "gold"}).sends) == 1


def test_a_profile_that_already_matched_does_not_qualify_again() -> None:
    ana = Profile(VIP.replace("start: send", "reentry: {mode: always}\nstart: send"))
    assert len(ana.event("profile.updated", attributes={**ANA, "tier": "gold"}).sends) == 1
    # Still gold after another update: no edge, no entry, even with re-entry allowed.
    assert ana.event("profile.updated", "1h", attributes={"first_name": "Ana M."}).sends == []
    assert ana.event("profile.updated", "2h", attributes={"tier": "silver"}).sends == []
    [again] = ana.event("profile.updated", "3h", attributes={"tier": "gold"}).sends
    assert again.message_id == "vip-welcome:1:p-42:send:2"


def test_re_entry_rules_still_apply_to_qualification() -> None:
    ana = Profile(VIP)  # re-entry never (the default)
    ana.event("profile.updated", attributes={**ANA, "tier": "gold"})
    ana.event("profile.updated", "1h", attributes={"tier": "silver"})
    assert ana.event("profile.updated", "2h", attributes={"tier": "gold"}).sends == []


def test_an_event_without_attributes_never_qualifies_and_errors_mean_no() -> None:
    ana = Profile(VIP)
    ana.event("profile.updated", attributes=ANA)  # no tier: the condition errors, so false
    assert ana.event("cart.abandoned", "1m", data={"tier": "gold"}).sends == []
    [send] = ana.event("order.placed", "2m", attributes={"tier": "gold"}).sends
    assert send.trigger_at == at("2m")  # any event that carries the update admits


def test_a_paused_qualification_journey_admits_nobody() -> None:
    from tests.unit import deployment

    catalog = catalog_of()
    catalog.apply(deployment(VIP, status="paused"))
    ana = Profile(catalog=catalog)
    assert ana.event("profile.updated", attributes={**ANA, "tier": "gold"}).sends == []


# --- reading the audience ----------------------------------------------------------------


def read(profile: Audience, run_id: str, now: str = "0s") -> Any:
    return profile.run(run_id, now, journey_id="gold-read")


def test_an_audience_run_admits_a_matching_profile_once_by_the_journeys_rules() -> None:
    ana = Audience(READ)
    ana.event("profile.updated", "-1h", attributes={**ANA, "tier": "gold"})
    [send] = read(ana, "v1").sends
    assert send.message_id == "gold-read:1:p-42:send:1"  # a journey keeps its visit ids
    assert ana.state.history["gold-read"].runs == ["v1"]
    assert read(ana, "v1", "1m").sends == []
    # A new run (a new version, or the schedule) meets the re-entry rule: never.
    assert read(ana, "v2", "2m").sends == []
    assert ana.last is not None
    assert ana.last.declined == "re-entry is never allowed and the profile has entered before"


def test_an_audience_run_leaves_non_matching_profiles_for_a_later_run() -> None:
    bob = Audience(READ)
    bob.event("profile.updated", "-1h", attributes={**ANA, "tier": "silver"})
    assert read(bob, "v1").sends == []
    assert "gold-read" not in bob.state.history
    bob.event("profile.updated", "1m", attributes={"tier": "gold"})
    assert len(read(bob, "v2", "2m").sends) == 1


def test_due_timers_fire_before_the_audience_entry() -> None:
    waiting = READ.replace(
        "  send: {type: whatsapp",
        "  pause: {type: wait, duration: 1h, next: send}\n  send: {type: whatsapp",
    ).replace("start: send", "start: pause")
    ana = Audience(waiting)
    ana.event("profile.updated", "-1h", attributes={**ANA, "tier": "gold"})
    assert read(ana, "v1").sends == []
    assert ana.journeys == {"gold-read": "pause"}
    [send] = read(ana, "v2", "2h").sends  # the wait fires; v2 is refused (already entered)
    assert send.activity_id == "send"


# --- the scan's pre-filter on stored JSON ------------------------------------------------


def stored(profile: Profile) -> dict[str, Any]:
    return dict(orjson.loads(state_to_bytes(profile.state))["state"])


def test_the_scan_filter_reads_stored_json_and_never_admits_fewer_than_the_engine() -> None:
    ana = Audience(READ)
    ana.event("profile.updated", "-1h", attributes={**ANA, "tier": "gold"})
    compiled = ana.catalog.current("gold-read")
    assert compiled is not None
    tick = AudienceTick(journey_id="gold-read", run_id="v1", requested_at=T0)
    audience = AudienceFilter(compiled, tick)
    assert audience.admits(stored(ana), T0)
    assert not audience.admits({"attributes": {"tier": "silver"}}, T0)
    assert not audience.admits({}, T0)  # no attributes: the condition errors, so no
    narrowed = AudienceFilter(compiled, tick.model_copy(update={"condition": "false"}))
    assert not narrowed.admits(stored(ana), T0)
    read(ana, "v1")
    assert not audience.admits(stored(ana), T0 + timedelta(minutes=1))  # already admitted
    again = AudienceFilter(compiled, tick.model_copy(update={"run_id": "v2"}))
    assert not again.admits(stored(ana), T0)  # re-entry never and entered before


def test_apply_audience_on_a_fresh_state_changes_nothing_when_it_declines() -> None:
    catalog = catalog_of(READ)
    state = new_profile_state("p-1")
    tick = AudienceTick(journey_id="gold-read", run_id="v1", requested_at=T0)
    result = apply_audience(state, tick, catalog, T0)
    assert result.changed is False and not result.effects
    assert result.declined is not None and result.declined.startswith("expression")
