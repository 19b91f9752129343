"""wait_until: goes on as soon as the condition holds, fails naming what never happened."""

from __future__ import annotations

import time

import pytest

from tests.support.waiting import wait_until


class Dead:
    def alive(self) -> bool:
        return False

    def log_text(self) -> str:
        return "worker log: Traceback"


async def test_it_returns_the_first_true_value_of_a_plain_or_async_condition() -> None:
    calls = iter([0, 0, 7])
    assert await wait_until(lambda: next(calls), 5, interval=0.01) == 7

    async def ready() -> str:
        return "yes"

    assert await wait_until(ready, 5) == "yes"


async def test_it_fails_after_the_timeout_naming_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"the changelog did not happen within 0\.2 s"):
        await wait_until(lambda: False, 0.2, what="the changelog", interval=0.05)
    assert 0.2 <= time.monotonic() - started < 2


async def test_a_dead_watched_process_ends_the_wait_at_once_with_its_log() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match="worker log: Traceback"):
        await wait_until(lambda: False, 30, watch=[Dead()])
    assert time.monotonic() - started < 2
