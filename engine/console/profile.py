"""A profile's stored state as operators see it: masked attributes, consent, live instances,
re-entry history, the deployed journeys it never matched, frequency-cap counters and recent
sends (`GET /api/profiles/{id}`).

Pure: built on request from the table's value; nothing is computed per event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.core.catalog import JourneyCatalog
from engine.core.graph import entry_label
from engine.observability import mask_json
from schemas.state import JourneyInstance, ProfileState

RECENT_SENDS = 20  # send times listed per channel


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _instance(inst: JourneyInstance, catalog: JourneyCatalog) -> dict[str, Any]:
    compiled = catalog.get(inst.journey_id, inst.version)
    activity = compiled.definition.activities.get(inst.activity_id) if compiled else None
    return {
        "journey_id": inst.journey_id,
        "version": inst.version,
        "instance_id": inst.instance_id,
        "entry_no": inst.entry_no,
        "activity_id": inst.activity_id,
        "activity_type": activity.type if activity is not None else None,
        "waiting_for": inst.waiting,
        "wait_event": inst.wait_event,
        "waiting_until": _iso(inst.wake_at),
        "entered_at": inst.entered_at.isoformat(),
        "at_activity_since": inst.step_entered_at.isoformat(),
        "deadline": inst.deadline.isoformat(),
        "pending_message_id": inst.pending_message_id,
        "entry_event": {"type": inst.entry_event.type, "event_id": inst.entry_event.event_id},
    }


def _caps(state: ProfileState, catalog: JourneyCatalog, now: datetime) -> list[dict[str, Any]]:
    """Each deployed journey's frequency cap with the sends that count against it now."""
    caps = []
    for compiled in catalog:
        cap = compiled.definition.frequency_cap
        if cap is None:
            continue
        since = now - cap.per
        used = sum(1 for sent_at in state.sends.get(cap.channel, ()) if sent_at > since)
        caps.append(
            {
                "journey_id": compiled.journey_id,
                "channel": cap.channel,
                "max": cap.max,
                "per_seconds": cap.per.total_seconds(),
                "used": used,
                "capped": used >= cap.max,
            }
        )
    return caps


def profile_view(state: ProfileState, catalog: JourneyCatalog, now: datetime) -> dict[str, Any]:
    """The JSON answer of `GET /api/profiles/{id}`; phone numbers and secrets are masked."""
    history = {
        journey_id: {
            "entries": h.entries,
            "last_entered_at": _iso(h.last_entered_at),
            "last_exited_at": _iso(h.last_exited_at),
            "refused": h.refused,
            "last_refusal": h.last_refusal.model_dump(mode="json")
            if h.last_refusal is not None
            else None,
        }
        for journey_id, h in sorted(state.history.items())
    }
    return {
        "profile_id": state.profile_id,
        "attributes": mask_json(state.attributes),
        "consent": {"whatsapp": state.attributes.get("whatsapp_consent") or "unknown"},
        "instances": [
            _instance(inst, catalog)
            for _, inst in sorted(state.instances.items(), key=lambda kv: kv[0])
        ],
        "history": history,
        "not_matched": [
            {"journey_id": c.journey_id, "status": c.status, "entry": entry_label(c.definition)}
            for c in catalog
            if c.journey_id not in state.history and c.journey_id not in state.instances
        ],
        "frequency_caps": _caps(state, catalog, now),
        "recent_sends": {
            channel: [sent_at.isoformat() for sent_at in times[-RECENT_SENDS:]]
            for channel, times in sorted(state.sends.items())
        },
        "updated_at": _iso(state.updated_at),
    }
