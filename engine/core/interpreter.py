"""The per-profile state machine driver: one event, or the clock, applied to one profile's journeys.

Pure and synchronous: the streaming shell owns storage, topics, timers and the clock (`now`).

Processing order of `apply_event` (each step sees the previous one's result):
1. dedupe on `event_id` (the last `dedupe_window` ids); a duplicate changes nothing;
2. fire every timer already due at `now`, so an event never beats a timeout that came first
   and steps that were due earlier do not see the event's attributes;
3. merge `attributes` into the profile (None leaves an attribute as it was);
4. per live instance: archived journey -> ARCHIVED; exit criterion -> EXIT_EVENT; else
   resume it if it waits for this event (or this HTTP response);
5. entries into the active journeys this event type admits, each run until it waits or ends;
6. audience qualification: entries into the journeys whose qualification condition was false
   (or the profile unknown) before step 3's merge and holds after it.

`apply_audience` applies one profile's share of an audience run (a journey's audience read or
a campaign run): due timers first, then the entry, once per run id.

Choices where the contract is silent:
- `state.instances` is keyed by journey id, which makes "one live instance per journey and
  profile" a property of the data. An instance keeps the version it entered with; if the
  catalog does not know that version yet, the instance is left untouched (its timer stays
  due, so the shell should retry it after the next definition record, not spin).
- Paused journeys admit nobody (entries and jumps) but their live instances carry on;
  archiving ends live instances at the next event or timer of the profile.
- One `activity` step event per visit, written when the step is done, with its outcome
  (branch index, "else", "elapsed", "event", "timeout", "ok", "error", "sent", a skip reason,
  a split path, "jumped"). A visit cut short by an exit shows as the `exited` event, whose
  `activity_id` is where the instance was.
- The global timeout is checked before a due timer, so a worker catching up after an outage
  never sends for an instance whose deadline has passed.
- Conditions of entry rules, exit criteria and wait_for_event that fail to evaluate against an
  event (a missing field, a wrong type) mean "does not match"; condition and wait activities
  report their errors (on_error or an ERROR exit with the reason in `detail`).
- Delivery statuses (`whatsapp.accepted|sent|delivered|read|failed|skipped`) only match a
  wait_for_event of the instance whose pending message they are about; exit criteria match
  any event of their type (add `trigger.data.journey_id == journey.id` to narrow them).
- A quiet-hours delay counts one visit: the step re-runs with the same visit number, so the
  message id does not change. The same holds for the HTTP request id of a waiting call.
- A jump ends the instance (JUMPED, detail = target) and enters the target's current version
  from its start, with this instance's entry event; a target that refuses by its re-entry
  rules or a live instance shows as outcome "not_admitted" on the jump step.
- Every run has a budget of 200 steps, shared across jumps, so jump loops end with ERROR.
- A send's `trigger_at` is when its cause happened: the event that entered or resumed the
  instance, or the due time of the timer that woke it, so event-to-send latency stays honest.
- An audience run admits a profile at most once: the run id is remembered in the journey's
  history (the latest 64 per journey), whatever the send's outcome (sent, skipped, delayed).
  The entry event of such an instance is synthetic (type `audience.run`, data `run_id` and
  `context`); expressions see the trigger's context as `context`.
- A campaign's message id has the run id where a journey's has the visit number. A campaign
  instance whose run is cancelled ends (ARCHIVED) at the profile's next event or timer, so a
  message delayed by quiet hours is not sent after the cancel.
- An event of a journey's entry type that does not admit the profile (paused, already in,
  re-entry rule, entry condition false or failing) is counted in the journey's history with
  the latest refusal (`refused`, `last_refusal`): the event writes the state anyway, so this
  costs no record. Qualification and audience entries record no refusal.
- Qualification is an edge: a profile that still matches after an update it already matched
  before does not enter again; an event without attributes never qualifies anyone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from activities import (
    HttpCall,
    StepContext,
    StepOutcome,
    Variables,
    build_variables,
    entry,
    evaluate_condition,
    run_activity,
)
from activities import http as http_activity
from activities import wait as wait_activity
from activities import wait_for_event as wait_for_event_activity
from activities import whatsapp as whatsapp_activity
from activities.expressions import ExpressionError
from engine.core.catalog import CompiledJourney, JourneyCatalog
from schemas.campaign import AudienceTick
from schemas.common import construct, format_duration
from schemas.events import ProfileEvent
from schemas.messages import DeliveryEvent, DeliveryStatus, SendRequest
from schemas.state import EventContext, JourneyHistory, JourneyInstance, ProfileState
from schemas.steps import EntryRefusal, ExitReason, JourneyStepEvent, RefusalRule

__all__ = [
    "AUDIENCE_EVENT_TYPE",
    "MAX_STEPS",
    "AudienceFilter",
    "Effects",
    "HttpCall",
    "ProcessResult",
    "apply_audience",
    "apply_event",
    "apply_timers",
    "ends_without_timer",
    "new_profile_state",
]

MAX_STEPS = 200
MAX_RUNS_REMEMBERED = 64
AUDIENCE_EVENT_TYPE = "audience.run"
DELIVERY_EVENT_TYPES = frozenset(f"whatsapp.{status.value}" for status in DeliveryStatus)
HTTP_RESPONSE_EVENT = http_activity.RESPONSE_EVENT
# Send times kept per profile: at least this many and this long, more when a cap needs it.
_MIN_SENDS_KEPT = 100
_MIN_SENDS_WINDOW = timedelta(days=1)

Resume = Callable[[StepContext, Any, datetime], StepOutcome]

# What a timer means for an instance, by what it waits for.
_ON_TIMER: dict[str, tuple[str, Resume]] = {
    "timer": ("wait", wait_activity.on_timer),
    "event": ("wait_for_event", wait_for_event_activity.on_timer),
    "http": ("http", http_activity.on_timer),
    "quiet_hours": ("whatsapp", whatsapp_activity.run),
}


@dataclass(slots=True)
class Effects:
    """What the shell must publish after committing the new state."""

    sends: list[SendRequest] = field(default_factory=list)
    deliveries: list[DeliveryEvent] = field(default_factory=list)
    http_calls: list[HttpCall] = field(default_factory=list)
    steps: list[JourneyStepEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sends or self.deliveries or self.http_calls or self.steps)


@dataclass(slots=True, kw_only=True)
class ProcessResult:
    """The profile's state (the same object passed in), its effects, and whether to store it.

    `declined` says why an audience run did not admit the profile.
    """

    state: ProfileState
    effects: Effects
    duplicate: bool = False
    changed: bool
    declined: str | None = None


def new_profile_state(profile_id: str) -> ProfileState:
    return construct(
        ProfileState,
        profile_id=profile_id,
        attributes={},
        seen_event_ids=[],
        instances={},
        history={},
        sends={},
        updated_at=None,
    )


def apply_event(
    state: ProfileState,
    event: ProfileEvent,
    catalog: JourneyCatalog,
    now: datetime,
    *,
    dedupe_window: int = 64,
) -> ProcessResult:
    """Apply one profile event (the order of work is in the module docstring)."""
    seen = state.seen_event_ids
    if event.event_id in seen:
        return ProcessResult(state=state, effects=Effects(), duplicate=True, changed=False)
    seen.append(event.event_id)
    if len(seen) > dedupe_window:
        del seen[: len(seen) - dedupe_window]
    run = _Run(state, catalog, now)
    _fire_due_timers(run)
    run.event_id = event.event_id
    trigger = construct(
        EventContext,
        event_id=event.event_id,
        type=event.type,
        data=event.data,
        occurred_at=event.occurred_at,
    )
    qualifying = catalog.qualifications() if event.attributes is not None else []
    # An unknown profile matched nothing before; evaluate before the merge changes attributes.
    matched_before = [bool(state.attributes) and _qualifies(run, c, trigger) for c in qualifying]
    if event.attributes is not None:
        for key, value in event.attributes:
            if value is not None:
                state.attributes[key] = value
    for instance in list(state.instances.values()):
        if state.instances.get(instance.journey_id) is not instance:
            continue
        compiled = catalog.get(instance.journey_id, instance.version)
        if compiled is None:
            continue
        if event.type in compiled.exit_types and _exits(run, compiled, instance, trigger):
            _end(run, instance, ExitReason.EXIT_EVENT, f"exit event {event.type}")
        elif instance.waiting is not None:
            _deliver(run, compiled, instance, event, trigger)
    for compiled in catalog.entries_for(event.type):
        refused = _try_entry(run, compiled, trigger)
        if refused is not None:
            _refuse(run, compiled.journey_id, *refused)
    for compiled in catalog.paused_entries_for(event.type):
        _refuse(run, compiled.journey_id, RefusalRule.PAUSED, "the journey is paused")
    for compiled, before in zip(qualifying, matched_before, strict=True):
        if not before:
            _try_entry(run, compiled, trigger)

    state.updated_at = now
    return ProcessResult(state=state, effects=run.effects, changed=True)


def apply_audience(
    state: ProfileState, tick: AudienceTick, catalog: JourneyCatalog, now: datetime
) -> ProcessResult:
    """Admit the profile into an audience run if it qualifies now (due timers fire first)."""
    run = _Run(state, catalog, now)
    _fire_due_timers(run)
    declined = _audience_entry(run, tick)
    if run.changed:
        state.updated_at = now
    return ProcessResult(state=state, effects=run.effects, changed=run.changed, declined=declined)


def audience_entry_event(tick: AudienceTick) -> EventContext:
    """The synthetic entry event of an instance admitted by an audience run."""
    return construct(
        EventContext,
        event_id=f"run:{tick.journey_id}:{tick.run_id}",
        type=AUDIENCE_EVENT_TYPE,
        data={"run_id": tick.run_id, "context": tick.context},
        occurred_at=tick.requested_at,
    )


@dataclass(slots=True)
class AudienceFilter:
    """The cheap test a worker's audience scan applies to stored profiles before queueing them.

    It reads the table's JSON (no model parse) and may admit too many, never too few:
    `apply_audience` decides, on the profile's state when its work is processed.
    """

    compiled: CompiledJourney
    tick: AudienceTick
    _entry_event: EventContext = field(init=False)

    def __post_init__(self) -> None:
        self._entry_event = audience_entry_event(self.tick)

    def admits(self, stored: dict[str, Any], now: datetime) -> bool:
        compiled, tick = self.compiled, self.tick
        jid = compiled.journey_id
        history = stored.get("history", {}).get(jid)
        if history is not None:
            if tick.run_id in history.get("runs", ()):
                return False
            if history.get("entries") and compiled.definition.reentry.mode == "never":
                return False
        if jid in stored.get("instances", {}):
            return False
        variables = _entry_variables(
            compiled, stored.get("attributes", {}), self._entry_event, now, tick.context
        )
        return all(
            _holds(source, variables)
            for source in (compiled.definition.entry.admission_condition, tick.condition)
            if source is not None
        )


def apply_timers(state: ProfileState, catalog: JourneyCatalog, now: datetime) -> ProcessResult:
    """Fire everything due at `now`: archived journeys, global timeouts, then instance timers."""
    run = _Run(state, catalog, now)
    _fire_due_timers(run)
    if run.changed:
        state.updated_at = now
    return ProcessResult(state=state, effects=run.effects, changed=run.changed)


def ends_without_timer(state: ProfileState, catalog: JourneyCatalog) -> bool:
    """Whether an instance must end before its timer is due: journey archived, run cancelled."""
    for instance in state.instances.values():
        compiled = catalog.get(instance.journey_id, instance.version)
        if compiled is None:
            continue
        if compiled.status == "archived":
            return True
        run_id = _campaign_run(compiled, instance)
        if run_id is not None and catalog.run_cancelled(instance.journey_id, run_id):
            return True
    return False


# --- one call's working set ------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    state: ProfileState
    catalog: JourneyCatalog
    now: datetime
    effects: Effects = field(default_factory=Effects)
    event_id: str | None = None
    changed: bool = False


def _fire_due_timers(run: _Run) -> None:
    now = run.now
    for instance in list(run.state.instances.values()):
        if run.state.instances.get(instance.journey_id) is not instance:
            continue  # ended by an earlier instance's jump in this loop
        compiled = run.catalog.get(instance.journey_id, instance.version)
        if compiled is None:
            continue
        run_id = _campaign_run(compiled, instance)
        if compiled.status == "archived":
            what = "campaign cancelled" if compiled.is_campaign else "journey archived"
            _end(run, instance, ExitReason.ARCHIVED, what)
        elif run_id is not None and run.catalog.run_cancelled(instance.journey_id, run_id):
            _end(run, instance, ExitReason.ARCHIVED, f"campaign run {run_id} cancelled")
        elif now >= instance.deadline:
            timeout = format_duration(compiled.definition.timeout)
            _end(run, instance, ExitReason.TIMEOUT, f"journey timeout of {timeout} reached")
        elif instance.wake_at is not None and instance.wake_at <= now:
            _resume_on_timer(run, compiled, instance)


def _resume_on_timer(run: _Run, compiled: CompiledJourney, instance: JourneyInstance) -> None:
    activity = compiled.definition.activities.get(instance.activity_id)
    expected, resume = _ON_TIMER.get(instance.waiting or "", ("", None))
    if activity is None or resume is None or activity.type != expected:
        detail = f"cannot resume a {instance.waiting} wait at {instance.activity_id!r}"
        _end(run, instance, ExitReason.ERROR, detail)
        return
    assert instance.wake_at is not None
    _drive(run, compiled, instance, trigger=None, trigger_at=instance.wake_at, resume=resume)


def _deliver(
    run: _Run,
    compiled: CompiledJourney,
    instance: JourneyInstance,
    event: ProfileEvent,
    trigger: EventContext,
) -> None:
    """Resume the instance if it waits for this event or this HTTP response."""
    activity = compiled.definition.activities.get(instance.activity_id)
    resume: Resume
    if instance.waiting == "event" and instance.wait_event == event.type:
        if activity is None or activity.type != "wait_for_event":
            return
        if event.type in DELIVERY_EVENT_TYPES and (
            instance.pending_message_id is None
            or event.data.get("message_id") != instance.pending_message_id
        ):
            return
        variables = _variables(run, compiled, instance, trigger)
        ctx = _context(run, compiled, instance, variables, trigger_at=event.occurred_at, visit=0)
        if not wait_for_event_activity.matches(ctx, activity):
            return
        resume = wait_for_event_activity.on_event
    elif instance.waiting == "http" and event.type == HTTP_RESPONSE_EVENT:
        if activity is None or activity.type != "http":
            return
        visit = _history(run, instance.journey_id).visits.get(instance.activity_id, 0)
        expected = http_activity.request_id(instance.instance_id, instance.activity_id, visit)
        if event.data.get("request_id") != expected:
            return
        ok, status = event.data.get("ok") is True, event.data.get("status")

        def resume(ctx: StepContext, act: Any, now: datetime) -> StepOutcome:
            return http_activity.on_response(ctx, act, ok, status)

        variables = None
    else:
        return
    _drive(
        run,
        compiled,
        instance,
        trigger=trigger,
        trigger_at=event.occurred_at,
        resume=resume,
        variables=variables,
    )


def _exits(
    run: _Run, compiled: CompiledJourney, instance: JourneyInstance, trigger: EventContext
) -> bool:
    variables: Variables | None = None
    for rule in compiled.definition.exit_on:
        if rule.event != trigger.type:
            continue
        if rule.condition is None:
            return True
        if variables is None:
            variables = _variables(run, compiled, instance, trigger)
        try:
            if evaluate_condition(rule.condition, variables):
                return True
        except ExpressionError:
            continue
    return False


# --- entering --------------------------------------------------------------------------


def _try_entry(
    run: _Run, compiled: CompiledJourney, trigger: EventContext
) -> tuple[RefusalRule, str] | None:
    """Admit the profile and drive its new instance; else the rule that refused it and why."""
    if not compiled.active:
        return RefusalRule.PAUSED, f"the journey is {compiled.status}"
    if compiled.journey_id in run.state.instances:
        return RefusalRule.ALREADY_IN, "the profile is already in this journey"
    refusal = _refusal(run, compiled)
    if refusal is not None:
        return RefusalRule.REENTRY, refusal
    instance = _new_instance(run, compiled, trigger)
    variables = _variables(run, compiled, instance, trigger)
    ctx = _context(run, compiled, instance, variables, trigger.occurred_at, visit=0)
    outcome = entry.run(ctx, compiled.definition.entry, run.now)
    if outcome.next is None:
        return RefusalRule.ENTRY_CONDITION, outcome.detail or "entry condition is false"
    _admit(run, instance)
    _drive(run, compiled, instance, trigger, trigger.occurred_at, variables=variables)
    return None


def _refuse(run: _Run, journey_id: str, rule: RefusalRule, detail: str) -> None:
    """Count a refusal at entry and keep the latest in the journey's history: a few bytes of
    state the event writes anyway, never a record per event."""
    history = _history(run, journey_id)
    history.refused += 1
    history.last_refusal = construct(
        EntryRefusal, rule=rule, detail=detail, at=run.now, event_id=run.event_id
    )


def _qualifies(run: _Run, compiled: CompiledJourney, trigger: EventContext) -> bool:
    """Whether the qualification condition holds on the profile as it is now."""
    condition = compiled.definition.entry.admission_condition
    assert condition is not None  # qualification entries always have one
    return _holds(condition, _entry_variables(compiled, run.state.attributes, trigger, run.now))


def _entry_variables(
    compiled: CompiledJourney,
    profile: dict[str, Any],
    event: EventContext,
    now: datetime,
    context: dict[str, Any] | None = None,
) -> Variables:
    """Variables for an entry condition tested before any instance exists."""
    return build_variables(
        profile=profile,
        event=event,
        trigger=event,
        journey_id=compiled.journey_id,
        version=compiled.version,
        instance_id="",
        entered_at=now,
        now=now,
        programs=compiled.programs,
        context=context,
    )


def _holds(condition: str, variables: Variables) -> bool:
    """A condition that fails to evaluate (a missing attribute) does not hold."""
    try:
        return evaluate_condition(condition, variables)
    except ExpressionError:
        return False


def _audience_entry(run: _Run, tick: AudienceTick) -> str | None:
    """Admit the profile into the run and drive it; why not, or None when it entered."""
    compiled = run.catalog.current(tick.journey_id)
    if compiled is None:
        return f"no journey or campaign {tick.journey_id!r} is deployed"
    if compiled.definition.entry.audience is None:
        return f"{tick.journey_id!r} does not enter by audience"
    if not compiled.active:
        archived = compiled.status == "archived"
        status = "cancelled" if archived and compiled.is_campaign else compiled.status
        return f"{tick.journey_id!r} is {status}"
    if run.catalog.run_cancelled(tick.journey_id, tick.run_id):
        return f"run {tick.run_id!r} is cancelled"
    history = run.state.history.get(tick.journey_id)
    if history is not None and tick.run_id in history.runs:
        return f"already admitted by run {tick.run_id!r}"
    refusal = _refusal(run, compiled)
    if refusal is not None:
        return refusal
    trigger = audience_entry_event(tick)
    run.event_id = trigger.event_id
    instance = _new_instance(run, compiled, trigger)
    variables = _variables(run, compiled, instance, trigger)
    ctx = _context(run, compiled, instance, variables, tick.requested_at, visit=0)
    outcome = entry.run(ctx, compiled.definition.entry, run.now, also=tick.condition)
    if outcome.next is None:
        return outcome.detail
    _admit(run, instance)
    runs = _history(run, tick.journey_id).runs
    runs.append(tick.run_id)
    del runs[:-MAX_RUNS_REMEMBERED]
    _drive(run, compiled, instance, trigger, tick.requested_at, variables=variables)
    return None


def _refusal(run: _Run, compiled: CompiledJourney, leaving: str | None = None) -> str | None:
    """Why the profile cannot enter this journey now, or None."""
    if compiled.journey_id in run.state.instances and compiled.journey_id != leaving:
        return "the profile is already in this journey"
    history = run.state.history.get(compiled.journey_id)
    return entry.reentry_refusal(compiled.definition.reentry, history, run.now)


def _new_instance(
    run: _Run, compiled: CompiledJourney, entry_event: EventContext
) -> JourneyInstance:
    """The instance the profile would get; nothing is recorded until it is admitted."""
    state, now, definition = run.state, run.now, compiled.definition
    history = state.history.get(compiled.journey_id)
    entry_no = (history.entries if history is not None else 0) + 1
    return construct(
        JourneyInstance,
        instance_id=f"{compiled.journey_id}:{compiled.version}:{state.profile_id}:{entry_no}",
        journey_id=compiled.journey_id,
        version=compiled.version,
        profile_id=state.profile_id,
        entry_no=entry_no,
        activity_id=definition.start,
        waiting=None,
        wake_at=None,
        wait_event=None,
        entered_at=now,
        step_entered_at=now,
        deadline=now + definition.timeout,
        steps=0,
        entry_event=entry_event,
        pending_message_id=None,
    )


def _admit(run: _Run, instance: JourneyInstance) -> None:
    history = _history(run, instance.journey_id)
    history.entries = instance.entry_no
    history.last_entered_at = run.now
    run.state.instances[instance.journey_id] = instance
    _step(run, instance, "entered", instance.activity_id)
    run.changed = True


# --- running ---------------------------------------------------------------------------


def _drive(
    run: _Run,
    compiled: CompiledJourney,
    instance: JourneyInstance,
    trigger: EventContext | None,
    trigger_at: datetime,
    *,
    resume: Resume | None = None,
    variables: Variables | None = None,
) -> None:
    """Run the instance's current activity (resumed, or afresh) and on, until it waits or ends."""
    run.changed = True
    budget = MAX_STEPS
    while True:
        activity_id = instance.activity_id
        activity = compiled.definition.activities[activity_id]
        visits = _history(run, instance.journey_id).visits
        if resume is None:
            if budget == 0:
                detail = f"step limit: {MAX_STEPS} steps without a wait"
                _end(run, instance, ExitReason.ERROR, detail)
                return
            budget -= 1
            visits[activity_id] = visit = visits.get(activity_id, 0) + 1
        else:
            visit = visits.get(activity_id, 1)
        if variables is None:
            variables = _variables(run, compiled, instance, trigger)
        ctx = _context(run, compiled, instance, variables, trigger_at, visit)
        ctx.resumed = resume is not None
        outcome = (resume or run_activity)(ctx, activity, run.now)
        resume = None
        _collect(run, instance, outcome)

        if outcome.wait is not None:
            instance.waiting = outcome.wait.kind
            instance.wake_at = outcome.wait.until
            instance.wait_event = outcome.wait.event
            return
        instance.waiting = instance.wake_at = instance.wait_event = None
        if outcome.jump_to is not None:
            target = _jump(run, instance, activity.type, outcome.jump_to)
            if target is None:
                return
            instance = _new_instance(run, target, instance.entry_event)
            _admit(run, instance)
            compiled, variables = target, None
            continue
        label, why = outcome.outcome, outcome.detail
        _step(run, instance, "activity", activity_id, activity.type, label, why)
        if outcome.next is None:
            _end(run, instance, outcome.exit or ExitReason.COMPLETED, why)
            return
        instance.activity_id = outcome.next
        instance.step_entered_at = run.now


def _jump(
    run: _Run, instance: JourneyInstance, activity_type: str, target_id: str
) -> CompiledJourney | None:
    """End the jumping instance; the target to enter, or None when it cannot be entered."""
    target = run.catalog.current(target_id)
    if target is None or not target.active:
        why = "not found" if target is None else f"not active ({target.status})"
        detail = f"jump target {target_id!r} {why}"
        outcome = "target_not_found" if target is None else "target_not_active"
        _step(run, instance, "activity", instance.activity_id, activity_type, outcome, detail)
        _end(run, instance, ExitReason.ERROR, detail)
        return None
    # The jumping instance ends first, so a jump into its own journey does not see it live.
    refusal = _refusal(run, target, leaving=instance.journey_id)
    outcome = "jumped" if refusal is None else "not_admitted"
    detail = target_id if refusal is None else f"{target_id}: {refusal}"
    _step(run, instance, "activity", instance.activity_id, activity_type, outcome, detail)
    _end(run, instance, ExitReason.JUMPED, detail)
    return target if refusal is None else None


def _collect(run: _Run, instance: JourneyInstance, outcome: StepOutcome) -> None:
    effects = run.effects
    if outcome.send is not None:
        effects.sends.append(outcome.send)
        _record_send(run)
    if outcome.delivery is not None:
        effects.deliveries.append(outcome.delivery)
    if outcome.http_call is not None:
        effects.http_calls.append(outcome.http_call)
    if outcome.message_id is not None:
        instance.pending_message_id = outcome.message_id


def _record_send(run: _Run) -> None:
    sends = run.state.sends.setdefault("whatsapp", [])
    sends.append(run.now)
    # Keep what the longest and largest frequency cap the catalog knows can ask for.
    since = run.now - max(run.catalog.longest_cap_window, _MIN_SENDS_WINDOW)
    keep = max(run.catalog.largest_cap, _MIN_SENDS_KEPT)
    if sends[0] <= since or len(sends) > keep:
        sends[:] = [sent_at for sent_at in sends if sent_at > since][-keep:]


def _end(run: _Run, instance: JourneyInstance, reason: ExitReason, detail: str | None) -> None:
    _step(run, instance, "exited", instance.activity_id, reason=reason, detail=detail)
    _history(run, instance.journey_id).last_exited_at = run.now
    instance.waiting = instance.wake_at = instance.wait_event = None
    run.state.instances.pop(instance.journey_id, None)
    run.changed = True


def _step(
    run: _Run,
    instance: JourneyInstance,
    kind: Literal["entered", "activity", "exited"],
    activity_id: str | None,
    activity_type: str | None = None,
    outcome: str | None = None,
    detail: str | None = None,
    *,
    reason: ExitReason | None = None,
) -> None:
    run.effects.steps.append(
        construct(
            JourneyStepEvent,
            kind=kind,
            journey_id=instance.journey_id,
            journey_version=instance.version,
            instance_id=instance.instance_id,
            profile_id=instance.profile_id,
            activity_id=activity_id,
            activity_type=activity_type,
            outcome=outcome,
            reason=reason,
            detail=detail,
            event_id=run.event_id,
            occurred_at=run.now,
            seq=instance.steps,
        )
    )
    instance.steps += 1


def _history(run: _Run, journey_id: str) -> JourneyHistory:
    history = run.state.history.get(journey_id)
    if history is None:
        history = construct(
            JourneyHistory,
            entries=0,
            last_entered_at=None,
            last_exited_at=None,
            visits={},
            runs=[],
            refused=0,
            last_refusal=None,
        )
        run.state.history[journey_id] = history
    return history


def _variables(
    run: _Run, compiled: CompiledJourney, instance: JourneyInstance, trigger: EventContext | None
) -> Variables:
    return build_variables(
        profile=run.state.attributes,
        event=instance.entry_event,
        trigger=trigger,
        journey_id=instance.journey_id,
        version=instance.version,
        instance_id=instance.instance_id,
        entered_at=instance.entered_at,
        now=run.now,
        programs=compiled.programs,
        context=_run_context(instance),
    )


def _run_context(instance: JourneyInstance) -> dict[str, Any] | None:
    entry_event = instance.entry_event
    if entry_event.type != AUDIENCE_EVENT_TYPE:
        return None
    context = entry_event.data.get("context")
    return context if isinstance(context, dict) else None


def _campaign_run(compiled: CompiledJourney, instance: JourneyInstance) -> str | None:
    """The run a campaign instance belongs to (its message ids name it), else None."""
    entry_event = instance.entry_event
    if not compiled.is_campaign or entry_event.type != AUDIENCE_EVENT_TYPE:
        return None
    run_id = entry_event.data.get("run_id")
    return run_id if isinstance(run_id, str) else None


def _context(
    run: _Run,
    compiled: CompiledJourney,
    instance: JourneyInstance,
    variables: Variables,
    trigger_at: datetime,
    visit: int,
) -> StepContext:
    return StepContext(
        profile_id=run.state.profile_id,
        profile=run.state.attributes,
        journey=compiled.definition,
        version=compiled.version,
        instance_id=instance.instance_id,
        activity_id=instance.activity_id,
        visit=visit,
        variables=variables,
        trigger_at=trigger_at,
        whatsapp_sends=run.state.sends.get("whatsapp", ()),
        run_id=_campaign_run(compiled, instance),
        deadline=instance.deadline,
    )
