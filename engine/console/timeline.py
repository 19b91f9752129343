"""`journeyctl inspect`'s answer: a profile's state and records merged into one timeline, and
one line per journey saying why the profile is where it is.

Pure: the state comes as `GET /api/profiles/{id}` answers it (or None for an unknown
profile), the records as engine.console.records reads them. Everything shown is masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.console.records import ProfileRecords
from engine.observability import mask_json

_WAITING_FOR = {
    "timer": "a timer",
    "quiet_hours": "the end of quiet hours",
    "http": "an HTTP response",
}
_REFUSAL_RULES = {
    "entry_condition": "entry condition",
    "reentry": "re-entry rule",
    "already_in": "already in the journey",
    "paused": "journey paused",
}


@dataclass(frozen=True, slots=True)
class Why:
    """One journey's verdict: entered, refused, not matched, waiting, exited, completed,
    skipped, failed, messaged; `text` says it in a line."""

    journey_id: str
    verdict: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"journey_id": self.journey_id, "verdict": self.verdict, "text": self.text}


def _dedupe_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch replayed after a crash publishes its step records again: keep one of each."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for step in steps:
        key = (step.get("instance_id"), step.get("seq"), step.get("kind"), step.get("activity_id"))
        if key not in seen:
            seen.add(key)
            out.append(step)
    return out


def _dedupe_deliveries(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[Any, Any]] = set()
    out = []
    for delivery in deliveries:
        key = (delivery.get("message_id"), delivery.get("status"))
        if key not in seen:
            seen.add(key)
            out.append(delivery)
    return out


def delivery_text(delivery: dict[str, Any]) -> str:
    """`message cart_reminder at send-es: failed (Meta 131026: Message undeliverable)`."""
    status = str(delivery.get("status"))
    error = delivery.get("error") or {}
    what = f"message {delivery.get('template') or '?'} at {delivery.get('activity_id')}: {status}"
    if status == "failed":
        return f"{what} (Meta {error.get('code') or '?'}: {error.get('title') or 'no title'})"
    if status == "skipped":
        return f"{what} ({error.get('reason') or '?'}: {error.get('title') or 'no title'})"
    return what


def step_text(step: dict[str, Any]) -> str:
    kind, activity = step.get("kind"), step.get("activity_id")
    detail = f": {step['detail']}" if step.get("detail") else ""
    if kind == "entered":
        return f"entered {step.get('journey_id')} v{step.get('journey_version')} at {activity}"
    if kind == "exited":
        return f"exited {step.get('journey_id')} at {activity} ({step.get('reason')}){detail}"
    return f"{activity} ({step.get('activity_type')}): {step.get('outcome')}{detail}"


def refusal_text(journey_id: str, history: dict[str, Any]) -> str:
    refusal = history["last_refusal"]
    rule = _REFUSAL_RULES.get(refusal["rule"], refusal["rule"])
    times = history.get("refused", 1)
    return f"refused at entry of {journey_id} by the {rule}: {refusal['detail']} ({times} refused)"


def _timeline(
    state: dict[str, Any] | None,
    steps: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
    dead_letters: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    def item(at: Any, source: str, journey_id: Any, text: str) -> dict[str, Any]:
        return {"at": at, "source": source, "journey_id": journey_id, "text": text}

    items = [item(s["occurred_at"], "step", s.get("journey_id"), step_text(s)) for s in steps]
    items += [
        item(d["occurred_at"], "delivery", d.get("journey_id"), delivery_text(d))
        for d in deliveries
    ]
    items += [
        item(
            d.get("occurred_at"),
            "dead-letter",
            None,
            f"dead letter ({d.get('component')}): {d.get('reason')}",
        )
        for d in dead_letters
    ]
    for journey_id, history in (state or {}).get("history", {}).items():
        if history.get("last_refusal"):
            at = history["last_refusal"]["at"]
            items.append(item(at, "state", journey_id, refusal_text(journey_id, history)))
    return sorted(items, key=lambda item: str(item["at"]))


def _why(
    journey_id: str,
    state: dict[str, Any] | None,
    steps: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
) -> Why:
    """The verdict, by precedence: a refusal after the last entry; the last message failed or
    skipped; a live instance (waiting or on its way); the last exit; a message's status."""
    history = (state or {}).get("history", {}).get(journey_id, {})
    live = next(
        (i for i in (state or {}).get("instances", []) if i["journey_id"] == journey_id), None
    )
    mine = [s for s in steps if s.get("journey_id") == journey_id]
    sent = [d for d in deliveries if d.get("journey_id") == journey_id]
    last_entered = str(history.get("last_entered_at") or "")
    entered = [s for s in mine if s.get("kind") == "entered"]
    if entered:
        last_entered = max(last_entered, str(entered[-1]["occurred_at"]))
    refusal = history.get("last_refusal")
    if (
        refusal
        and str(refusal["at"]) >= last_entered
        and not (live and refusal["rule"] == "already_in")
    ):
        return Why(journey_id, "refused", refusal_text(journey_id, history))
    current = [d for d in sent if str(d["occurred_at"]) >= last_entered] or sent
    message = current[-1] if current else None
    if message is not None and message.get("status") in ("failed", "skipped"):
        return Why(journey_id, str(message["status"]), delivery_text(message))
    message_note = f"; last {delivery_text(message)}" if message is not None else ""
    if live is not None:
        if live.get("waiting_for") == "event":
            what = f"event {live.get('wait_event')}"
        else:
            what = _WAITING_FOR.get(str(live.get("waiting_for")), "")
        if what:
            return Why(
                journey_id,
                "waiting",
                f"waiting at {live['activity_id']} for {what} until "
                f"{live.get('waiting_until') or live.get('deadline')}{message_note}",
            )
        return Why(
            journey_id,
            "entered",
            f"entered at {live['entered_at']}, now at {live['activity_id']}{message_note}",
        )
    exits = [s for s in mine if s.get("kind") == "exited"]
    if exits:
        last = exits[-1]
        verdict = "completed" if last.get("reason") == "completed" else "exited"
        detail = f": {last['detail']}" if last.get("detail") and verdict == "exited" else ""
        return Why(
            journey_id,
            verdict,
            f"{verdict} at {last.get('activity_id')} ({last.get('reason')}){detail}{message_note}",
        )
    if message is not None:
        return Why(journey_id, "messaged", delivery_text(message))
    if history.get("entries"):
        return Why(
            journey_id,
            "exited",
            f"entered {history['entries']} time(s), left at {history.get('last_exited_at')}",
        )
    return Why(journey_id, "entered", "no record in the range")


def inspection(
    profile_id: str,
    state: dict[str, Any] | None,
    records: ProfileRecords,
    *,
    since: str | None = None,
) -> dict[str, Any]:
    """The JSON of `journeyctl inspect --format json` (and of the console's profile page)."""
    steps = mask_json(_dedupe_steps(records.steps))
    deliveries = mask_json(_dedupe_deliveries(records.deliveries))
    dead_letters = mask_json(records.dead_letters)
    journeys = {s.get("journey_id") for s in steps} | {d.get("journey_id") for d in deliveries}
    if state is not None:
        journeys |= set(state.get("history", {})) | {i["journey_id"] for i in state["instances"]}
    why = [_why(j, state, steps, deliveries) for j in sorted(str(j) for j in journeys if j)]
    why += [
        Why(
            m["journey_id"],
            "not matched",
            f"not matched: no event of the profile met its entry ({m['entry']})",
        )
        for m in (state or {}).get("not_matched", [])
        if m["journey_id"] not in journeys
    ]
    return {
        "profile_id": profile_id,
        "known": state is not None,
        "since": since,
        "state": state,
        "instances": state["instances"] if state is not None else [],
        "steps": steps,
        "deliveries": deliveries,
        "dead_letters": dead_letters,
        "timeline": _timeline(state, steps, deliveries, dead_letters),
        "why": [w.as_dict() for w in why],
        "truncated": records.truncated,
    }
