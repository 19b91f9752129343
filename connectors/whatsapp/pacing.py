"""Pacing of Cloud API calls: a token bucket per business phone number and a cap on calls in flight.

The connector paces to Meta's throughput cap and never drops: a caller waits for its slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from connectors.ratelimit import TokenBucket

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def partition_share(cap: float, owned: int, partitions: int) -> float | None:
    """One worker's pace when the workers of a group share a number's cap: `cap` times the
    share of the requests topic's `partitions` it owns (None when it owns none).

    Requests are keyed by profile id, so each number's traffic spreads over the partitions
    and the shares add up to the cap. A partition with more of one number's traffic than
    the others makes its worker wait longer, never go over the cap.
    """
    if owned <= 0 or partitions <= 0:
        return None
    return cap * min(owned, partitions) / partitions


def default_burst(rate_per_second: float) -> int:
    """Ten milliseconds of traffic (at least one call): enough to absorb timer jitter.

    Kept small on purpose: after a stall on Meta's side the calls that were in flight
    arrive together, and Meta counts them on top of any burst the bucket allows.
    """
    return max(1, int(rate_per_second / 100))


class Pacer:
    """Paces calls per business phone number and bounds how many are in flight overall.

    Use `async with pacer.slot(phone_number_id):` around one API call. The in-flight
    semaphore is taken before the token so that a call leaves as soon as its slot comes
    (taking the token first could let calls pile up behind the semaphore and then leave
    together, above the rate).
    """

    def __init__(
        self,
        *,
        rate_per_second: float,
        max_in_flight: int,
        burst: int | None = None,
        rate_limit_pause: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate_per_second = rate_per_second
        self._fixed_burst = burst
        self.burst = burst if burst is not None else default_burst(rate_per_second)
        self.rate_limit_pause = rate_limit_pause
        self._clock = clock
        self._sleep = sleep
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, phone_number_id: str) -> TokenBucket:
        bucket = self._buckets.get(phone_number_id)
        if bucket is None:
            bucket = self._buckets[phone_number_id] = TokenBucket(self.rate_per_second, self.burst)
        return bucket

    def set_rate(self, rate_per_second: float) -> None:
        """Pace every number, known or new, at `rate_per_second` from its next slot on."""
        self.rate_per_second = rate_per_second
        fixed = self._fixed_burst
        self.burst = fixed if fixed is not None else default_burst(rate_per_second)
        for bucket in self._buckets.values():
            bucket.set_rate(rate_per_second, self.burst)

    async def wait_turn(self, phone_number_id: str) -> None:
        """Wait until this number may make one more call (a pause may move the slot later)."""
        bucket = self.bucket(phone_number_id)
        while True:
            now = self._clock()
            delay = bucket.reserve(now) - now
            if delay > 0:
                await self._sleep(delay)
            # A 130429 that arrived while we slept pauses the number: take a new slot after it.
            if self._clock() >= bucket.paused_until():
                return

    def slot(self, phone_number_id: str) -> _Slot:
        return _Slot(self, phone_number_id)

    def rate_limited(self, phone_number_id: str, seconds: float | None = None) -> None:
        """Meta said this number is over its cap: pause it briefly."""
        pause = self.rate_limit_pause if seconds is None else seconds
        self.bucket(phone_number_id).pause(self._clock(), pause)


class _Slot:
    """`async with pacer.slot(number)`: a place among the calls in flight, then the number's
    turn; the place is given back on the way out. A class rather than an
    asynccontextmanager, whose generator machinery was a visible share of a call's CPU."""

    __slots__ = ("_number", "_pacer")

    def __init__(self, pacer: Pacer, phone_number_id: str) -> None:
        self._pacer = pacer
        self._number = phone_number_id

    async def __aenter__(self) -> None:
        in_flight = self._pacer._in_flight
        await in_flight.acquire()
        try:
            await self._pacer.wait_turn(self._number)
        except BaseException:
            in_flight.release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pacer._in_flight.release()
