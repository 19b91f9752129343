"""Properties of the interpreter over random event sequences at random, increasing times.

Whatever arrives, in whatever order: no crash, one live instance per journey, no timer fires
twice, every instance ends by its deadline, and no message id is ever used twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.admission import delivery_to_event
from engine.core.interpreter import (
    ProcessResult,
    apply_event,
    apply_timers,
    new_profile_state,
)
from schemas.messages import DeliveryEvent, DeliveryStatus
from schemas.state import ProfileState
from tests.unit import T0, catalog_of, event

CART = """
id: cart
name: Cart
entry: {event: cart.abandoned, condition: 'event.data.cart_total > 20'}
reentry: {mode: always}
exit_on: [{event: order.placed, condition: 'has(trigger.data.total)'}]
timeout: 3d
frequency_cap: {channel: whatsapp, max: 2, per: 1d}
quiet_hours: {start: '21:00', end: '09:00', timezone: profile, action: delay}
start: hold
activities:
  hold: {type: wait, duration: 1h, next: pick}
  pick:
    type: condition
    branches: [{when: 'profile.language == "es"', next: ab}]
    else: send
    on_error: send
  ab: {type: split, paths: [{weight: 1, next: send}, {weight: 1, next: points}]}
  send:
    type: whatsapp
    template: cart
    language: es
    parameters: {body: ['profile.first_name', 'event.data.cart_total']}
    next: read
    on_error: done
  read: {type: wait_for_event, event: whatsapp.read, timeout: 6h, next: points, on_timeout: away}
  points: {type: http, url: 'https://crm.example.com/p', body: {t: 'event.data.cart_total'},
           timeout: 2h, next: done, on_error: away}
  away: {type: jump, journey: nurture}
  done: {type: end}
"""
NURTURE = """
id: nurture
name: Nurture
entry: {event: signup}
reentry: {mode: after, wait: 2h}
quiet_hours: {start: '22:00', end: '07:00', timezone: Europe/Madrid, action: skip}
start: later
activities:
  later: {type: wait, until: 'event.occurred_at + duration("3h")', next: hello}
  hello: {type: whatsapp, template: hello, language: en, parameters: {body: ['event.type']},
          next: reply}
  reply: {type: wait_for_event, event: whatsapp.inbound, timeout: 1d, next: done, on_timeout: done}
  done: {type: end}
"""
LOOP = """
id: loop
name: Loop
entry: {event: loop}
reentry: {mode: always}
start: go
activities:
  go: {type: jump, journey: loop}
"""
CATALOG = catalog_of(CART, NURTURE, LOOP)
DEADLINE = {"cart": timedelta(days=3), "nurture": timedelta(days=91), "loop": timedelta(days=91)}

attributes = st.fixed_dictionaries(
    {},
    optional={
        "first_name": st.sampled_from(["Ana", "", "José", "  "]),
        "language": st.sampled_from(["es", "en"]),
        "timezone": st.sampled_from(["Europe/Madrid", "America/New_York", "Asia/Tokyo", "UTC"]),
        "whatsapp_consent": st.sampled_from(["opted_in", "opted_out"]),
        "phone": st.just("+34600111222"),
    },
)
cart_data = st.fixed_dictionaries(
    {},
    optional={
        "cart_total": st.one_of(st.integers(-5, 200), st.floats(0, 200), st.text(max_size=3))
    },
)


def check_invariants(state: ProfileState, result: ProcessResult) -> None:
    assert result.state is state
    ids = [inst.instance_id for inst in state.instances.values()]
    assert len(ids) == len(set(ids))
    for journey_id, inst in state.instances.items():
        assert inst.journey_id == journey_id  # one live instance per journey
        assert inst.waiting is not None and inst.wake_at is not None  # it waits, or it ended
        assert inst.deadline == inst.entered_at + DEADLINE[journey_id]
        assert inst.entry_no == state.history[journey_id].entries
    entered = sum(1 for s in result.effects.steps if s.kind == "entered")
    exited = sum(1 for s in result.effects.steps if s.kind == "exited")
    assert entered - exited <= len(state.instances)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_event_sequences_keep_every_promise(data: st.DataObject) -> None:
    # Split paths are sticky per profile: vary the profile to walk every path.
    profile_id = data.draw(st.sampled_from(["p-1", "p-2", "p-3", "p-42"]), label="profile")
    state = new_profile_state(profile_id)
    now = T0
    message_ids: list[str] = []
    seen_sends: list[Any] = []
    past_event_ids: list[str] = []
    for _ in range(data.draw(st.integers(1, 30), label="length")):
        now += timedelta(minutes=data.draw(st.integers(0, 600), label="minutes later"))
        kind = data.draw(
            st.sampled_from(
                [
                    "cart",
                    "order",
                    "signup",
                    "inbound",
                    "profile",
                    "read",
                    "http",
                    "dup",
                    "tick",
                    "loop",
                ]
            )
        )
        if kind == "tick":
            result = apply_timers(state, CATALOG, now)
            assert state.next_due() is None or state.next_due() > now  # type: ignore[operator]
            again = apply_timers(state, CATALOG, now)
            assert (again.changed, again.effects.steps, again.effects.sends) == (False, [], [])
        else:
            if kind == "read" and seen_sends:
                send = data.draw(st.sampled_from(seen_sends))
                delivery = DeliveryEvent(
                    message_id=send.message_id,
                    journey_id=send.journey_id,
                    journey_version=send.journey_version,
                    activity_id=send.activity_id,
                    profile_id=profile_id,
                    status=data.draw(st.sampled_from(list(DeliveryStatus))),
                    occurred_at=now,
                )
                ev = delivery_to_event(delivery)
            elif kind == "http":
                waiting = [
                    f"{i.instance_id}:{i.activity_id}:{state.history[i.journey_id].visits[i.activity_id]}"
                    for i in state.instances.values()
                    if i.waiting == "http"
                ]
                request_id = data.draw(st.sampled_from([*waiting, "stray:1"]))
                ok = data.draw(st.booleans())
                ev = event(
                    "http.response",
                    now,
                    profile_id=profile_id,
                    data={"request_id": request_id, "ok": ok, "status": 200 if ok else 500},
                )
            elif kind == "dup" and past_event_ids:
                dup_id = data.draw(st.sampled_from(past_event_ids))
                ev = event("cart.abandoned", now, event_id=dup_id, profile_id=profile_id)
            else:
                type_ = {
                    "cart": "cart.abandoned",
                    "order": "order.placed",
                    "signup": "signup",
                    "inbound": "whatsapp.inbound",
                    "profile": "profile.updated",
                    "loop": "loop",
                }.get(kind, "cart.abandoned")
                payload = data.draw(cart_data) if type_ == "cart.abandoned" else {"total": 1}
                ev = event(
                    type_,
                    now,
                    profile_id=profile_id,
                    data=payload,
                    attributes=data.draw(attributes),
                )
            result = apply_event(state, ev, CATALOG, now)
            assert result.duplicate is (ev.event_id in past_event_ids)
            past_event_ids.append(ev.event_id)
        check_invariants(state, result)
        seen_sends.extend(result.effects.sends)
        message_ids.extend(s.message_id for s in result.effects.sends)
        message_ids.extend(d.message_id for d in result.effects.deliveries)

    assert len(message_ids) == len(set(message_ids)), "a message id was used twice"
    ProfileState.model_validate_json(state.model_dump_json())  # still a valid boundary model

    # Every instance ends by its deadline.
    deadlines = [inst.deadline for inst in state.instances.values()]
    if deadlines:
        result = apply_timers(state, CATALOG, max(deadlines))
        check_invariants(state, result)
        # Jumps at the deadline may start new instances; those carry their own, later deadline.
        assert all(inst.entered_at == max(deadlines) for inst in state.instances.values())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=20))
def test_the_same_events_always_give_the_same_effects(gaps: list[int]) -> None:
    def replay() -> list[tuple[str, ...]]:
        state = new_profile_state("p-42")
        now, out = T0, []
        for n, gap in enumerate(gaps):
            now += timedelta(minutes=gap)
            kind = ["cart.abandoned", "signup", "whatsapp.inbound"][n % 3]
            attrs = {"first_name": "Ana", "language": "es" if n % 2 else "en"}
            ev = event(kind, now, event_id=f"e{n}", data={"cart_total": 10 * n}, attributes=attrs)
            result = apply_event(state, ev, CATALOG, now)
            timers = apply_timers(state, CATALOG, now + timedelta(minutes=gap // 2))
            for fx in (result.effects, timers.effects):
                out += [("send", s.message_id, *s.parameters.body) for s in fx.sends]
                out += [("call", c.request_id) for c in fx.http_calls]
                out += [
                    (s.kind, s.instance_id, s.activity_id or "", s.outcome or "") for s in fx.steps
                ]
        return out

    assert replay() == replay()
