"""faust's fetch loop without four tasks per record: a record that fits is delivered inline.

faust's `Consumer._drain_messages` hands each fetched record to the conductor through
`wait_first(callback(message), suspend_flow.wait())`, so that a delivery blocked on a
full stream buffer gives way to a rebalance. `wait_first` makes four tasks per record
(the delivery, the suspend flag, the stopped and crashed flags), waits on them and cancels
the losers, for every record.
Almost every delivery finishes without waiting (the buffer has room), so here it is
stepped once by hand; only one that has to wait is finished the way faust does it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

import engine.streaming.guard  # noqa: F401  (the version guard)


class _Rest:
    """Awaiting this finishes a coroutine that was already stepped by hand once.

    It passes what the coroutine yields to the task that awaits it, and what the task
    sends or throws back to the coroutine, as `yield from` would: the task sees the
    future the coroutine waits on, and a cancellation reaches the coroutine.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self._coro, self._first
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    to_yield = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Rest(coro, first)


def start(coro: Coroutine[Any, Any, Any]) -> Awaitable[Any] | None:
    """Run `coro` up to its first wait: None if it finished, else what finishes it.

    An exception raised before the first wait propagates here.
    """
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, first)


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """faust-streaming 0.15.3's `Consumer._drain_messages`, delivering through `start`.

    Everything else is faust's: gap acks, the commit every `commit_every` acks, the read
    offsets, a yield to the loop every 100 records, the shutdown paths.
    """
    callback: Callable[[Any], Coroutine[Any, Any, Any]] = consumer.callback
    getmany = consumer.getmany
    consumer_should_stop = consumer._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    set_flag = consumer.diag.set_flag
    unset_flag = consumer.diag.unset_flag
    commit_every = consumer._commit_every
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    suspend_flow = consumer.suspend_flow
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(CONSUMER_FETCHING)
            ait = getmany(timeout=1.0)
            await consumer.sleep(0)  # getmany can return at once, loop after loop
            if not consumer.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await consumer._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and consumer._n_acked >= commit_every:
                            consumer._n_acked = 0
                            await consumer.commit()
                        rest = start(callback(message))
                        if rest is not None:  # a full buffer: wait as faust does
                            await consumer.wait_first(rest, suspend_flow.wait())
                        set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            consumer.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            consumer.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        consumer.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(CONSUMER_FETCHING)
