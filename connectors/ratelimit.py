"""The one rate limiter: a token bucket written as GCRA.

Used wherever something is paced: the WhatsApp connector's calls per business number
(connectors/whatsapp/pacing.py), the sandbox's per-number cap (it refuses instead of
waiting: `try_take`) and the audience fan-out of campaign runs (engine/campaigns).
"""

from __future__ import annotations


class TokenBucket:
    """A token bucket written as GCRA (virtual scheduling): each caller reserves its own slot.

    `rate` tokens per second, at most `burst` at once after an idle spell. A reservation
    is computed at once and never re-ordered, so waiters are served first come, first
    served and a burst of callers is spread exactly 1/rate apart.
    """

    __slots__ = ("_interval", "_paused_until", "_tat", "_tolerance", "burst", "rate")

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.set_rate(rate, burst)
        self._tat = float("-inf")  # theoretical arrival time of the next request
        self._paused_until = float("-inf")

    def set_rate(self, rate: float, burst: int) -> None:
        """Pace at `rate` from the next reservation on; slots already given keep their times."""
        if rate <= 0:
            raise ValueError("rate must be greater than zero")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval

    def reserve(self, now: float, units: int = 1) -> float:
        """Reserve the next `units` slots; return when (on the same clock as `now`) the
        caller may go."""
        tat = max(self._tat, now, self._paused_until)
        start = max(now, self._paused_until, tat - self._tolerance)
        self._tat = tat + units * self._interval
        return start

    def try_take(self, now: float) -> bool:
        """Take a slot if one is free at `now` (no waiting); False leaves the bucket as it was.

        A slot due within a nanosecond counts as free: the schedule adds up float intervals,
        and a caller on time must not be refused for their rounding."""
        if max(self._tat, self._paused_until) - self._tolerance > now + 1e-9:
            return False
        self.reserve(now)
        return True

    def pause(self, now: float, seconds: float) -> None:
        """Hand out no slot for `seconds` (Meta answered 130429), then restart without a burst."""
        until = now + seconds
        if until > self._paused_until:
            self._paused_until = until
            # Slots already reserved keep their order: push the whole schedule back.
            self._tat = max(self._tat, until + self._tolerance)

    def paused_until(self) -> float:
        return self._paused_until
