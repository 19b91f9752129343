"""The one rate limiter: waiting callers get slots in order; the sandbox refuses instead."""

from __future__ import annotations

import pytest

from connectors.ratelimit import TokenBucket


def test_try_take_allows_the_burst_then_one_slot_per_interval() -> None:
    bucket = TokenBucket(rate=5, burst=5)
    assert [bucket.try_take(100.0) for _ in range(8)] == [True] * 5 + [False] * 3
    assert bucket.try_take(100.2)  # one slot at 5/s, despite float rounding of the schedule
    assert not bucket.try_take(100.2)
    assert [bucket.try_take(101.4) for _ in range(6)] == [True] * 5 + [False]


def test_a_refused_take_reserves_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.try_take(0.0)
    assert not bucket.try_take(0.5)
    assert bucket.reserve(0.5) == pytest.approx(1.0)  # the refusal kept no slot


def test_reserving_several_units_pushes_the_next_caller_back_by_all_of_them() -> None:
    bucket = TokenBucket(rate=100, burst=1)  # campaigns: profiles a second
    assert bucket.reserve(10.0, units=50) == 10.0
    assert bucket.reserve(10.0, units=10) == pytest.approx(10.5)
    assert bucket.reserve(11.0) == pytest.approx(11.0)
