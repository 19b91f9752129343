"""The interpreter end to end: given journey YAML and events at times, these steps and effects.

No Kafka and no clock: every call passes `now`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from engine.core.admission import check_event_time, delivery_to_event
from engine.core.interpreter import apply_event, apply_timers, new_profile_state
from schemas.common import json_bytes
from schemas.messages import DeliveryError, DeliveryEvent, DeliveryStatus, SkipReason
from schemas.state import ProfileState
from schemas.steps import ExitReason, RefusalRule
from tests.unit import ANA, T0, Profile, at, catalog_of, deployment, event, steps

CART = """
id: cart-recovery
name: Abandoned cart recovery
entry:
  event: cart.abandoned
  condition: 'event.data.cart_total > 20'
reentry: {mode: after, wait: 7d}
exit_on: [{event: order.placed}]
timeout: 30d
frequency_cap: {channel: whatsapp, max: 2, per: 1d}
quiet_hours: {start: '21:00', end: '09:00', timezone: profile, action: delay}
start: wait-1h
activities:
  wait-1h: {type: wait, duration: 1h, next: pick-language}
  pick-language:
    type: condition
    branches:
      - {when: 'profile.language == "es"', next: send-es}
    else: send-en
  send-es:
    type: whatsapp
    template: cart_reminder
    language: es
    parameters: {body: ['profile.first_name', 'string(event.data.cart_total)']}
    next: wait-order
  send-en: {type: whatsapp, template: cart_reminder, language: en,
            parameters: {body: ['profile.first_name', 'string(event.data.cart_total)']},
            next: wait-order}
  wait-order: {type: wait_for_event, event: order.placed, timeout: 24h,
               next: done, on_timeout: done}
  done: {type: end}
"""


def one_send(reentry: str = "always", extra: str = "", template: str = "promo") -> str:
    """A journey that sends one template on `go` and ends."""
    return f"""
id: promo
name: Promo
entry: {{event: go}}
reentry: {{mode: {reentry}}}
{extra}
start: send
activities:
  send:
    type: whatsapp
    template: {template}
    language: es
    parameters: {{body: ['profile.first_name']}}
    next: done
  done: {{type: end}}
"""


# --- the cart journey of DESIGN.md ----------------------------------------------------


def test_cart_recovery_sends_the_spanish_reminder_an_hour_after_the_cart_is_abandoned():
    ana = Profile(CART)
    fx = ana.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5, "items": 3})
    assert steps(fx) == [("entered", "wait-1h")]
    assert fx.sends == []
    assert ana.state.next_due() == at("1h")

    assert steps(ana.tick("59m")) == []
    assert ana.last is not None and ana.last.changed is False

    fx = ana.tick("1h")
    assert steps(fx) == [("wait-1h", "elapsed"), ("pick-language", "0"), ("send-es", "sent")]
    [send] = fx.sends
    assert send.message_id == "cart-recovery:1:p-42:send-es:1"
    assert (send.journey_id, send.journey_version, send.activity_id) == (
        "cart-recovery",
        1,
        "send-es",
    )
    assert (send.to, send.consent, send.template, send.language) == (
        "+34600111222",
        "opted_in",
        "cart_reminder",
        "es",
    )
    assert send.parameters.body == ["Ana", "42.5"]
    assert send.requested_at == at("1h")
    assert send.trigger_at == at("1h")  # a timer woke the step: latency counts from it
    assert ana.journeys == {"cart-recovery": "wait-order"}
    assert ana.state.instances["cart-recovery"].pending_message_id == send.message_id
    assert ana.state.next_due() == at("25h")


def test_effects_serialize_as_their_json_dump_does():
    """The runtime writes effects with json_bytes; consumers read model_dump's JSON."""
    ana = Profile(CART)
    fx = ana.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5, "items": 3})
    later = ana.tick("1h")
    models = [*fx.steps, *later.steps, *later.sends]
    assert len(models) >= 5 and later.sends
    for model in models:
        assert json_bytes(model) == orjson.dumps(model.model_dump(mode="json"))


def test_cart_recovery_in_english_times_out_waiting_for_the_order():
    bob = Profile(CART)
    bob.event(
        "cart.abandoned",
        "0s",
        attributes={"language": "en", "first_name": "Bob"},
        data={"cart_total": 99},
    )
    fx = bob.tick("1h")
    assert steps(fx) == [("wait-1h", "elapsed"), ("pick-language", "else"), ("send-en", "sent")]
    assert fx.sends[0].parameters.body == ["Bob", "99"]
    assert fx.sends[0].consent == "unknown" and fx.sends[0].to is None

    fx = bob.tick("25h")
    assert steps(fx) == [("wait-order", "timeout"), ("done", "completed"), ("exited", "completed")]
    assert bob.journeys == {}
    history = bob.state.history["cart-recovery"]
    assert history.last_exited_at == at("25h")
    assert history.visits == {
        "wait-1h": 1,
        "pick-language": 1,
        "send-en": 1,
        "wait-order": 1,
        "done": 1,
    }
    assert bob.state.next_due() is None


def test_an_order_ends_the_cart_journey_through_its_exit_criterion():
    ana = Profile(CART)
    ana.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5})
    ana.tick("1h")
    fx = ana.event("order.placed", "2h", data={"total": 42.5})
    assert steps(fx) == [("exited", "exit_event")]
    assert fx.steps[0].activity_id == "wait-order"
    assert fx.steps[0].detail == "exit event order.placed"
    assert fx.steps[0].event_id == ana.state.seen_event_ids[-1]
    assert ana.journeys == {}


@pytest.mark.parametrize(
    ("data", "enters"),
    [
        ({"cart_total": 42.5}, True),
        ({"cart_total": 20}, False),
        ({"items": 3}, False),  # the condition cannot be evaluated: no entry, no crash
        ({"cart_total": "lots"}, False),
    ],
)
def test_the_entry_condition_decides_who_enters(data, enters):
    ana = Profile(CART)
    fx = ana.event("cart.abandoned", "0s", attributes=ANA, data=data)
    assert steps(fx) == ([("entered", "wait-1h")] if enters else [])
    history = ana.state.history["cart-recovery"]
    assert history.entries == int(enters)
    refusal = history.last_refusal
    assert (refusal is None) is enters
    if refusal is not None:
        assert refusal.rule == RefusalRule.ENTRY_CONDITION
        assert refusal.event_id == ana.state.seen_event_ids[-1]
        assert (refusal.detail == "entry condition is false") is isinstance(
            data.get("cart_total"), int | float
        )


def test_refusals_at_entry_are_counted_with_the_latest_rule_and_no_record():
    p = Profile(WELCOME.format(reentry="{mode: never}"))
    p.event("signup", "0s")
    assert steps(p.event("signup", "10m")) == []  # still live
    history = p.state.history["welcome"]
    assert history.last_refusal is not None
    assert (history.refused, history.last_refusal.rule) == (1, RefusalRule.ALREADY_IN)
    p.tick("1h")
    assert steps(p.event("signup", "2h")) == []
    assert history.last_refusal.rule == RefusalRule.REENTRY
    assert history.last_refusal.detail.startswith("re-entry is never allowed")
    assert (history.refused, history.last_refusal.at) == (2, at("2h"))
    p.event("other", "3h")  # not an entry event: nothing counted
    assert history.refused == 2


def test_a_refusal_at_entry_survives_the_state_round_trip():
    p = Profile(CART)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 1})
    again = ProfileState.model_validate_json(json_bytes(p.state))
    assert again.history == p.state.history
    assert again.history["cart-recovery"].refused == 1


def test_an_entry_without_condition_admits_every_event_of_its_type():
    p = Profile(one_send())
    assert steps(p.event("go", "0s", attributes=ANA)) == [
        ("entered", "send"),
        ("send", "sent"),
        ("done", "completed"),
        ("exited", "completed"),
    ]
    assert steps(p.event("other", "1m")) == []


# --- re-entry -----------------------------------------------------------------------

WELCOME = """
id: welcome
name: Welcome
entry: {{event: signup}}
reentry: {reentry}
start: pause
activities:
  pause: {{type: wait, duration: 1h, next: done}}
  done: {{type: end}}
"""


@pytest.mark.parametrize(
    ("reentry", "signups", "entered"),
    [
        ("{mode: never}", ["0s", "2h", "30d"], [True, False, False]),
        ("{mode: always}", ["0s", "30m", "2h"], [True, False, True]),  # 30m: still live
        ("{mode: after, wait: 1d}", ["0s", "2h", "1d", "25h"], [True, False, True, False]),
    ],
)
def test_reentry_rules(reentry, signups, entered):
    p = Profile(WELCOME.format(reentry=reentry))
    got = [("entered", "pause") in steps(p.event("signup", when)) for when in signups]
    assert got == entered
    assert p.state.history["welcome"].entries == sum(entered)


def test_reentry_counts_instances_and_keeps_message_ids_unique():
    p = Profile(one_send())
    first = p.event("go", "0s", attributes=ANA).sends[0]
    second = p.event("go", "1h").sends[0]
    assert (first.message_id, second.message_id) == ("promo:1:p-42:send:1", "promo:1:p-42:send:2")
    assert p.last is not None
    assert [s.instance_id for s in p.last.effects.steps] == ["promo:1:p-42:2"] * 4


# --- exits and timeouts --------------------------------------------------------------

WAITING_FOR_PAYMENT = """
id: payment
name: Payment reminder
entry: {event: invoice.created}
exit_on:
  - {event: invoice.paid, condition: 'trigger.data.amount >= event.data.amount'}
  - {event: account.closed}
timeout: 2h
start: pause
activities:
  pause: {type: wait, duration: 1d, next: done}
  done: {type: end}
"""


def test_exit_criteria_with_a_condition_over_the_trigger_and_the_entry_event():
    p = Profile(WAITING_FOR_PAYMENT)
    p.event("invoice.created", "0s", data={"amount": 100})
    assert steps(p.event("invoice.paid", "10m", data={"amount": 40})) == []
    assert steps(p.event("invoice.paid", "20m", data={})) == []  # unevaluable: no match
    assert steps(p.event("invoice.paid", "30m", data={"amount": 100})) == [("exited", "exit_event")]


def test_exit_criteria_without_condition():
    p = Profile(WAITING_FOR_PAYMENT)
    p.event("invoice.created", "0s", data={"amount": 100})
    assert steps(p.event("account.closed", "1m")) == [("exited", "exit_event")]


def test_the_global_timeout_ends_an_instance_at_its_deadline():
    p = Profile(WAITING_FOR_PAYMENT)
    p.event("invoice.created", "0s", data={"amount": 100})
    assert p.state.next_due() == at("2h")  # the deadline comes before the 1d wait
    assert steps(p.tick("119m")) == []
    fx = p.tick("2h")
    assert steps(fx) == [("exited", "timeout")]
    assert fx.steps[0].detail == "journey timeout of 2h reached"


def test_a_late_worker_applies_the_deadline_before_a_timer_that_is_also_due():
    p = Profile(WAITING_FOR_PAYMENT)
    p.event("invoice.created", "0s", data={"amount": 100})
    assert steps(p.tick("3d")) == [("exited", "timeout")]


# --- frequency cap ------------------------------------------------------------------


def test_the_frequency_cap_skips_sends_over_the_limit_in_the_window():
    p = Profile(one_send(extra="frequency_cap: {channel: whatsapp, max: 2, per: 1d}"))
    p.event("profile.updated", "-1h", attributes=ANA)
    sent = []
    for when in ["0s", "1h", "2h", "1441m"]:
        fx = p.event("go", when)
        sent.append(
            (
                when,
                [s.message_id for s in fx.sends],
                [d.error.reason for d in fx.deliveries if d.error],
            )
        )
    assert sent == [
        ("0s", ["promo:1:p-42:send:1"], []),
        ("1h", ["promo:1:p-42:send:2"], []),
        ("2h", [], [SkipReason.FREQUENCY_CAPPED]),
        ("1441m", ["promo:1:p-42:send:4"], []),  # the 0s send left the 1d window
    ]
    skipped = p.state.history["promo"].visits["send"]
    assert skipped == 4
    # Send times older than the longest cap window are forgotten.
    assert p.state.sends["whatsapp"] == [at("1h"), at("1441m")]


def test_a_frequency_capped_skip_is_a_delivery_event_for_analysts():
    p = Profile(one_send(extra="frequency_cap: {channel: whatsapp, max: 1, per: 1h}"))
    p.event("go", "0s", attributes=ANA)
    fx = p.event("go", "10m")
    assert steps(fx) == [
        ("entered", "send"),
        ("send", "frequency_capped"),
        ("done", "completed"),
        ("exited", "completed"),
    ]
    [skip] = fx.deliveries
    assert skip.status == DeliveryStatus.SKIPPED
    assert skip.message_id == "promo:1:p-42:send:2"
    assert skip.error == DeliveryError(
        title="frequency cap of 1 per 1h reached",
        retriable=False,
        reason=SkipReason.FREQUENCY_CAPPED,
    )
    assert skip.occurred_at == at("10m")


# --- quiet hours --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quiet_hours", "attributes", "sent_at"),
    [
        # The event is at 20:30 UTC: 21:30 in Madrid, 15:30 in New York, 05:30 in Tokyo.
        # the profile's zone: Madrid is quiet until 09:00 local = 08:00 UTC the next day
        ("{start: '21:00', end: '09:00', timezone: profile, action: delay}", ANA, "22h"),
        # New York is not quiet at 15:30
        (
            "{start: '21:00', end: '09:00', timezone: profile, action: delay}",
            {**ANA, "timezone": "America/New_York"},
            "10h30m",
        ),
        # a fixed zone ignores the profile's
        (
            "{start: '21:00', end: '09:00', timezone: Europe/Madrid, action: delay}",
            {**ANA, "timezone": "America/New_York"},
            "22h",
        ),
        # no zone on the profile: the default zone (UTC) is not quiet at 20:30
        (
            "{start: '21:00', end: '09:00', timezone: profile, action: delay}",
            {"first_name": "Ana"},
            "10h30m",
        ),
        # no zone on the profile, Tokyo by default: quiet until 09:00 JST = 00:00 UTC
        (
            "{start: '21:00', end: '09:00', timezone: profile, default_timezone: Asia/Tokyo}",
            {"first_name": "Ana"},
            "14h",
        ),
    ],
)
def test_quiet_hours_delay_in_the_right_time_zone(quiet_hours, attributes, sent_at):
    p = Profile(one_send(extra=f"quiet_hours: {quiet_hours}"))
    p.event("profile.updated", "0s", attributes=attributes)
    fx = p.event("go", "10h30m")
    if sent_at == "10h30m":
        assert [s.message_id for s in fx.sends] == ["promo:1:p-42:send:1"]
        return
    assert steps(fx) == [("entered", "send")]
    assert fx.sends == []
    instance = p.state.instances["promo"]
    assert (instance.waiting, instance.wake_at) == ("quiet_hours", at(sent_at))
    assert p.state.next_due() == at(sent_at)
    assert steps(p.tick(at(sent_at) - timedelta(seconds=1))) == []
    fx = p.tick(sent_at)
    assert steps(fx) == [("send", "sent"), ("done", "completed"), ("exited", "completed")]
    assert fx.steps[0].detail == "delayed by quiet hours"
    # One visit, one message id: the delayed step re-ran without counting again.
    assert [s.message_id for s in fx.sends] == ["promo:1:p-42:send:1"]
    assert fx.sends[0].requested_at == at(sent_at)
    assert p.state.history["promo"].visits == {"send": 1, "done": 1}
    assert steps(p.tick(sent_at)) == []


def test_quiet_hours_after_midnight_end_the_same_morning():
    p = Profile(one_send(extra="quiet_hours: {start: '21:00', end: '09:00', timezone: profile}"))
    p.event("profile.updated", "0s", attributes=ANA)
    p.event("go", "15h")  # 01:00 UTC = 02:00 Madrid
    assert p.state.instances["promo"].wake_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def test_quiet_hours_skip_drops_the_message_and_goes_on():
    p = Profile(one_send(extra="quiet_hours: {start: '21:00', end: '09:00', action: skip}"))
    p.event("profile.updated", "0s", attributes=ANA)
    fx = p.event("go", "10h30m")
    assert steps(fx) == [
        ("entered", "send"),
        ("send", "quiet_hours"),
        ("done", "completed"),
        ("exited", "completed"),
    ]
    assert fx.sends == []
    [skip] = fx.deliveries
    assert skip.error is not None
    assert skip.error.reason == SkipReason.QUIET_HOURS
    assert skip.error.title == "quiet hours 21:00-09:00 until 2026-11-25T08:00:00+00:00"


# --- waits ------------------------------------------------------------------------------


def wait_until(expression: str) -> str:
    return f"""
id: reminder
name: Appointment reminder
entry: {{event: appointment.booked}}
start: hold
activities:
  hold: {{type: wait, until: '{expression}', next: done}}
  done: {{type: end}}
"""


@pytest.mark.parametrize(
    ("until", "data", "wake_at"),
    [
        ('event.occurred_at + duration("2h")', {}, "2h"),
        ('timestamp(event.data.at) - duration("24h")', {"at": "2026-11-27T10:00:00Z"}, "2d"),
        ("event.data.at", {"at": "2026-11-25T10:00:00+00:00"}, "1d"),  # an ISO string
    ],
)
def test_wait_until_a_computed_time(until, data, wake_at):
    p = Profile(wait_until(until))
    assert steps(p.event("appointment.booked", "0s", data=data)) == [("entered", "hold")]
    assert p.state.instances["reminder"].wake_at == at(wake_at)
    assert steps(p.tick(wake_at)) == [
        ("hold", "elapsed"),
        ("done", "completed"),
        ("exited", "completed"),
    ]


def test_wait_until_a_past_time_continues_at_once():
    p = Profile(wait_until("event.data.at"))
    fx = p.event("appointment.booked", "0s", data={"at": "2026-01-01T00:00:00Z"})
    assert steps(fx) == [
        ("entered", "hold"),
        ("hold", "elapsed"),
        ("done", "completed"),
        ("exited", "completed"),
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "no such key 'at'"),
        ({"at": 5}, "gave int, not a time"),
        ({"at": "soon"}, "'soon' is not an ISO-8601 time"),
        ({"at": "2026-11-25T10:00:00"}, "has no UTC offset"),
    ],
)
def test_wait_until_that_cannot_be_computed_ends_the_instance_with_the_reason(data, reason):
    p = Profile(wait_until("event.data.at"))
    fx = p.event("appointment.booked", "0s", data=data)
    assert steps(fx) == [("entered", "hold"), ("hold", "error"), ("exited", "error")]
    assert fx.steps[-1].reason == ExitReason.ERROR
    assert reason in (fx.steps[-1].detail or "")


FEEDBACK = """
id: feedback
name: Feedback
entry: {event: order.delivered}
start: ask
activities:
  ask: {type: wait_for_event, event: review.posted, condition: 'trigger.data.stars >= 1',
        timeout: 3d, next: thanks, on_timeout: nudge}
  thanks: {type: end}
  nudge: {type: end}
"""


def test_wait_for_event_continues_when_a_matching_event_arrives():
    p = Profile(FEEDBACK)
    p.event("order.delivered", "0s")
    assert p.state.instances["feedback"].wait_event == "review.posted"
    assert steps(p.event("review.posted", "1h", data={"stars": 0})) == []  # condition false
    assert steps(p.event("review.posted", "2h", data={})) == []  # condition cannot be evaluated
    assert steps(p.event("review.edited", "3h", data={"stars": 5})) == []
    fx = p.event("review.posted", "4h", data={"stars": 5})
    assert steps(fx) == [("ask", "event"), ("thanks", "completed"), ("exited", "completed")]


def test_wait_for_event_times_out():
    p = Profile(FEEDBACK)
    p.event("order.delivered", "0s")
    assert steps(p.tick("3d")) == [
        ("ask", "timeout"),
        ("nudge", "completed"),
        ("exited", "completed"),
    ]


def test_a_due_timeout_is_applied_before_an_event_processed_after_it():
    p = Profile(FEEDBACK)
    p.event("order.delivered", "0s")
    fx = p.event("review.posted", "71h", now="73h", data={"stars": 5})
    assert steps(fx) == [("ask", "timeout"), ("nudge", "completed"), ("exited", "completed")]
    assert fx.steps[0].event_id is None  # the timer did it, not the event


READ_RECEIPT = """
id: read-check
name: Did they read it
entry: {event: go}
start: send
activities:
  send: {type: whatsapp, template: promo, language: es, parameters: {body: ['profile.first_name']},
         next: wait-read}
  wait-read: {type: wait_for_event, event: whatsapp.read, timeout: 1d,
              next: read, on_timeout: unread}
  read: {type: end}
  unread: {type: end}
"""


def read_receipt(message_id: str, status: DeliveryStatus = DeliveryStatus.READ) -> DeliveryEvent:
    return DeliveryEvent(
        message_id=message_id,
        wamid="wamid.1",
        journey_id=message_id.split(":")[0],
        journey_version=1,
        activity_id="send",
        profile_id="p-42",
        template="promo",
        language="es",
        status=status,
        occurred_at=at("5m"),
    )


def test_a_delivery_wait_matches_only_the_instances_own_message():
    p = Profile(READ_RECEIPT)
    p.event("go", "0s", attributes=ANA)
    own = "read-check:1:p-42:send:1"
    assert p.state.instances["read-check"].pending_message_id == own
    other = p.apply(delivery_to_event(read_receipt("promo:1:p-42:send:1")), at("5m"))
    assert steps(other) == []
    delivered = p.apply(delivery_to_event(read_receipt(own, DeliveryStatus.DELIVERED)), at("6m"))
    assert steps(delivered) == []
    fx = p.apply(delivery_to_event(read_receipt(own)), at("7m"))
    assert steps(fx) == [("wait-read", "event"), ("read", "completed"), ("exited", "completed")]


def test_an_inbound_message_matches_any_waiting_instance():
    p = Profile(READ_RECEIPT.replace("whatsapp.read", "whatsapp.inbound"))
    p.event("go", "0s", attributes=ANA)
    fx = p.event("whatsapp.inbound", "1m", data={"text": "hola"})
    assert steps(fx) == [("wait-read", "event"), ("read", "completed"), ("exited", "completed")]


# --- http ---------------------------------------------------------------------------

LOYALTY = """
id: loyalty
name: Loyalty points
entry: {event: order.placed}
start: award
activities:
  award:
    type: http
    method: POST
    url: https://crm.example.com/points
    body: {profile: 'journey.instance_id', points: 'int(event.data.total) * 10'}
    timeout: 30s
    next: done
    on_error: failed
  done: {type: end}
  failed: {type: end}
"""


def http_response(request_id: str, ok: bool, status: int | None, when: str = "10s"):
    return event("http.response", when, data={"request_id": request_id, "ok": ok, "status": status})


def test_an_http_action_asks_the_connector_and_waits_for_its_answer():
    p = Profile(LOYALTY)
    fx = p.event("order.placed", "0s", data={"total": 12.9})
    [call] = fx.http_calls
    assert call.request_id == "loyalty:1:p-42:1:award:1"
    assert (call.method, call.url, call.timeout_seconds) == (
        "POST",
        "https://crm.example.com/points",
        30.0,
    )
    assert call.body == {"profile": "loyalty:1:p-42:1", "points": 120}
    assert (call.instance_id, call.journey_id, call.journey_version, call.activity_id) == (
        "loyalty:1:p-42:1",
        "loyalty",
        1,
        "award",
    )
    instance = p.state.instances["loyalty"]
    assert (instance.waiting, instance.wake_at) == ("http", at("30s"))

    assert steps(p.apply(http_response("someone-else:award:1", True, 200), at("10s"))) == []
    fx = p.apply(http_response(call.request_id, True, 200), at("11s"))
    assert steps(fx) == [("award", "ok"), ("done", "completed"), ("exited", "completed")]


def test_an_http_error_takes_on_error():
    p = Profile(LOYALTY)
    call = p.event("order.placed", "0s", data={"total": 1}).http_calls[0]
    fx = p.apply(http_response(call.request_id, False, 503), at("5s"))
    assert steps(fx) == [("award", "error"), ("failed", "completed"), ("exited", "completed")]
    assert fx.steps[0].detail == "HTTP status 503"


def test_an_http_timeout_takes_on_error_and_a_late_answer_is_ignored():
    p = Profile(LOYALTY)
    call = p.event("order.placed", "0s", data={"total": 1}).http_calls[0]
    fx = p.tick("30s")
    assert steps(fx) == [("award", "timeout"), ("failed", "completed"), ("exited", "completed")]
    assert steps(p.apply(http_response(call.request_id, True, 200, "40s"), at("40s"))) == []


def test_an_http_body_that_cannot_be_evaluated_takes_on_error_without_a_call():
    p = Profile(LOYALTY)
    fx = p.event("order.placed", "0s", data={})
    assert fx.http_calls == []
    assert steps(fx) == [
        ("entered", "award"),
        ("award", "error"),
        ("failed", "completed"),
        ("exited", "completed"),
    ]


# --- jump and end -------------------------------------------------------------------

ONBOARDING = """
id: onboarding
name: Onboarding
entry: {event: signup}
start: to-nurture
activities:
  to-nurture: {type: jump, journey: nurture}
"""

NURTURE = """
id: nurture
name: Nurture
entry: {event: never.happens}
start: hello
activities:
  hello: {type: whatsapp, template: hello, language: es, parameters: {body: ['event.type']},
          next: done}
  done: {type: end}
"""


def test_a_jump_ends_the_instance_and_enters_the_target_with_the_same_entry_event():
    p = Profile(ONBOARDING, NURTURE)
    fx = p.event("signup", "0s", attributes=ANA, event_id="evt-signup")
    assert steps(fx) == [
        ("entered", "to-nurture"),
        ("to-nurture", "jumped"),
        ("exited", "jumped"),
        ("entered", "hello"),
        ("hello", "sent"),
        ("done", "completed"),
        ("exited", "completed"),
    ]
    assert fx.steps[2].detail == "nurture"
    assert fx.steps[3].instance_id == "nurture:1:p-42:1"
    assert fx.sends[0].parameters.body == ["signup"]  # `event` is still the signup
    assert p.state.history["nurture"].entries == 1


@pytest.mark.parametrize(
    ("catalog_setup", "outcome", "detail"),
    [
        ("missing", "target_not_found", "jump target 'nurture' not found"),
        ("paused", "target_not_active", "jump target 'nurture' not active (paused)"),
    ],
)
def test_a_jump_to_a_missing_or_inactive_journey_ends_with_error(catalog_setup, outcome, detail):
    catalog = catalog_of(ONBOARDING)
    if catalog_setup == "paused":
        catalog.apply(deployment(NURTURE, status="paused"))
    p = Profile(catalog=catalog)
    fx = p.event("signup", "0s")
    assert steps(fx) == [("entered", "to-nurture"), ("to-nurture", outcome), ("exited", "error")]
    assert fx.steps[1].detail == detail
    assert fx.steps[2].detail == detail
    assert p.journeys == {}


def test_a_jump_honours_the_target_re_entry_rule():
    p = Profile(
        ONBOARDING.replace("{event: signup}", "{event: signup}\nreentry: {mode: always}"), NURTURE
    )
    p.event("signup", "0s", attributes=ANA)
    fx = p.event("signup", "1h")
    assert steps(fx) == [
        ("entered", "to-nurture"),
        ("to-nurture", "not_admitted"),
        ("exited", "jumped"),
    ]
    assert fx.steps[1].detail == (
        "nurture: re-entry is never allowed and the profile has entered before"
    )


PING = """
id: ping
name: Ping
entry: {event: start}
reentry: {mode: always}
start: go
activities:
  go: {type: jump, journey: pong}
"""
PONG = (
    PING.replace("ping", "PONG")
    .replace("pong", "ping")
    .replace("PONG", "pong")
    .replace("{event: start}", "{event: never.happens}")
)


def test_a_jump_loop_without_waits_stops_at_the_step_limit():
    p = Profile(PING, PONG)
    fx = p.event("start", "0s")
    assert steps(fx)[-1] == ("exited", "error")
    assert fx.steps[-1].detail == "step limit: 200 steps without a wait"
    assert sum(1 for s in fx.steps if s.kind == "entered") == 201
    assert p.journeys == {}


# --- dedupe, attributes ---------------------------------------------------------------


def test_a_duplicate_event_is_processed_once():
    p = Profile(one_send())
    first = p.event("go", "0s", attributes=ANA, event_id="evt-1")
    assert len(first.sends) == 1
    again = p.event("go", "1m", event_id="evt-1")
    assert p.last is not None
    assert (p.last.duplicate, p.last.changed, steps(again), again.sends) == (True, False, [], [])
    assert p.state.updated_at == at("0s")


def test_the_dedupe_window_keeps_the_last_ids():
    state = new_profile_state("p-42")
    catalog = catalog_of()
    for n in range(5):
        apply_event(state, event("noise", "0s", event_id=f"e{n}"), catalog, T0, dedupe_window=3)
    assert state.seen_event_ids == ["e2", "e3", "e4"]
    assert (
        apply_event(
            state, event("noise", "0s", event_id="e0"), catalog, T0, dedupe_window=3
        ).duplicate
        is False
    )
    assert (
        apply_event(
            state, event("noise", "0s", event_id="e4"), catalog, T0, dedupe_window=3
        ).duplicate
        is True
    )


def test_attributes_merge_into_the_profile_and_none_keeps_the_old_value():
    p = Profile()
    p.event("profile.updated", "0s", attributes=ANA)
    p.event(
        "profile.updated",
        "1m",
        attributes={"first_name": "Anita", "language": None, "tier": "gold"},
    )
    assert p.state.attributes == {**ANA, "first_name": "Anita", "tier": "gold"}
    assert p.last is not None and p.last.changed is True
    assert p.state.updated_at == at("1m")


def test_steps_that_were_due_before_an_event_do_not_see_its_attributes():
    p = Profile(CART)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5})
    fx = p.event("profile.updated", "2h", attributes={"first_name": "Anita"})
    assert fx.sends[0].parameters.body == ["Ana", "42.5"]
    assert p.state.attributes["first_name"] == "Anita"


# --- journey status and versions ---------------------------------------------------------


def test_archiving_ends_live_instances_at_the_next_timer_or_event():
    catalog = catalog_of(WAITING_FOR_PAYMENT)
    first, second = (
        Profile(catalog=catalog, profile_id="p-1"),
        Profile(catalog=catalog, profile_id="p-2"),
    )
    first.event("invoice.created", "0s", data={"amount": 1})
    second.event("invoice.created", "0s", data={"amount": 1})
    catalog.apply(deployment(WAITING_FOR_PAYMENT, status="archived", deployed_at=at("1m")))
    fx = first.tick("2m")
    assert steps(fx) == [("exited", "archived")]
    assert steps(second.event("anything", "3m")) == [("exited", "archived")]
    assert steps(second.event("invoice.created", "4m", data={"amount": 1})) == []


def test_a_paused_journey_admits_nobody_but_its_instances_carry_on():
    catalog = catalog_of(FEEDBACK)
    p = Profile(catalog=catalog)
    p.event("order.delivered", "0s")
    catalog.apply(deployment(FEEDBACK, status="paused", deployed_at=at("1m")))
    newcomer = Profile(catalog=catalog, profile_id="p-2")
    assert steps(newcomer.event("order.delivered", "2m")) == []
    refusal = newcomer.state.history["feedback"].last_refusal
    assert refusal is not None
    assert (refusal.rule, refusal.detail) == (RefusalRule.PAUSED, "the journey is paused")
    assert steps(p.event("review.posted", "3m", data={"stars": 4})) == [
        ("ask", "event"),
        ("thanks", "completed"),
        ("exited", "completed"),
    ]
    catalog.apply(deployment(FEEDBACK, status="active", deployed_at=at("4m")))
    assert steps(newcomer.event("order.delivered", "5m")) == [("entered", "ask")]


def test_an_instance_stays_on_its_version_and_new_entries_take_the_newest():
    catalog = catalog_of(
        one_send(reentry="always", template="old_offer")
        .replace("start: send", "start: pause")
        .replace("activities:", "activities:\n  pause: {type: wait, duration: 1h, next: send}")
    )
    early = Profile(catalog=catalog, profile_id="p-1")
    early.event("go", "0s", attributes=ANA)
    v2 = one_send(reentry="always", template="new_offer")
    catalog.apply(deployment(v2, version=2, deployed_at=at("10m")))
    late = Profile(catalog=catalog, profile_id="p-2")
    [new] = late.event("go", "20m", attributes=ANA).sends
    assert (new.template, new.journey_version, new.message_id) == (
        "new_offer",
        2,
        "promo:2:p-2:send:1",
    )
    [old] = early.tick("1h").sends
    assert (old.template, old.journey_version, old.message_id) == (
        "old_offer",
        1,
        "promo:1:p-1:send:1",
    )


def test_an_instance_of_a_version_the_catalog_does_not_know_is_left_alone():
    p = Profile(FEEDBACK)
    p.event("order.delivered", "0s")
    instance = p.state.instances["feedback"]
    instance.version = 7
    fx = p.tick("4d")
    assert steps(fx) == [] and p.last is not None and p.last.changed is False
    assert p.journeys == {"feedback": "ask"}


# --- timers ---------------------------------------------------------------------------


def test_timers_never_fire_twice():
    p = Profile(CART)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5})
    assert len(p.tick("1h").sends) == 1
    again = p.tick("1h")
    assert (steps(again), again.sends, p.last.changed if p.last else None) == ([], [], False)
    assert len(p.tick("2h").sends) == 0


def test_next_due_follows_every_instance_timer():
    p = Profile(CART, FEEDBACK)
    assert p.state.next_due() is None
    p.event("order.delivered", "0s")
    assert p.state.next_due() == at("3d")
    p.event("cart.abandoned", "1h", attributes=ANA, data={"cart_total": 30})
    assert p.state.next_due() == at("2h")


def test_message_ids_are_deterministic_across_replays():
    def run() -> list[str]:
        p = Profile(CART)
        p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5}, event_id="e1")
        ids = [s.message_id for s in p.tick("1h").sends]
        p.tick("25h")
        p.event("cart.abandoned", "8d", data={"cart_total": 50}, event_id="e2")
        ids += [s.message_id for s in p.tick("193h").sends]
        return ids

    assert run() == run() == ["cart-recovery:1:p-42:send-es:1", "cart-recovery:1:p-42:send-es:2"]


def test_the_state_is_still_a_valid_boundary_model_after_a_journey():
    p = Profile(CART, LOYALTY)
    p.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5})
    p.event("order.placed", "30m", data={"total": 3})
    p.tick("1h")
    restored = ProfileState.model_validate_json(p.state.model_dump_json())
    assert restored == p.state
    assert restored.next_due() == p.state.next_due()


# --- event time and delivery events -------------------------------------------------------


@pytest.mark.parametrize(
    ("occurred", "reason"),
    [
        ("0s", None),
        ("-90d", None),
        ("-92d", "more than 91d before"),
        ("59m", None),
        ("2h", "more than 1h after"),
    ],
)
def test_check_event_time(occurred, reason):
    got = check_event_time(event("x", occurred), T0)
    assert (got is None) if reason is None else (reason in (got or ""))


def test_check_event_time_with_custom_bounds():
    assert check_event_time(event("x", "-2d"), T0, max_age=timedelta(days=1)) is not None
    assert check_event_time(event("x", "10m"), T0, max_future=timedelta(minutes=5)) is not None


def test_delivery_to_event():
    failed = read_receipt("read-check:1:p-42:send:1", DeliveryStatus.FAILED)
    failed.error = DeliveryError(code=131026, title="Message undeliverable", retriable=False)
    ev = delivery_to_event(failed)
    assert (ev.event_id, ev.type, ev.profile_id, ev.occurred_at) == (
        "delivery:read-check:1:p-42:send:1:failed",
        "whatsapp.failed",
        "p-42",
        at("5m"),
    )
    assert ev.data == {
        "message_id": "read-check:1:p-42:send:1",
        "wamid": "wamid.1",
        "journey_id": "read-check",
        "journey_version": 1,
        "activity_id": "send",
        "template": "promo",
        "error": {"code": 131026, "title": "Message undeliverable", "retriable": False},
    }
    assert ev.attributes is None


def test_apply_timers_on_an_empty_profile_changes_nothing():
    state = new_profile_state("p-42")
    result = apply_timers(state, catalog_of(CART), T0)
    assert (result.changed, result.duplicate, bool(result.effects), state.updated_at) == (
        False,
        False,
        False,
        None,
    )


def test_step_records_are_numbered_per_instance_and_a_replay_keeps_the_numbers():
    ana = Profile(CART)
    entered = ana.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5})
    stored = ana.state.model_copy(deep=True)  # what the changelog holds after this batch
    fired = ana.tick("1h")
    seqs = [s.seq for s in entered.steps] + [s.seq for s in fired.steps]
    assert seqs == list(range(len(seqs)))
    # A crash before the tick's state was stored: the tick runs again on the stored state.
    replay = Profile(CART)
    replay.state = stored
    again = replay.tick("1h")
    assert [(s.kind, s.activity_id, s.seq) for s in again.steps] == [
        (s.kind, s.activity_id, s.seq) for s in fired.steps
    ]
