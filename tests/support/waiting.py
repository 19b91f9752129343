"""Waiting for a condition instead of sleeping for a guess: `wait_until`.

A test that must not go on before something has happened (a worker owns its partitions,
a state reached the changelog, a definition reached the worker) polls for it, so it goes
on as soon as it holds, and fails with a message naming what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, overload

T = TypeVar("T")


class Process(Protocol):
    """A watched process: its death ends the wait at once, with its log."""

    def alive(self) -> bool: ...

    def log_text(self) -> str: ...


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.1,
    watch: tuple[Process, ...] | list[Process] = (),
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.1,
    watch: tuple[Process, ...] | list[Process] = (),
) -> T: ...


async def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    *,
    what: str = "the condition",
    interval: float = 0.1,
    watch: tuple[Process, ...] | list[Process] = (),
) -> Any:
    """Call `condition` (plain or async) until it returns a true value, and return that.

    Raises AssertionError naming `what` after `timeout` seconds, or as soon as a watched
    process has died (with the end of its log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        for process in watch:
            if not process.alive():
                raise AssertionError(f"died waiting for {what}:\n{process.log_text()[-4000:]}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(interval)
