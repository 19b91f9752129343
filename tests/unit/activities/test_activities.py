"""Each activity as a pure function: given a journey step and a context, this outcome.

Contexts are built by hand here; test_interpreter checks the same rules through whole journeys.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, get_args

import pytest

from activities import (
    RUNNERS,
    ExpressionError,
    StepContext,
    Variables,
    Wait,
    build_variables,
    end,
    entry,
    evaluate,
    evaluate_condition,
    http,
    jump,
    run_activity,
    split,
    wait,
    wait_for_event,
    whatsapp,
)
from activities.expressions import projection_of
from engine.core.loader import parse_journey
from schemas.common import compile_expression
from schemas.journey import (
    Activity,
    EndActivity,
    HttpActivity,
    JourneyDefinition,
    JumpActivity,
    QuietHours,
    Reentry,
    SplitActivity,
    WaitActivity,
    WaitForEventActivity,
)
from schemas.messages import DeliveryStatus, SkipReason
from schemas.state import EventContext, JourneyHistory
from schemas.steps import ExitReason
from tests.unit import ANA, T0, at

A = TypeVar("A")

JOURNEY = """
id: shop
name: Shop
entry: {event: cart.abandoned}
start: pick
activities:
  pick:
    type: condition
    branches:
      - {when: 'event.data.cart_total > 100', next: vip}
      - {when: 'event.data.cart_total > 20', next: remind}
    else: guarded
  guarded:
    type: condition
    branches: [{when: 'event.data.cart_total > 20', next: remind}]
    else: done
    on_error: done
  vip: {type: split, paths: [{weight: 70, next: remind, name: control}, {weight: 20, next: done},
                             {weight: 10, next: done, name: holdout}]}
  remind:
    type: whatsapp
    template: cart_reminder
    language: es
    parameters:
      header: ['profile.first_name']
      body: ['profile.first_name', 'event.data.cart_total', 'string(event.data.items)']
      buttons: ['"cart/" + journey.instance_id']
    media: {type: image, link: '"https://cdn.example.com/" + event.data.sku + ".png"'}
    next: hold
    on_error: done
  hold: {type: wait, duration: 2h, next: listen}
  listen: {type: wait_for_event, event: order.placed, condition: 'trigger.data.total > 0',
           timeout: 1d, next: award, on_timeout: done}
  award:
    type: http
    url: https://crm.example.com/award
    body: {who: 'journey.instance_id', at: 'now', total: 'trigger.data.total', tags: '["a", "b"]'}
    next: away
    on_error: done
  away: {type: jump, journey: other}
  done: {type: end}
"""
DEFINITION = parse_journey(JOURNEY)


def step(activity_id: str, kind: type[A]) -> A:
    """An activity of the test journey, typed."""
    activity = DEFINITION.activities[activity_id]
    assert isinstance(activity, kind)
    return activity


ENTRY_DATA = {"cart_total": 42.5, "items": 3, "sku": "sku-1"}


def entry_event(data: dict[str, Any] | None = None, when: datetime = T0) -> EventContext:
    return EventContext(
        event_id="evt-1",
        type="cart.abandoned",
        data=ENTRY_DATA if data is None else data,
        occurred_at=when,
    )


def context(
    activity_id: str,
    *,
    definition: JourneyDefinition = DEFINITION,
    profile: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    trigger: EventContext | None = None,
    visit: int = 1,
    sends: tuple[datetime, ...] = (),
    now: datetime = T0,
) -> StepContext:
    profile = dict(ANA) if profile is None else profile
    variables = build_variables(
        profile=profile,
        event=entry_event(data),
        trigger=trigger,
        journey_id=definition.id,
        version=3,
        instance_id="shop:3:p-42:1",
        entered_at=T0,
        now=now,
    )
    return StepContext(
        profile_id="p-42",
        profile=profile,
        journey=definition,
        version=3,
        instance_id="shop:3:p-42:1",
        activity_id=activity_id,
        visit=visit,
        variables=variables,
        trigger_at=T0,
        whatsapp_sends=sends,
    )


def run(activity_id: str, now: datetime = T0, **kwargs: Any):
    ctx = context(activity_id, now=now, **kwargs)
    return run_activity(ctx, ctx.journey.activities[activity_id], now)


def test_every_activity_type_has_a_runner():
    models = get_args(get_args(Activity)[0])
    types = {get_args(model.model_fields["type"].annotation)[0] for model in models}
    assert (
        set(RUNNERS)
        == types
        == {
            "wait",
            "condition",
            "wait_for_event",
            "split",
            "whatsapp",
            "http",
            "jump",
            "end",
        }
    )


# --- expressions ----------------------------------------------------------------------

VARS = {
    "profile": {"first_name": "Ana", "age": 30},
    "event": {"type": "x", "data": {"n": 0}},
    "trigger": {},
    "now": T0,
}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("profile.first_name", "Ana"),
        ("profile.age + 1", 31),
        ('has(profile.tier) ? profile.tier : "none"', "none"),
        ("has(trigger.data)", False),
        ("now", T0),
        ('now + duration("90m")', T0 + timedelta(minutes=90)),
    ],
)
def test_evaluate(source, value):
    assert evaluate(source, VARS) == value
    assert evaluate(source, Variables(dict(VARS))) == value


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("profile.last_name", "no such key 'last_name' (guard it with has())"),
        ("profile.first_name + 1", "Unsupported operation: string + int."),
        ("nobody.here", "Undefined variable or function: 'nobody'."),
        ("profile.age / event.data.n", "division by zero in CEL expression"),
        ("profile.(", "invalid CEL expression"),
    ],
)
def test_evaluation_errors_become_one_error_type(source, reason):
    with pytest.raises(ExpressionError) as caught:
        evaluate(source, Variables(dict(VARS)))
    assert caught.value.source == source
    assert caught.value.reason.startswith(reason) or reason in caught.value.reason
    assert str(caught.value).startswith(f"expression {source!r} failed: ")


def test_a_condition_must_be_boolean():
    assert evaluate_condition("profile.age > 18", VARS) is True
    with pytest.raises(ExpressionError, match="gave str 'Ana', not true or false"):
        evaluate_condition("profile.first_name", VARS)


def test_precompiled_programs_are_used_before_the_shared_cache():
    class Fixed:
        def execute(self, scope: Any) -> str:
            return "precompiled"

    assert evaluate("1 + 1", Variables({}, {"1 + 1": Fixed()})) == "precompiled"
    assert evaluate("1 + 1", Variables({})) == 2


def test_an_expression_converts_only_the_variables_and_fields_it_reads():
    class Unconvertible:
        pass

    # A value CEL cannot take fails only the expressions that read it.
    variables = Variables(
        {
            "profile": {"tier": "gold", "odd": Unconvertible(), "address": {"city": "Vigo"}},
            "context": {"x": Unconvertible()},
        }
    )
    assert evaluate('profile.tier == "gold"', variables) is True
    assert evaluate('profile.address.city + "!"', variables) == "Vigo!"
    assert evaluate("has(profile.missing)", variables) is False
    assert evaluate("profile.tier.startsWith('g')", variables) is True  # a method: whole tier
    with pytest.raises(ExpressionError):
        evaluate("has(context.x)", variables)
    with pytest.raises(ExpressionError):
        evaluate("size(profile) == 3", variables)  # the whole map, odd value and all
    with pytest.raises(ExpressionError):
        evaluate('profile["tier"] == "gold"', variables)  # indexing takes the whole map too
    # One conversion per projection, shared by the run's expressions that read the same.
    tier = projection_of('profile.tier == "gold"', compile_expression('profile.tier == "gold"'))
    assert tier == (("profile", (("tier", None),)),)
    first = variables.context(tier)
    assert evaluate('profile.tier != "gold"', variables) is False
    assert variables.context(tier) is first


@pytest.mark.parametrize(
    ("source", "projection"),
    [
        ("profile.first_name", (("profile", (("first_name", None),)),)),
        (
            "event.data.cart_total > 20 && event.type == 'x'",
            (("event", (("data", (("cart_total", None),)), ("type", None))),),
        ),
        ("has(profile.a) && profile.a.b > 1", (("profile", (("a", None),)),)),
        ("size(profile) > 0", (("profile", None),)),
        ("'k' in profile", (("profile", None),)),
        ("profile.tags[0]", (("profile", (("tags", None),)),)),
        ("profile.name.size() > 2", (("profile", (("name", None),)),)),
        (
            "profile.exists(k, k == 'a')",
            (("k", None), ("profile", None)),
        ),  # k: a macro's own variable
        (
            "now + duration('1h') > journey.entered_at",
            (("journey", (("entered_at", None),)), ("now", None)),
        ),
        (
            "string(event.data.n) + profile . first_name",
            (("event", (("data", (("n", None),)),)), ("profile", (("first_name", None),))),
        ),
    ],
)
def test_what_an_expression_reads(source: str, projection: Any) -> None:
    assert projection_of(source, compile_expression(source)) == projection


# --- entry ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reentry", "entries", "last_entered", "now", "refused"),
    [
        ({"mode": "never"}, 0, None, "0s", False),
        ({"mode": "never"}, 1, "-1d", "0s", True),
        ({"mode": "always"}, 5, "-1s", "0s", False),
        ({"mode": "after", "wait": "7d"}, 1, "-7d", "0s", False),
        ({"mode": "after", "wait": "7d"}, 1, "-6d", "0s", True),
        ({"mode": "after", "wait": "7d"}, 0, None, "0s", False),
    ],
)
def test_reentry_refusal(reentry, entries, last_entered, now, refused):
    history = JourneyHistory(
        entries=entries, last_entered_at=at(last_entered) if last_entered else None
    )
    reason = entry.reentry_refusal(Reentry.model_validate(reentry), history, at(now))
    assert (reason is not None) is refused


def test_reentry_refusal_says_when_the_profile_may_come_back():
    history = JourneyHistory(entries=1, last_entered_at=at("-6d"))
    reason = entry.reentry_refusal(Reentry(mode="after", wait=timedelta(days=7)), history, T0)
    assert reason == "re-entry allowed from 2026-11-25T10:00:00+00:00"


@pytest.mark.parametrize(
    ("condition_src", "outcome", "next_id", "detail"),
    [
        (None, "entered", "pick", None),
        ("event.data.cart_total > 20", "entered", "pick", None),
        ("event.data.cart_total > 50", "declined", None, "entry condition is false"),
        ("event.data.missing > 1", "declined", None, "expression 'event.data.missing > 1' failed"),
    ],
)
def test_entry_condition(condition_src, outcome, next_id, detail):
    rule = DEFINITION.entry.model_copy(update={"condition": condition_src})
    result = entry.run(context("pick"), rule, T0)
    assert (result.outcome, result.next) == (outcome, next_id)
    assert (result.detail or "").startswith(detail or "")


# --- condition --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "next_id", "outcome"),
    [
        ({"cart_total": 500}, "vip", "0"),  # both branches hold: the first wins
        ({"cart_total": 50}, "remind", "1"),
        ({"cart_total": 5}, "guarded", "else"),
    ],
)
def test_condition_takes_the_first_true_branch(data, next_id, outcome):
    result = run("pick", data=data)
    assert (result.next, result.outcome, result.exit) == (next_id, outcome, None)


def test_condition_error_without_on_error_ends_the_instance():
    result = run("pick", data={"cart_total": "a lot"})
    assert (result.next, result.exit, result.outcome) == (None, ExitReason.ERROR, "error")
    assert result.detail is not None and "event.data.cart_total > 100" in result.detail


def test_condition_error_with_on_error_goes_there():
    result = run("guarded", data={})
    assert (result.next, result.outcome, result.exit) == ("done", "error", None)
    assert result.detail == (
        "expression 'event.data.cart_total > 20' failed: "
        "no such key 'cart_total' (guard it with has())"
    )


def test_condition_must_give_a_boolean():
    definition = parse_journey(
        JOURNEY.replace("'event.data.cart_total > 100'", "'event.data.items'")
    )
    result = run("pick", definition=definition)
    assert (result.exit, result.outcome) == (ExitReason.ERROR, "error")
    assert result.detail is not None and "gave int 3, not true or false" in result.detail


# --- wait and wait_for_event -----------------------------------------------------------------


def test_wait_for_a_duration_sets_a_timer():
    result = run("hold", now=at("5m"))
    assert result.wait == Wait("timer", at("2h5m"))
    assert result.outcome == "waiting" and result.next is None
    woken = wait.on_timer(context("hold"), step("hold", WaitActivity), at("2h5m"))
    assert (woken.next, woken.outcome) == ("listen", "elapsed")


def test_wait_for_event_waits_for_the_type_with_a_timeout():
    result = run("listen")
    assert result.wait == Wait("event", at("1d"), "order.placed")
    activity = step("listen", WaitForEventActivity)
    ctx = context("listen")
    assert (
        wait_for_event.on_event(ctx, activity, T0).next,
        wait_for_event.on_event(ctx, activity, T0).outcome,
    ) == (
        "award",
        "event",
    )
    timeout = wait_for_event.on_timer(ctx, activity, T0)
    assert (timeout.next, timeout.outcome) == ("done", "timeout")


@pytest.mark.parametrize(
    ("trigger_data", "matches"),
    [({"total": 10}, True), ({"total": 0}, False), ({}, False), ({"total": "x"}, False)],
)
def test_wait_for_event_condition_reads_the_trigger(trigger_data, matches):
    trigger = EventContext(event_id="e2", type="order.placed", data=trigger_data, occurred_at=T0)
    ctx = context("listen", trigger=trigger)
    assert wait_for_event.matches(ctx, step("listen", WaitForEventActivity)) is matches


# --- split ------------------------------------------------------------------------------


def test_split_is_sticky_per_profile():
    first = run("vip", visit=1)
    assert all(run("vip", visit=v, now=at(f"{v}d")).next == first.next for v in range(2, 6))
    assert split.bucket("p-42", "shop", "vip") == split.bucket("p-42", "shop", "vip")


def test_split_hash_is_stable_across_processes_and_releases():
    # Changing the hash would move live profiles between paths: this value must never change.
    assert split.bucket("p-42", "ab", "split") == 0.20598950225624416


def test_split_follows_the_weights_over_many_profiles():
    activity = step("vip", SplitActivity)
    counts: Counter[str] = Counter()
    for n in range(10_000):
        ctx = context("vip")
        ctx.profile_id = f"profile-{n}"
        counts[str(split.run(ctx, activity, T0).outcome)] += 1
    assert set(counts) == {"control", "1", "holdout"}
    assert abs(counts["control"] - 7000) < 250
    assert abs(counts["1"] - 2000) < 200
    assert abs(counts["holdout"] - 1000) < 150


def test_split_paths_differ_between_activities_for_the_same_profiles():
    same = sum(
        (split.bucket(f"p-{n}", "shop", "a") < 0.5) == (split.bucket(f"p-{n}", "shop", "b") < 0.5)
        for n in range(2000)
    )
    assert 850 < same < 1150  # independent, not correlated


# --- whatsapp -----------------------------------------------------------------------------


def test_whatsapp_renders_every_parameter_from_the_profile_and_the_event():
    profile = {**ANA, "first_name": "María José"}
    result = run("remind", profile=profile, visit=4)
    send = result.send
    assert send is not None
    assert (result.next, result.outcome, result.message_id) == (
        "hold",
        "sent",
        "shop:3:p-42:remind:4",
    )
    assert send.message_id == "shop:3:p-42:remind:4"
    assert send.parameters.header == ["María José"]
    assert send.parameters.body == ["María José", "42.5", "3"]
    assert send.parameters.buttons == ["cart/shop:3:p-42:1"]
    assert send.media is not None
    assert (send.media.type, send.media.link) == ("image", "https://cdn.example.com/sku-1.png")
    assert (send.to, send.consent, send.template, send.language) == (
        "+34600111222",
        "opted_in",
        "cart_reminder",
        "es",
    )
    assert (send.requested_at, send.trigger_at) == (T0, T0)
    assert (send.on_paused, send.wait_until) == ("skip", None)
    assert result.delivery is None


def test_a_step_that_waits_for_a_paused_template_sends_its_deadline():
    journey = parse_journey(
        JOURNEY.replace("    next: hold\n", "    on_paused: wait\n    next: hold\n")
    )
    ctx = context("remind", definition=journey)
    deadline = T0 + timedelta(days=3)
    ctx = StepContext(
        **{**{f: getattr(ctx, f) for f in StepContext.__slots__}, "deadline": deadline}
    )
    send = run_activity(ctx, journey.activities["remind"], T0).send
    assert send is not None
    assert (send.on_paused, send.wait_until) == ("wait", deadline)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Ana", "Ana"),
        (42.5, "42.5"),
        (42.0, "42"),
        (7, "7"),
        (True, "true"),
        (0.1, "0.1"),
        (1e20, "1e+20"),
        (datetime(2026, 11, 24, 10, tzinfo=UTC), "2026-11-24T10:00:00+00:00"),
        (b"abc", "abc"),
    ],
)
def test_render_value(value, text):
    assert whatsapp.render_value(value) == text


@pytest.mark.parametrize("value", [None, [1], {"a": 1}])
def test_render_value_refuses_what_is_not_text(value):
    with pytest.raises(ValueError):
        whatsapp.render_value(value)


@pytest.mark.parametrize(
    ("data", "profile", "title"),
    [
        (
            {"items": 3, "sku": "s"},
            None,
            "body parameter 2 (event.data.cart_total): no such key 'cart_total'",
        ),
        (
            {**ENTRY_DATA},
            {**ANA, "first_name": "  "},
            "header parameter 1 (profile.first_name): rendered empty",
        ),
        (
            {**ENTRY_DATA, "cart_total": None},
            None,
            "body parameter 2 (event.data.cart_total): gave null",
        ),
        ({**ENTRY_DATA, "sku": 5}, None, "media link"),
    ],
)
def test_a_template_that_cannot_render_is_skipped_and_takes_on_error(data, profile, title):
    result = run("remind", data=data, profile=profile)
    assert result.send is None
    assert (result.next, result.outcome, result.message_id) == (
        "done",
        "template_error",
        "shop:3:p-42:remind:1",
    )
    delivery = result.delivery
    assert delivery is not None and delivery.error is not None
    assert (delivery.status, delivery.error.reason, delivery.error.retriable) == (
        DeliveryStatus.SKIPPED,
        SkipReason.TEMPLATE_ERROR,
        False,
    )
    assert delivery.error.title.startswith(title)
    assert (delivery.template, delivery.language, delivery.activity_id) == (
        "cart_reminder",
        "es",
        "remind",
    )


def test_a_template_error_without_on_error_continues_to_next():
    definition = parse_journey(
        JOURNEY.replace("    next: hold\n    on_error: done\n", "    next: hold\n")
    )
    result = run("remind", definition=definition, data={})
    assert (result.next, result.outcome) == ("hold", "template_error")


def test_consent_and_phone_are_passed_on_for_the_connector_to_check():
    result = run("remind", profile={"first_name": "Ana", "whatsapp_consent": "maybe", "phone": 5})
    assert result.send is not None
    assert (result.send.to, result.send.consent) == (None, "unknown")


QUIET = {"start": "21:00", "end": "09:00", "timezone": "profile", "default_timezone": "UTC"}


@pytest.mark.parametrize(
    ("quiet", "zone", "now", "end"),
    [
        # window across midnight, profile in Madrid (UTC+1 in November)
        (QUIET, "Europe/Madrid", "2026-11-24T19:59:00+00:00", None),
        (QUIET, "Europe/Madrid", "2026-11-24T20:00:00+00:00", "2026-11-25T08:00:00+00:00"),
        (QUIET, "Europe/Madrid", "2026-11-24T23:30:00+00:00", "2026-11-25T08:00:00+00:00"),
        (QUIET, "Europe/Madrid", "2026-11-25T07:59:00+00:00", "2026-11-25T08:00:00+00:00"),
        (QUIET, "Europe/Madrid", "2026-11-25T08:00:00+00:00", None),
        # no usable profile zone: the default zone
        (QUIET, None, "2026-11-24T21:30:00+00:00", "2026-11-25T09:00:00+00:00"),
        (QUIET, "Not/AZone", "2026-11-24T20:30:00+00:00", None),
        # a fixed zone wins over the profile's
        (
            {**QUIET, "timezone": "America/New_York"},
            "Europe/Madrid",
            "2026-11-25T03:00:00+00:00",
            "2026-11-25T14:00:00+00:00",
        ),
        # a window inside one day
        (
            {**QUIET, "start": "12:00", "end": "14:00"},
            "UTC",
            "2026-11-24T13:00:00+00:00",
            "2026-11-24T14:00:00+00:00",
        ),
        ({**QUIET, "start": "12:00", "end": "14:00"}, "UTC", "2026-11-24T14:00:00+00:00", None),
        # the spring-forward night in Madrid (02:00 -> 03:00 on 2026-03-29); the end is 09:00 CEST
        (QUIET, "Europe/Madrid", "2026-03-29T00:30:00+00:00", "2026-03-29T07:00:00+00:00"),
        # a window that ends inside the skipped hour never wakes in the past
        (
            {**QUIET, "start": "01:00", "end": "02:30"},
            "Europe/Madrid",
            "2026-03-29T00:59:00+00:00",
            "2026-03-29T01:30:00+00:00",
        ),
    ],
)
def test_quiet_hours_end(quiet, zone, now, end):
    got = whatsapp.quiet_hours_end(
        QuietHours.model_validate(quiet), zone, datetime.fromisoformat(now)
    )
    assert got == (datetime.fromisoformat(end) if end else None)


def test_quiet_hours_delay_and_skip_at_the_activity():
    delayed = parse_journey(
        JOURNEY.replace("start: pick", "quiet_hours: {start: '21:00', end: '09:00'}\nstart: pick")
    )
    result = run("remind", definition=delayed, now=at("11h"))  # 21:00 UTC = 22:00 Madrid
    assert result.wait == Wait("quiet_hours", at("22h"))
    assert (result.send, result.delivery, result.next) == (None, None, None)

    skipping = parse_journey(
        JOURNEY.replace(
            "start: pick", "quiet_hours: {start: '21:00', end: '09:00', action: skip}\nstart: pick"
        )
    )
    result = run("remind", definition=skipping, now=at("11h"))
    assert (result.next, result.outcome, result.send) == ("hold", "quiet_hours", None)
    assert result.delivery is not None and result.delivery.error is not None
    assert result.delivery.error.reason == SkipReason.QUIET_HOURS


@pytest.mark.parametrize(
    ("sends", "capped"),
    [
        ((), False),
        ((at("-23h"),), False),
        ((at("-23h"), at("-1h")), True),
        ((at("-1d"), at("-1h")), False),  # exactly one window ago no longer counts
        ((at("-3d"), at("-2d"), at("-1h")), False),
    ],
)
def test_frequency_cap_counts_sends_inside_the_window(sends, capped):
    definition = parse_journey(
        JOURNEY.replace(
            "start: pick", "frequency_cap: {channel: whatsapp, max: 2, per: 1d}\nstart: pick"
        )
    )
    result = run("remind", definition=definition, sends=sends)
    assert (result.outcome == "frequency_capped") is capped
    assert (result.send is None) is capped


# --- http, jump, end --------------------------------------------------------------------------


def test_http_evaluates_the_body_and_asks_for_a_call():
    trigger = EventContext(event_id="e2", type="order.placed", data={"total": 12.5}, occurred_at=T0)
    result = run("award", trigger=trigger, visit=2, now=at("1m"))
    call = result.http_call
    assert call is not None
    assert call.request_id == "shop:3:p-42:1:award:2"
    assert call.body == {
        "who": "shop:3:p-42:1",
        "at": "2026-11-24T10:01:00+00:00",
        "total": 12.5,
        "tags": ["a", "b"],
    }
    assert (call.method, call.url, call.timeout_seconds) == (
        "POST",
        "https://crm.example.com/award",
        10.0,
    )
    assert result.wait == Wait("http", at("1m10s"), "http.response")


def test_http_body_error_takes_on_error():
    result = run("award")  # no trigger: trigger.data is missing
    assert (result.next, result.outcome, result.http_call) == ("done", "error", None)


@pytest.mark.parametrize(
    ("ok", "status", "next_id", "outcome"),
    [(True, 200, "away", "ok"), (False, 500, "done", "error")],
)
def test_http_response(ok, status, next_id, outcome):
    result = http.on_response(context("award"), step("award", HttpActivity), ok, status)
    assert (result.next, result.outcome) == (next_id, outcome)


def test_http_timeout():
    result = http.on_timer(context("award"), step("award", HttpActivity), T0)
    assert (result.next, result.outcome, result.detail) == (
        "done",
        "timeout",
        "no response within 10s",
    )


def test_jump_and_end():
    assert jump.run(context("away"), step("away", JumpActivity), T0).jump_to == "other"
    finished = end.run(context("done"), step("done", EndActivity), T0)
    assert (finished.exit, finished.next, finished.outcome) == (
        ExitReason.COMPLETED,
        None,
        "completed",
    )
