"""The sandbox's messaging-limit bookkeeping: what a send costs and which users expire."""

from __future__ import annotations

from connectors.whatsapp.sandbox.config import SandboxConfig
from connectors.whatsapp.sandbox.state import SandboxState
from tests.unit.connectors.whatsapp.test_sandbox import TOKEN, FakeClock

DAY = 24 * 3600.0
START = 1_750_000_000.0


class LookedAt(float):
    """A reach time that counts how often the window check reads it (`now - at`)."""

    reads = 0

    def __rsub__(self, other: float) -> float:
        LookedAt.reads += 1
        return other - float(self)


def state(clock: FakeClock, limit: int | None = None) -> SandboxState:
    return SandboxState(SandboxConfig(token=TOKEN, clock=clock, messaging_limit=limit))


def test_a_send_looks_at_the_oldest_user_reached_not_at_every_one() -> None:
    # The bench's sandbox reached ~40k users; scanning them all per send took 6 ms a send
    # and starved its event loop until the connector's calls timed out.
    sandbox = state(FakeClock(START))
    for n in range(5_000):
        sandbox.reached[f"3460{n:07d}"] = LookedAt(START)
    LookedAt.reads = 0
    for n in range(100):
        assert not sandbox.over_messaging_limit(f"3461{n:07d}")
    assert LookedAt.reads <= 100
    assert len(sandbox.reached) == 5_100


def test_only_users_who_left_the_window_stop_counting() -> None:
    clock = FakeClock(START)
    sandbox = state(clock, limit=2)
    assert not sandbox.over_messaging_limit("34600000001")
    clock.now += 10 * 3600
    assert not sandbox.over_messaging_limit("34600000002")
    assert sandbox.over_messaging_limit("34600000003")  # the window is full

    clock.now = START + DAY  # the first user leaves the window; the second is still in it
    assert not sandbox.over_messaging_limit("34600000003")
    assert sandbox.over_messaging_limit("34600000004")
    assert not sandbox.over_messaging_limit("34600000002")  # still reached: not a new user
    assert list(sandbox.reached) == ["34600000002", "34600000003"]
