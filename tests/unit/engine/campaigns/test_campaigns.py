"""Campaigns without Kafka: schedules on an injected clock, YAML errors at their lines, and
one message per profile and run, whatever is repeated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.campaigns.planning import (
    RunRegistry,
    next_campaign_deployment,
    plan_trigger,
    tick_value,
    trigger_refusal,
)
from engine.campaigns.schedule import (
    describe,
    due_run,
    latest_occurrence,
    next_occurrence,
    one_off_time,
    run_id_at,
)
from engine.core.catalog import JourneyCatalog, compile_journey
from engine.core.interpreter import apply_audience
from engine.core.loader import JourneyValidationError, load_campaign, parse_campaign, parse_journey
from schemas.campaign import AudienceTick, CampaignRun, RunProgress, TriggerRequest
from schemas.deployment import JourneyDeployment, JourneyStatus
from schemas.schedule import Schedule
from schemas.steps import ExitReason
from tests.unit import ANA, T0, Profile, at, steps

MADRID = "Europe/Madrid"
EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "campaigns"

PROMO = """\
kind: campaign
id: black-friday
name: Black Friday
audience: {condition: 'profile.tier == "gold"'}
schedule: {at: '2026-11-27T09:00', timezone: Europe/Madrid}
message:
  template: black_friday
  language: es
  parameters: {body: ['profile.first_name', 'context.code']}
"""


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate(fields)


def campaign_deployment(
    text: str = PROMO, version: int = 1, status: JourneyStatus = "active"
) -> JourneyDeployment:
    deployment = next_campaign_deployment(parse_campaign(text), None, now=T0 - timedelta(days=1))
    assert deployment is not None
    return deployment.model_copy(update={"version": version, "status": status})


class Audience(Profile):
    """A profile that also receives its share of audience runs."""

    def run(
        self,
        run_id: str,
        now: str | datetime = "0s",
        *,
        journey_id: str = "black-friday",
        context: dict[str, Any] | None = None,
        condition: str | None = None,
    ) -> Any:
        when = now if isinstance(now, datetime) else at(now)
        tick = AudienceTick(
            journey_id=journey_id,
            run_id=run_id,
            condition=condition,
            context=context or {},
            requested_at=when,
        )
        self.last = apply_audience(self.state, tick, self.catalog, when)
        return self.last.effects


def gold(profile_id: str = "p-42", **attrs: Any) -> Audience:
    catalog = JourneyCatalog()
    catalog.apply(campaign_deployment())
    profile = Audience(catalog=catalog, profile_id=profile_id)
    profile.event("profile.updated", "-1d", attributes={**ANA, "tier": "gold", **attrs})
    return profile


# --- schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ("2026-03-27T12:00:00+01:00", "2026-03-28T09:00:00+01:00"),
        # The clocks go forward on 29 March: 09:00 is now CEST, an hour earlier in UTC.
        ("2026-03-28T12:00:00+01:00", "2026-03-29T09:00:00+02:00"),
        ("2026-10-24T12:00:00+02:00", "2026-10-25T09:00:00+01:00"),
        ("2026-11-24T08:59:00+01:00", "2026-11-24T09:00:00+01:00"),
        ("2026-11-24T09:00:00+01:00", "2026-11-25T09:00:00+01:00"),  # strictly after
    ],
)
def test_daily_keeps_its_local_time_across_daylight_saving(after: str, expected: str) -> None:
    daily = schedule(every="day", at="09:00", timezone=MADRID)
    assert next_occurrence(daily, utc(after)) == utc(expected)


def test_a_time_skipped_by_the_spring_jump_runs_after_it_and_a_repeated_one_runs_once() -> None:
    daily = schedule(every="day", at="02:30", timezone=MADRID)
    spring = next_occurrence(daily, utc("2026-03-28T12:00:00+01:00"))
    assert spring == utc("2026-03-29T03:30:00+02:00")  # 02:30 does not exist that night
    autumn = next_occurrence(daily, utc("2026-10-24T12:00:00+02:00"))
    assert autumn == utc("2026-10-25T02:30:00+02:00")  # the first of the two 02:30s
    assert next_occurrence(daily, autumn) == utc("2026-10-26T02:30:00+01:00")


def test_weekly_on_chosen_days_across_the_october_change() -> None:
    weekly = schedule(every="week", days=["mon", "sat"], at="20:00", timezone=MADRID)
    fired, when = [], utc("2026-10-20T00:00:00+02:00")  # a Tuesday
    for _ in range(4):
        found = next_occurrence(weekly, when)
        assert found is not None
        fired.append(found)
        when = found
    assert fired == [
        utc("2026-10-24T20:00:00+02:00"),  # Saturday, summer time
        utc("2026-10-26T20:00:00+01:00"),  # Monday, winter time
        utc("2026-10-31T20:00:00+01:00"),
        utc("2026-11-02T20:00:00+01:00"),
    ]


def test_monthly_day_31_and_last_fall_on_each_months_last_day() -> None:
    monthly = schedule(every="month", days=[31], at="10:00", timezone=MADRID)
    fired, when = [], utc("2027-01-01T00:00:00+01:00")
    for _ in range(4):
        found = next_occurrence(monthly, when)
        assert found is not None
        fired.append(found.astimezone(UTC).date().isoformat())
        when = found
    assert fired == ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]
    last = schedule(every="month", days=["last", 30], at="10:00", timezone=MADRID)
    # In February both mean the 29th (2028 is a leap year): one run, not two.
    feb = next_occurrence(last, utc("2028-02-01T00:00:00+01:00"))
    assert feb == utc("2028-02-29T10:00:00+01:00")
    assert next_occurrence(last, feb) == utc("2028-03-30T10:00:00+02:00")


def test_monthly_across_the_spring_change_and_the_latest_occurrence() -> None:
    monthly = schedule(every="month", days=[1, 29], at="09:00", timezone=MADRID)
    assert next_occurrence(monthly, utc("2026-03-02T00:00:00+01:00")) == utc(
        "2026-03-29T09:00:00+02:00"
    )
    assert latest_occurrence(monthly, utc("2026-04-15T12:00:00+02:00")) == utc(
        "2026-04-01T09:00:00+02:00"
    )
    assert latest_occurrence(monthly, utc("2026-04-01T09:00:00+02:00")) == utc(
        "2026-04-01T09:00:00+02:00"
    )


def test_one_off_times_with_and_without_an_offset() -> None:
    local = schedule(at="2026-11-27T09:00", timezone=MADRID)
    assert one_off_time(local) == utc("2026-11-27T08:00:00+00:00")
    offset = schedule(at="2026-11-27T09:00:00-05:00", timezone=MADRID)
    assert one_off_time(offset) == utc("2026-11-27T14:00:00+00:00")
    assert next_occurrence(local, utc("2026-11-27T07:59:00+00:00")) is not None
    assert next_occurrence(local, utc("2026-11-27T08:00:00+00:00")) is None
    assert latest_occurrence(local, utc("2026-11-27T08:00:00+00:00")) == one_off_time(local)
    assert run_id_at(one_off_time(local)) == "20261127T0800Z"


def compiled_campaign(text: str, deployed_at: datetime) -> Any:
    dep = next_campaign_deployment(parse_campaign(text), None, now=deployed_at)
    assert dep is not None
    return compile_journey(dep)


def test_due_runs_start_inside_the_catch_up_window_and_never_before_deploy() -> None:
    daily = PROMO.replace(
        "schedule: {at: '2026-11-27T09:00', timezone: Europe/Madrid}",
        "schedule: {every: day, at: '09:00', timezone: Europe/Madrid}",
    )
    window = timedelta(hours=1)
    deployed = compiled_campaign(daily, utc("2026-11-23T12:00:00+01:00"))
    run = due_run(deployed, utc("2026-11-24T09:30:00+01:00"), window)
    assert run is not None and run.run_id == "20261124T0800Z"
    assert due_run(deployed, utc("2026-11-24T10:30:00+01:00"), window) is None  # too late
    late = compiled_campaign(daily, utc("2026-11-24T09:10:00+01:00"))
    assert due_run(late, utc("2026-11-24T09:30:00+01:00"), window) is None  # tomorrow
    now_campaign = compiled_campaign(PROMO.replace(PROMO.splitlines()[4], "schedule: now"), T0)
    on_deploy = due_run(now_campaign, T0, window)
    assert on_deploy is not None and on_deploy.run_id == "now"
    assert due_run(now_campaign, at("30d"), window) == on_deploy
    triggered = compiled_campaign(PROMO.replace(PROMO.splitlines()[4] + "\n", ""), T0)
    assert due_run(triggered, T0, window) is None


def test_schedules_describe_themselves() -> None:
    assert describe(None) == "when triggered"
    assert describe(schedule(at="now")) == "on deploy"
    assert describe(schedule(every="week", days=["mon"], at="09:00", timezone=MADRID)) == (
        "every week on mon at 09:00 Europe/Madrid"
    )


# --- campaign YAML -----------------------------------------------------------------------


def problems(text: str) -> list[str]:
    with pytest.raises(JourneyValidationError) as exc:
        parse_campaign(text, "c.yaml")
    return [str(p) for p in exc.value.problems]


def test_the_examples_are_valid_campaigns() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files
    for path in files:
        assert load_campaign(path).id == path.stem


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("kind: campaign", "kind: campain", "c.yaml:1:7: kind: Input should be 'campaign'"),
        (
            "  template: black_friday\n",
            "  template: black_friday\n  colour: red\n",
            "c.yaml:8:3: message.colour: unknown field",
        ),
        (
            "{at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "{every: week, at: '09:00', days: [mon, funday]}",
            "c.yaml:5:44: schedule.days: 'funday' is not a weekday: use mon, tue, wed, thu, fri, sat, sun",
        ),
        (
            "{at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "{every: day, at: '9am'}",
            "c.yaml:5:28: schedule.at: invalid time '9am': a recurring schedule runs at a 24-hour HH:MM, like '09:00'",
        ),
        (
            "{at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "{every: month, at: '09:00'}",
            "c.yaml:5:11: schedule.days: a monthly schedule needs days, like [1, 15, last]",
        ),
        (
            "{at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "{at: 'next friday'}",
            "c.yaml:5:16: schedule.at: invalid date-time 'next friday': use ISO 8601, like "
            "'2026-11-27T09:00' (local time in `timezone`) or '2026-11-27T09:00:00+01:00'",
        ),
        (
            "{at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "{at: '2026-11-27T09:00', timezone: Madrid}",
            "c.yaml:5:46: schedule.timezone: unknown time zone 'Madrid': use an IANA name such as Europe/Madrid",
        ),
        (
            "schedule: {at: '2026-11-27T09:00', timezone: Europe/Madrid}",
            "schedule: tomorrow",
            "c.yaml:5:11: schedule: a schedule is `now`, {at: '2026-11-27T09:00', timezone: "
            "Europe/Madrid}, or {every: day|week|month, at: 'HH:MM', days: [...], timezone: ...}",
        ),
        (
            "'profile.tier == \"gold\"'",
            "'profile.tier =='",
            "c.yaml:4:23: audience.condition: invalid CEL expression 'profile.tier ==': Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER} (at column 16)",
        ),
    ],
)
def test_campaign_yaml_errors_name_file_line_column_and_field(
    old: str, new: str, expected: str
) -> None:
    assert old in PROMO
    assert problems(PROMO.replace(old, new)) == [expected]


def test_missing_message_and_a_journey_loader_pointing_at_the_campaign_command() -> None:
    text = PROMO[: PROMO.index("message:")]
    assert problems(text) == ["c.yaml:1:1: message: required field is missing"]
    with pytest.raises(JourneyValidationError) as exc:
        parse_journey(PROMO, "c.yaml")
    assert [str(p) for p in exc.value.problems] == [
        "c.yaml:1:7: kind: this file is a campaign: use `journeyctl campaign validate|deploy`"
    ]


def test_a_campaign_compiles_to_a_one_step_journey() -> None:
    journey = parse_campaign(PROMO).to_journey()
    assert journey.entry.audience is not None
    assert journey.entry.audience.condition == 'profile.tier == "gold"'
    assert journey.reentry.mode == "always"
    assert list(journey.activities) == ["send", "done"]
    assert journey.start == "send"


# --- one message per profile and run ------------------------------------------------------


def test_a_run_sends_once_with_the_run_in_the_message_id_and_context_in_parameters() -> None:
    ana = gold()
    effects = ana.run("r1", context={"code": "BF26"})
    [send] = effects.sends
    assert send.message_id == "black-friday:1:p-42:send:r1"
    assert (send.journey_id, send.journey_version, send.activity_id) == ("black-friday", 1, "send")
    assert send.parameters.body == ["Ana", "BF26"]
    assert steps(effects) == [
        ("entered", "send"),
        ("send", "sent"),
        ("done", "completed"),
        ("exited", "completed"),
    ]
    assert all(s.event_id == "run:black-friday:r1" for s in effects.steps)
    assert ana.journeys == {}


def test_a_repeated_run_sends_nothing_even_after_the_event_dedupe_window() -> None:
    ana = gold()
    assert len(ana.run("r1", context={"code": "A"}).sends) == 1
    for i in range(100):  # far more events than the dedupe window remembers
        ana.event("page.viewed", f"{i + 1}m")
    again = ana.run("r1", "3h", context={"code": "A"})
    assert again.sends == [] and again.deliveries == [] and again.steps == []
    assert ana.last is not None and ana.last.declined == "already admitted by run 'r1'"
    assert ana.last.changed is False
    [send] = ana.run("r2", "4h", context={"code": "B"}).sends
    assert send.message_id == "black-friday:1:p-42:send:r2"


def test_only_the_latest_runs_are_remembered() -> None:
    ana = gold()
    for i in range(70):
        ana.run(f"r{i}", f"{i}m", context={"code": "x"})
    assert ana.state.history["black-friday"].runs == [f"r{i}" for i in range(6, 70)]


def test_the_audience_condition_and_the_triggers_own_condition_both_hold() -> None:
    silver = gold(tier="silver")
    assert silver.run("r1", context={"code": "x"}).sends == []
    assert silver.last is not None and silver.last.declined == "entry condition is false"
    ana = gold()
    assert ana.run("r1", condition='profile.language == "en"').sends == []
    assert ana.last is not None and ana.last.declined == "trigger audience condition is false"
    assert len(ana.run("r2", condition='profile.language == "es"', context={"code": "y"}).sends)


def test_a_missing_context_value_is_a_template_error_skip_not_a_send() -> None:
    ana = gold()
    effects = ana.run("r1")
    assert effects.sends == []
    [skip] = effects.deliveries
    assert skip.message_id == "black-friday:1:p-42:send:r1"
    assert skip.error is not None and skip.error.reason == "template_error"
    assert ana.run("r1", "1m", context={"code": "x"}).sends == []  # the run got its outcome


def test_consent_travels_with_the_request_and_the_frequency_cap_is_kept() -> None:
    capped = PROMO + "frequency_cap: {channel: whatsapp, max: 1, per: 1d}\n"
    catalog = JourneyCatalog()
    catalog.apply(campaign_deployment(capped))
    ana = Audience(catalog=catalog)
    ana.event("profile.updated", "-1d", attributes={**ANA, "tier": "gold"})
    [send] = ana.run("r1", context={"code": "x"}).sends
    assert send.consent == "opted_in" and send.to == ANA["phone"]
    effects = ana.run("r2", "1h", context={"code": "x"})
    assert [d.error.reason for d in effects.deliveries if d.error] == ["frequency_capped"]


def test_quiet_hours_delay_keeps_the_run_in_the_id_and_a_cancel_stops_the_send() -> None:
    quiet = PROMO + "quiet_hours: {start: '21:00', end: '09:00', timezone: profile}\n"
    catalog = JourneyCatalog()
    catalog.apply(campaign_deployment(quiet))
    night = T0.replace(hour=22)  # 23:00 in Madrid
    ana = Audience(catalog=catalog)
    ana.event("profile.updated", "-1d", attributes={**ANA, "tier": "gold"})
    assert ana.run("r1", night, context={"code": "x"}).sends == []
    assert ana.journeys == {"black-friday": "send"}
    [send] = ana.tick(night + timedelta(hours=10)).sends
    assert send.message_id == "black-friday:1:p-42:send:r1"
    assert send.parameters.body == ["Ana", "x"]

    bob = Audience(catalog=catalog, profile_id="p-7")
    bob.event("profile.updated", "-1d", attributes={**ANA, "tier": "gold"})
    bob.run("r1", night, context={"code": "x"})
    catalog.cancel_run("black-friday", "r1")
    effects = bob.tick(night + timedelta(hours=10))
    assert effects.sends == []
    assert steps(effects)[-1] == ("exited", ExitReason.ARCHIVED.value)
    assert effects.steps[-1].detail == "campaign run r1 cancelled"


def test_cancelled_campaigns_and_cancelled_runs_admit_nobody() -> None:
    catalog = JourneyCatalog()
    catalog.apply(campaign_deployment())
    catalog.cancel_run("black-friday", "r1")
    ana = Audience(catalog=catalog)
    ana.event("profile.updated", "-1d", attributes={**ANA, "tier": "gold"})
    assert ana.run("r1", context={"code": "x"}).sends == []
    assert ana.last is not None and ana.last.declined == "run 'r1' is cancelled"
    catalog.apply(campaign_deployment(status="archived"))
    assert ana.run("r2", context={"code": "x"}).sends == []
    assert ana.last is not None and ana.last.declined == "'black-friday' is cancelled"
    assert ana.run("r1", journey_id="nope").sends == []
    assert ana.last is not None and ana.last.declined == "no journey or campaign 'nope' is deployed"


def test_an_unknown_profile_gets_nothing_and_stores_nothing() -> None:
    catalog = JourneyCatalog()
    catalog.apply(campaign_deployment())
    ghost = Audience(catalog=catalog, profile_id="p-ghost")
    assert ghost.run("r1", context={"code": "x"}).sends == []
    assert ghost.last is not None and ghost.last.changed is False


# --- triggers, runs and deployments ---------------------------------------------------------


def test_a_trigger_with_profiles_plans_one_tick_each_and_without_plans_an_audience_run() -> None:
    request = TriggerRequest(profile_ids=["p-1", "p-2", "p-1"], context={"code": "x"}, run_id="r9")
    run, ticks = plan_trigger("black-friday", 3, request, now=T0, source="api")
    assert (run.target, run.profiles, run.run_id, run.key) == (
        "profiles",
        2,
        "r9",
        "black-friday:r9",
    )
    assert [pid for pid, _ in ticks] == ["p-1", "p-2"]
    record = orjson.loads(ticks[0][1])
    assert record["profile_id"] == "p-1"
    tick = AudienceTick.model_validate(record["audience"])
    assert (tick.journey_id, tick.version, tick.run_id, tick.context) == (
        "black-friday",
        3,
        "r9",
        {"code": "x"},
    )
    audience_run, none = plan_trigger("black-friday", 3, TriggerRequest(), now=T0, source="cli")
    assert audience_run.target == "audience" and none == []
    assert audience_run.run_id.startswith("20261124T100000Z-")
    assert orjson.loads(tick_value('a"b', b"{}")) == {"profile_id": 'a"b', "audience": {}}


def status(refusal: tuple[int, str] | None) -> int:
    return refusal[0] if refusal is not None else 202


def test_trigger_refusals() -> None:
    active = compile_journey(campaign_deployment())
    cancelled = compile_journey(campaign_deployment(status="archived"))
    paused = campaign_deployment(status="paused")
    run = CampaignRun(campaign_id="black-friday", run_id="r1", status="cancelled", requested_at=T0)
    assert trigger_refusal("black-friday", active, None) is None
    assert trigger_refusal("nope", None, None) == (
        404,
        "no campaign 'nope' is deployed (see `journeyctl campaign list`)",
    )
    journey = compile_journey(
        JourneyDeployment(
            journey_id="j",
            version=1,
            definition=parse_journey(
                "id: j\nname: J\nentry: {event: e}\nstart: d\nactivities: {d: {type: end}}\n"
            ),
            deployed_at=T0,
        )
    )
    assert status(trigger_refusal("j", journey, None)) == 404
    assert status(trigger_refusal("black-friday", cancelled, None)) == 409
    assert status(trigger_refusal("black-friday", paused, None)) == 409
    assert trigger_refusal("black-friday", active, run) == (
        409,
        "run 'r1' of campaign 'black-friday' is cancelled",
    )


def test_the_registry_keeps_runs_cancels_and_progress() -> None:
    cancelled: list[tuple[str, str]] = []
    registry = RunRegistry(on_cancel=lambda j, r: cancelled.append((j, r)))
    run = CampaignRun(campaign_id="c", run_id="r1", requested_at=T0)
    registry.apply_record(run.key.encode(), orjson.dumps(run.model_dump(mode="json")))
    assert [r.run_id for r in registry.audience_runs()] == ["r1"]
    registry.apply(run.model_copy(update={"status": "cancelled"}))
    registry.apply(run)  # a late "running" record never revives a cancelled run
    assert cancelled == [("c", "r1")]
    assert list(registry.audience_runs()) == []
    progress = RunProgress(
        journey_id="c", run_id="now", partition=2, scanned=10, queued=4, finished_at=T0
    )
    registry.apply_record(b"c:now:2", orjson.dumps(progress.model_dump(mode="json")))
    assert registry.done("c", "now", 2) and not registry.done("c", "now", 1)
    assert registry.run_ids("c") == ["now", "r1"]
    registry.apply_record(b"c:x", b"{not json")  # logged, not raised
    registry.apply_record(b"c:x", None)  # a tombstone


def test_deploying_a_campaign_versions_it_and_reactivates_a_cancelled_one() -> None:
    campaign = parse_campaign(PROMO)
    first = next_campaign_deployment(campaign, None, now=T0)
    assert first is not None and (first.version, first.kind) == (1, "campaign")
    assert next_campaign_deployment(campaign, first, now=T0) is None
    cancelled = first.model_copy(update={"status": "archived"})
    again = next_campaign_deployment(campaign, cancelled, now=T0)
    assert again is not None and (again.version, again.status) == (1, "active")
    changed = parse_campaign(PROMO.replace("Black Friday", "Black Friday!"))
    second = next_campaign_deployment(changed, first, now=T0)
    assert second is not None and second.version == 2
    journey = JourneyDeployment(
        journey_id="black-friday", version=1, definition=first.definition, deployed_at=T0
    )
    with pytest.raises(ValueError, match="is a journey"):
        next_campaign_deployment(campaign, journey)
    # The record round-trips through JSON, as on the definitions topic.
    decoded = JourneyDeployment.model_validate_json(first.model_dump_json(by_alias=True))
    assert decoded == first
