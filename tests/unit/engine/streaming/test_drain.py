"""The fetch loop's inline delivery: a coroutine stepped by hand, finished like a task."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from engine.streaming.drain import drain_messages, start


async def test_a_coroutine_that_never_waits_finishes_inline() -> None:
    done: list[str] = []

    async def deliver() -> None:
        done.append("delivered")

    assert start(deliver()) is None
    assert done == ["delivered"]


async def test_an_error_before_the_first_wait_is_raised_by_start() -> None:
    async def deliver() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        start(deliver())


async def test_a_coroutine_that_waits_is_finished_by_the_awaitable() -> None:
    loop = asyncio.get_running_loop()
    room: asyncio.Future[int] = loop.create_future()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("before")
        got = await room
        steps.append(f"after {got}")
        await asyncio.sleep(0)  # a bare yield to the loop, too
        return "delivered"

    rest = start(deliver())
    assert rest is not None
    assert steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    room.set_result(7)
    assert await task == "delivered"
    assert steps == ["before", "after 7"]


async def test_an_error_after_the_wait_reaches_the_awaiter() -> None:
    loop = asyncio.get_running_loop()
    room: asyncio.Future[None] = loop.create_future()

    async def deliver() -> None:
        await room
        raise RuntimeError("broken after the wait")

    rest = start(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    room.set_result(None)
    with pytest.raises(RuntimeError, match="broken after the wait"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def deliver() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = start(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert never.cancelled()  # the task waited on the coroutine's own future


# --- the loop itself, with a consumer double that has what faust's loop reads ---------


@dataclass
class _Message:
    topic: str
    offset: int


@dataclass
class _Flag:
    value: bool = False

    def is_set(self) -> bool:
        return self.value


@dataclass
class _Diag:
    def set_flag(self, flag: str) -> None:
        pass

    def unset_flag(self, flag: str) -> None:
        pass


@dataclass
class _Topics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


@dataclass
class _App:
    topics: _Topics = field(default_factory=_Topics)


@dataclass
class _Consumer:
    """Just what `drain_messages` touches on faust's Consumer."""

    batches: list[list[tuple[str, _Message]]]
    room: asyncio.Event
    delivered: list[int] = field(default_factory=list)
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    _stopped: _Flag = field(default_factory=_Flag)
    _read_offset: defaultdict[str, int | None] = field(
        default_factory=lambda: defaultdict(lambda: None)  # as faust's
    )
    diag: _Diag = field(default_factory=_Diag)
    _commit_every: int | None = None
    _n_acked: int = 0
    app: _App = field(default_factory=_App)
    suspend_flow: asyncio.Event = field(default_factory=asyncio.Event)
    consumer_stopped_errors: tuple[type[BaseException], ...] = ()
    should_stop: bool = False
    waited: int = 0

    async def callback(self, message: _Message) -> None:
        if message.offset == 3 and not self.room.is_set():
            self.waited += 1
            await self.room.wait()  # a full stream buffer
        self.delivered.append(message.offset)

    def getmany(self, timeout: float) -> AsyncIterator[tuple[str, _Message]]:
        async def records() -> AsyncIterator[tuple[str, _Message]]:
            if not self.batches:
                self._stopped.value = True
                return
            for record in self.batches.pop(0):
                yield record

        return records()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _add_gap(self, tp: str, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def wait_first(self, *coros: Any) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()


async def test_the_loop_delivers_in_order_waits_for_room_and_acks_gaps() -> None:
    room = asyncio.Event()
    tp = "events-0"
    consumer = _Consumer(
        batches=[
            [(tp, _Message(tp, 1)), (tp, _Message(tp, 2)), (tp, _Message(tp, 3))],
            [(tp, _Message(tp, 4)), (tp, _Message(tp, 7))],  # 5 and 6 compacted away
        ],
        room=room,
    )
    asyncio.get_running_loop().call_later(0.05, room.set)
    await asyncio.wait_for(drain_messages(consumer, fetcher=consumer), timeout=5)
    assert consumer.delivered == [1, 2, 3, 4, 7]
    assert consumer.waited == 1
    assert consumer._read_offset[tp] == 7
    assert consumer.gaps == [(tp, 5, 7)]


async def test_a_suspended_flow_gives_up_a_blocked_delivery() -> None:
    room = asyncio.Event()  # never set: only the suspension ends the wait
    tp = "events-0"
    consumer = _Consumer(batches=[[(tp, _Message(tp, 3)), (tp, _Message(tp, 4))]], room=room)
    asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
    await asyncio.wait_for(drain_messages(consumer, fetcher=consumer), timeout=5)
    assert consumer.delivered == [4]  # 3 was blocked when the rebalance came
    assert consumer._read_offset[tp] == 4
