"""The profile state codec: how a profile's state is stored in the table and changelog.

Invariant: a stored record is `{"due": <epoch or null>, "state": {...}}`, so rebuilding the
timer index reads `due` without parsing the state model.
"""

from __future__ import annotations

import orjson

from schemas.state import ProfileState

_STATE_AT = b',"state":'


def state_to_bytes(state: ProfileState) -> bytes:
    """`{"due": <epoch or null>, "state": {...}}`: `due` sits beside the state so a rebuild
    of the timer index needs no model parse. The state's JSON comes straight from
    pydantic's serializer (as `model_dump(mode="json", exclude_defaults=True)` would give
    it), spliced in rather than dumped again through a dict."""
    return state_record(state)[0]


def state_record(state: ProfileState) -> tuple[bytes, float | None]:
    """`state_to_bytes(state)` and the due time in it (epoch seconds, None: nothing waits)."""
    due = state.next_due()
    at = due.timestamp() if due else None
    body = state.__pydantic_serializer__.to_json(state, exclude_defaults=True)
    return b'{"due":' + orjson.dumps(at) + _STATE_AT + body + b"}", at


def state_from_bytes(raw: bytes) -> ProfileState:
    at = raw.find(_STATE_AT)
    if at > 0 and raw.startswith(b'{"due":') and raw.endswith(b"}"):
        # As state_to_bytes writes it (and orjson did before): parse the state's JSON alone.
        return ProfileState.model_validate_json(raw[at + len(_STATE_AT) : -1])
    return ProfileState.model_validate(orjson.loads(raw)["state"])


def due_from_bytes(raw: bytes) -> float | None:
    due = orjson.loads(raw).get("due")
    return float(due) if due is not None else None
