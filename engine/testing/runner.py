"""Play one profile's events through the real interpreter on a virtual clock.

`Simulator.run` does what a worker and the WhatsApp and HTTP connectors do for one
profile, without Kafka, network or wall clock:

- profile events and timers go through `apply_event` / `apply_timers`, each at its own
  time: a timer fires at its due time, before an event at the same instant (as
  `apply_event` itself orders them);
- every send request passes the connector's policy (`connectors.whatsapp.policy.check_send`:
  consent, phone, the 24-hour window of text messages); a refused one becomes a `skipped`
  delivery event, an allowed one an `accepted` one, then the statuses the case scripts
  (`read` one minute after the send...). With a template file, a request the Cloud API
  sandbox would refuse becomes a `failed` delivery with its error code;
- frequency caps, quiet hours (in the profile's time zone), re-entry rules, exit criteria
  and the journey timeout are the interpreter's and activities' own;
- every delivery event, and the answer to every HTTP call (200 at once unless the case says
  otherwise), is fed back as the profile event the engine makes of it
  (`delivery_to_event`), if some deployed journey listens to its type, as the worker does.

It stops when nothing is left to happen: no event queued and no instance waiting (every
instance has a deadline, the journey timeout, so this always ends), or after MAX_ITEMS.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from connectors.whatsapp.policy import Keyword, KeywordMatcher, check_send, keyword_rules
from engine.core.admission import delivery_to_event
from engine.core.catalog import JourneyCatalog
from engine.core.interpreter import (
    HTTP_RESPONSE_EVENT,
    Effects,
    apply_event,
    apply_timers,
    new_profile_state,
)
from engine.testing.templates import TemplateBook, TemplateRefusal
from schemas.common import construct
from schemas.deployment import JourneyDeployment
from schemas.events import ProfileAttributes, ProfileEvent
from schemas.journey import JourneyDefinition
from schemas.journey_test import TestDelivery, TestHttpResponse
from schemas.messages import DeliveryError, DeliveryEvent, DeliveryStatus, SendRequest, SkipReason
from schemas.settings import Settings
from schemas.steps import JourneyStepEvent

MAX_ITEMS = 10_000
INBOUND_EVENT = "whatsapp.inbound"  # a reply the webhook receiver publishes  # events, feedback and timer firings per profile run

__all__ = ["Call", "Line", "Message", "Simulator", "Skip", "Trace"]


@dataclass(slots=True)
class Message:
    """A send request the connector would have made (policy allowed it)."""

    journey_id: str
    activity_id: str
    message_id: str
    template: str | None
    language: str | None
    at: datetime
    body: list[str]
    header: list[str]
    buttons: list[str]
    text: str | None = None  # rendered from the template file, when one is given
    status: str = "accepted"
    error: str | None = None


@dataclass(slots=True)
class Skip:
    journey_id: str
    activity_id: str
    reason: str
    at: datetime
    detail: str | None = None


@dataclass(slots=True)
class Call:
    journey_id: str
    activity_id: str
    method: str
    url: str
    body: dict[str, Any]
    at: datetime


@dataclass(slots=True)
class Line:
    """One row of a profile's timeline."""

    at: datetime
    journey_id: str
    activity_id: str
    what: str
    detail: str = ""


@dataclass(slots=True)
class Trace:
    """Everything one profile's run did, in order."""

    profile_id: str
    steps: list[JourneyStepEvent] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    timeline: list[Line] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # template check failures
    truncated: bool = False

    def exits(self, journey_id: str | None = None) -> list[str]:
        """Exit reasons of the instances (of one journey, or all), in order."""
        return [
            str(s.reason)
            for s in self.steps
            if s.kind == "exited" and (journey_id is None or s.journey_id == journey_id)
        ]

    def entries(self, journey_id: str | None = None) -> int:
        return sum(
            1
            for s in self.steps
            if s.kind == "entered" and (journey_id is None or s.journey_id == journey_id)
        )

    def path(self, main: str) -> list[str]:
        """Activity ids the main journey's instances ran, and those of the instances they
        jumped into (as `journey:activity`); other journeys' own entries are not in it."""
        followed: set[str] = set()
        jumped = False
        out: list[str] = []
        for s in self.steps:
            if s.kind == "entered":
                if s.journey_id == main or jumped:
                    followed.add(s.instance_id)
                jumped = False
            if s.instance_id not in followed or s.kind != "activity" or s.activity_id is None:
                continue
            jumped = s.outcome == "jumped"  # the jumper's exit comes between this and the entry
            out.append(s.activity_id if s.journey_id == main else f"{s.journey_id}:{s.activity_id}")
        return out


# What a queued event is: an input event, a delivery status (dropped when no journey
# listens to it, as the worker does), an HTTP connector's answer (on profile-events).
_EVENT, _DELIVERY, _ANSWER = 0, 1, 2


class Simulator:
    """Deployed journeys (version 1 each, active) and the connectors' rules, on a virtual clock."""

    def __init__(
        self,
        journeys: Iterable[JourneyDefinition],
        *,
        deployed_at: datetime,
        templates: TemplateBook | None = None,
    ) -> None:
        self.catalog = JourneyCatalog()
        for journey in journeys:
            self.catalog.apply(
                JourneyDeployment(
                    journey_id=journey.id, version=1, definition=journey, deployed_at=deployed_at
                )
            )
        self.templates = templates
        self._keywords: tuple[KeywordMatcher, dict[Keyword, str]] | None = None

    def keywords(self) -> tuple[KeywordMatcher, dict[Keyword, str]]:
        """The webhook receiver's keywords and replies, from the environment as it reads them."""
        if self._keywords is None:
            self._keywords = keyword_rules(Settings())
        return self._keywords

    def run(
        self,
        profile_id: str,
        attributes: dict[str, Any],
        events: Sequence[ProfileEvent],
        *,
        deliveries: Sequence[TestDelivery] = (),
        responses: Sequence[TestHttpResponse] = (),
    ) -> Trace:
        """Play `events` (in time order) for one profile that starts with `attributes`."""
        return _Run(self, profile_id, attributes, deliveries, responses).play(events)


class _Run:
    def __init__(
        self,
        sim: Simulator,
        profile_id: str,
        attributes: dict[str, Any],
        deliveries: Sequence[TestDelivery],
        responses: Sequence[TestHttpResponse],
    ) -> None:
        self.sim = sim
        self.catalog = sim.catalog
        self.state = new_profile_state(profile_id)
        self.state.attributes.update({k: v for k, v in attributes.items() if v is not None})
        self.trace = Trace(profile_id)
        self.deliveries = deliveries
        self.responses = {r.activity: r for r in responses}
        self.queue: list[tuple[datetime, int, int, ProfileEvent]] = []
        self.seq = itertools.count()
        self.by_message: dict[str, Message] = {}

    def push(self, at: datetime, kind: int, event: ProfileEvent) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), kind, event))

    def play(self, events: Sequence[ProfileEvent]) -> Trace:
        for event in events:
            self.push(event.occurred_at, _EVENT, event)
        for _ in range(MAX_ITEMS):
            due = self.state.next_due()
            if self.queue and (due is None or self.queue[0][0] < due):
                at, _seq, kind, event = heapq.heappop(self.queue)
                if kind == _EVENT:
                    data = orjson.dumps(event.data).decode() if event.data else ""
                    self.trace.timeline.append(Line(at, "", "", f"event {event.type}", data))
                elif kind == _DELIVERY and not self.catalog.listens_to(event.type):
                    continue  # the worker drops what no journey listens to
                self.effects(at, apply_event(self.state, event, self.catalog, at).effects)
                if kind == _EVENT and event.type == INBOUND_EVENT:
                    self.keyword(event, at)
            elif due is not None:
                result = apply_timers(self.state, self.catalog, due)
                if not result.changed and self.state.next_due() == due:
                    break  # an instance of a version this catalog does not know
                self.effects(due, result.effects)
            else:
                return self.trace
        self.trace.truncated = bool(self.queue) or self.state.next_due() is not None
        return self.trace

    # --- what the shell and the connectors do with the effects -------------------------

    def effects(self, now: datetime, effects: Effects) -> None:
        trace = self.trace
        # Each send is handled right after the step that made it, so the timeline reads in order.
        sends: dict[tuple[str, str], list[SendRequest]] = {}
        for request in effects.sends:
            sends.setdefault((request.journey_id, request.activity_id), []).append(request)
        for step in effects.steps:
            trace.steps.append(step)
            trace.timeline.append(_step_line(step))
            made = sends.get((step.journey_id, step.activity_id or ""))
            if made:
                self.send(made.pop(0), now)
        for delivery in effects.deliveries:  # the interpreter's own skips
            self.skipped(delivery, now)
        for left in sends.values():
            for request in left:
                self.send(request, now)
        for call in effects.http_calls:
            trace.calls.append(
                Call(call.journey_id, call.activity_id, call.method, call.url, call.body, now)
            )
            trace.timeline.append(
                Line(now, call.journey_id, call.activity_id, f"http {call.method}", call.url)
            )
            answer = self.responses.get(call.activity_id)
            status = answer.status if answer is not None else 200
            if status == "timeout":
                continue
            after = answer.after if answer is not None else timedelta(0)
            data = {"request_id": call.request_id, "ok": 200 <= status < 300, "status": status}
            self.feedback(
                now + after, f"http:{call.request_id}", HTTP_RESPONSE_EVENT, {**data, "body": None}
            )

    def skipped(self, delivery: DeliveryEvent, now: datetime) -> None:
        error = delivery.error
        reason = str(error.reason) if error is not None and error.reason else "skipped"
        detail = error.title if error is not None else None
        self.trace.skips.append(
            Skip(delivery.journey_id, delivery.activity_id, reason, now, detail)
        )
        self.trace.timeline.append(
            Line(now, delivery.journey_id, delivery.activity_id, f"skipped {reason}", detail or "")
        )
        self.feed_delivery(delivery)

    def send(self, send: SendRequest, now: datetime) -> None:
        reason = check_send(send, now=now)
        if reason is not None:
            self.skipped(_delivery(send, DeliveryStatus.SKIPPED, now, _skip_error(reason)), now)
            return
        params = send.parameters
        message = Message(
            send.journey_id,
            send.activity_id,
            send.message_id,
            send.template,
            send.language,
            now,
            list(params.body),
            list(params.header),
            list(params.buttons),
        )
        self.trace.messages.append(message)
        self.by_message[send.message_id] = message
        what = f"message {send.template}/{send.language}"
        if send.kind == "text":
            message.text, what = send.text, "reply (text)"
        books = self.sim.templates
        if books is not None and send.kind == "template":
            try:
                message.text = books.render(send)
            except TemplateRefusal as exc:
                self.trace.refusals.append(
                    f"{send.activity_id}: template {send.template} ({send.language}): {exc}"
                )
                line = Line(now, send.journey_id, send.activity_id, what, f"failed: {exc}")
                self.trace.timeline.append(line)
                error = DeliveryError(code=exc.code, title=exc.detail, retriable=False)
                self.feed_delivery(_delivery(send, DeliveryStatus.FAILED, now, error))
                return
        body = send.text or ", ".join(params.body)
        self.trace.timeline.append(Line(now, send.journey_id, send.activity_id, what, body))
        self.feed_delivery(_delivery(send, DeliveryStatus.ACCEPTED, now, None))
        for scripted in self.deliveries:
            if scripted.activity != send.activity_id:
                continue
            status = DeliveryStatus(scripted.status)
            failure: DeliveryError | None = None
            if status is DeliveryStatus.FAILED:
                code = scripted.error_code or 131026
                failure = DeliveryError(code=code, title="scripted failure", retriable=False)
            self.feed_delivery(_delivery(send, status, now + scripted.after, failure))

    def keyword(self, inbound: ProfileEvent, now: datetime) -> None:
        """What the webhook receiver adds to an inbound keyword (STOP, START, HELP): the
        consent it implies, as a `profile.updated` event, and its text reply, which goes
        through the send policy like any request (the 24-hour window applies to it)."""
        from connectors.whatsapp.webhook import CONSENT_AFTER, KEYWORD_JOURNEY

        text = inbound.data.get("text")
        matcher, replies = self.sim.keywords()
        keyword = matcher.match(text if isinstance(text, str) else None)
        if keyword is None:
            return
        consent = CONSENT_AFTER.get(keyword)
        # The receiver's own ids, so a replay of the topic (which holds them) dedupes them.
        wamid = inbound.data.get("wamid") or inbound.event_id
        if consent is not None:
            update = ProfileEvent(
                event_id=f"wa-consent:{wamid}",
                type="profile.updated",
                profile_id=inbound.profile_id,
                occurred_at=inbound.occurred_at,
                attributes=ProfileAttributes(whatsapp_consent=consent),
            )
            self.push(now, _EVENT, update)
        phone = self.state.attributes.get("phone")
        reply = SendRequest(
            message_id=f"wa-reply:{wamid}",
            journey_id=KEYWORD_JOURNEY,
            journey_version=0,
            activity_id=keyword.value,
            profile_id=inbound.profile_id,
            kind="text",
            to=phone if isinstance(phone, str) else None,
            consent=consent or "unknown",
            text=replies[keyword],
            requested_at=now,
            trigger_at=inbound.occurred_at,
        )
        self.send(reply, now)

    def feed_delivery(self, delivery: DeliveryEvent) -> None:
        event = delivery_to_event(delivery)
        self.push(delivery.occurred_at, _DELIVERY, event)
        message = self.by_message.get(delivery.message_id)
        if message is not None and delivery.status is not DeliveryStatus.ACCEPTED:
            message.status = str(delivery.status)
            if delivery.error is not None and delivery.error.code is not None:
                message.error = f"{delivery.error.code} {delivery.error.title}"

    def feedback(self, at: datetime, event_id: str, type_: str, data: dict[str, Any]) -> None:
        event = construct(
            ProfileEvent,
            event_id=event_id,
            type=type_,
            profile_id=self.state.profile_id,
            occurred_at=at,
            attributes=None,
            data=data,
        )
        self.push(at, _ANSWER, event)


def _skip_error(reason: SkipReason) -> DeliveryError:
    return DeliveryError(title=f"refused by the WhatsApp policy: {reason.value}", reason=reason)


def _delivery(
    send: SendRequest, status: DeliveryStatus, at: datetime, error: DeliveryError | None
) -> DeliveryEvent:
    """The delivery event the connector (or Meta, through the webhook) would publish."""
    return DeliveryEvent.model_validate(
        {
            **send.model_dump(include=_DELIVERY_FIELDS),
            "wamid": None,
            "status": status,
            "error": error,
            "occurred_at": at,
        }
    )


_DELIVERY_FIELDS = {
    "message_id",
    "journey_id",
    "journey_version",
    "activity_id",
    "profile_id",
    "channel",
    "template",
    "language",
}


def _step_line(step: JourneyStepEvent) -> Line:
    activity = step.activity_id or ""
    if step.kind == "entered":
        return Line(step.occurred_at, step.journey_id, activity, "entered")
    if step.kind == "exited":
        return Line(
            step.occurred_at, step.journey_id, activity, f"exited {step.reason}", step.detail or ""
        )
    what = f"{step.activity_type} {step.outcome}" if step.outcome else str(step.activity_type)
    return Line(step.occurred_at, step.journey_id, activity, what, step.detail or "")
