"""The table value of a profile: `{"due", "state"}` JSON, written and read back."""

from __future__ import annotations

import orjson
import pytest

from engine.worker.codec import due_from_bytes, state_from_bytes, state_to_bytes
from schemas.state import ProfileState
from tests.unit import ANA, Profile
from tests.unit.engine.core.test_interpreter import CART


def _states() -> list[ProfileState]:
    """A profile's state along the cart journey: new, waiting, sent and waiting, ended."""
    ana = Profile(CART)
    out = [ana.state.model_copy(deep=True)]
    ana.event("cart.abandoned", "0s", attributes=ANA, data={"cart_total": 42.5, "items": 3})
    out.append(ana.state.model_copy(deep=True))
    ana.tick("1h")
    out.append(ana.state.model_copy(deep=True))
    ana.event("order.placed", "2h", data={"order_id": "o-1"})
    out.append(ana.state.model_copy(deep=True))
    return out


def _as_orjson_wrote_it(state: ProfileState) -> bytes:
    due = state.next_due()
    return orjson.dumps(
        {
            "due": due.timestamp() if due else None,
            "state": state.model_dump(mode="json", exclude_defaults=True),
        }
    )


@pytest.mark.parametrize("index", range(4))
def test_the_value_is_what_orjson_wrote_and_reads_back_equal(index: int) -> None:
    state = _states()[index]
    raw = state_to_bytes(state)
    assert raw == _as_orjson_wrote_it(state)  # changelogs written before read the same
    assert state_from_bytes(raw) == state
    due = state.next_due()
    assert due_from_bytes(raw) == (due.timestamp() if due else None)


def test_a_value_in_another_key_order_is_still_read() -> None:
    state = _states()[2]
    body = state.model_dump(mode="json", exclude_defaults=True)
    raw = orjson.dumps({"state": body, "due": None})
    assert state_from_bytes(raw) == state
