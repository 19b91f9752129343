"""The faust wiring: what the worker's Kafka consumer is built with."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from faust.exceptions import NotReady
from faust.transport.drivers import aiokafka as faust_aiokafka

from engine.streaming import app as app_module
from engine.streaming.app import create_app
from engine.streaming.consumer import RECOVERY_FETCH_MAX_WAIT_MS, ShortFetchThread
from engine.worker.batch import FlushFailed
from engine.worker.gctuning import GC_YOUNG_THRESHOLD, tune_gc
from engine.worker.runtime import EngineRuntime
from schemas.settings import Settings


@pytest.mark.parametrize("roles", [frozenset({"engine"}), frozenset({"whatsapp"})])
async def test_worker_consumer_fetch_wait_comes_from_settings(
    roles: frozenset[str], tmp_path: Path
) -> None:
    # faust builds its worker consumer with fetch_max_wait_ms=1500; a fetch that asks
    # only for idle partitions then holds every busy one back for 1.5 s.
    settings = Settings(
        whatsapp_token="sandbox-token",
        kafka_fetch_max_wait_ms=37,
        kafka_fetch_min_bytes=4096,
        data_dir=tmp_path,
        app_id=f"wiring-{tmp_path.name}",
    )
    app = create_app(settings, roles, web=False)
    thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
    assert isinstance(thread, ShortFetchThread)
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37
    assert consumer._fetch_min_bytes == 4096
    assert consumer._group_id == settings.app_id  # still faust's worker consumer


def test_worker_producer_linger_comes_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        whatsapp_token="sandbox-token",
        kafka_producer_linger_ms=7,
        data_dir=tmp_path,
        app_id=f"linger-{tmp_path.name}",
    )
    app = create_app(settings, frozenset({"whatsapp"}), web=False)
    producer = cast(Any, app.producer)
    assert producer.linger_ms == 7
    assert producer._settings_default()["linger_ms"] == 7  # what aiokafka is built with


async def test_recovery_fetches_with_fausts_wait_and_processing_with_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # faust's changelog recovery is built for its own 1,500 ms; the short wait is put
    # back by perform_seek, the last step of every recovery.
    settings = Settings(
        kafka_fetch_max_wait_ms=37,
        kafka_fetch_min_bytes=4096,
        data_dir=tmp_path,
        app_id=f"recovery-{tmp_path.name}",
    )
    app = create_app(settings, frozenset({"engine"}), web=False)
    consumer: Any = app.consumer
    fetcher = SimpleNamespace(_fetch_max_wait_ms=37, _fetch_min_bytes=4096)
    monkeypatch.setattr(
        consumer, "_thread", SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher))
    )
    monkeypatch.setattr(consumer, "assignment", lambda: set())
    calls: list[str] = []

    async def assigned(self: Any, assigned: set[Any], generation_id: int = 0) -> None:
        calls.append(f"assigned:{fetcher._fetch_max_wait_ms}/{fetcher._fetch_min_bytes}")

    async def seek(self: Any) -> None:
        calls.append(f"seek:{fetcher._fetch_max_wait_ms}/{fetcher._fetch_min_bytes}")

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_assigned", assigned)
    monkeypatch.setattr(faust_aiokafka.Consumer, "perform_seek", seek)
    await consumer.on_partitions_assigned(set(), 1)
    # Recovery: faust's wait, answered at the first byte (a small changelog must not wait).
    assert fetcher._fetch_max_wait_ms == RECOVERY_FETCH_MAX_WAIT_MS == 1500
    assert fetcher._fetch_min_bytes == 1
    await consumer.perform_seek()
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (37, 4096)
    assert calls == ["assigned:1500/1", "seek:1500/1"]


def test_fetch_wait_is_bounded() -> None:
    with pytest.raises(ValueError, match="kafka_fetch_max_wait_ms"):
        Settings(kafka_fetch_max_wait_ms=0)
    with pytest.raises(ValueError, match="kafka_fetch_min_bytes"):
        Settings(kafka_fetch_min_bytes=0)


async def test_a_failed_flush_stops_the_worker_and_commits_nothing_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Later batches were interpreted against the failed batch's states: storing them would
    # mark its events as seen although their effects may never have reached Kafka.
    settings = Settings(data_dir=tmp_path, app_id=f"flush-{tmp_path.name}")
    app = create_app(settings, frozenset({"engine"}), web=False)
    runtime: EngineRuntime = app.runtime  # type: ignore[attr-defined]
    crashes: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashes.append(reason)

    monkeypatch.setattr(app, "crash", crash)
    acked: list[Any] = []

    class Stream:
        async def ack(self, event: Any) -> None:
            acked.append(event)

    runtime._batch.append(cast(Any, "record-1"))
    # The producer never started: step 2 fails, as a Kafka error would.
    with pytest.raises(NotReady):
        await runtime.flush(cast(Any, Stream()))
    assert len(crashes) == 1 and isinstance(crashes[0], NotReady)

    runtime._batch.append(cast(Any, "record-2"))
    with pytest.raises(FlushFailed):
        await runtime.flush(cast(Any, Stream()))
    assert cast(list[Any], runtime._batch) == ["record-2"]  # not taken: never stored or acked
    assert acked == []
    assert len(crashes) == 1


async def test_timers_whose_ticks_were_not_produced_stay_due(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, app_id=f"ticks-{tmp_path.name}")
    app = create_app(settings, frozenset({"engine"}), web=False)
    runtime: EngineRuntime = app.runtime  # type: ignore[attr-defined]
    runtime.definitions.ready.set()
    runtime.timers.schedule("p-1", 1.0)
    runtime.timers.schedule("p-2", 2.0)
    # The producer never started: producing the ticks fails, as a Kafka error would.
    with pytest.raises(NotReady):
        await runtime._fire_timers()
    assert sorted(runtime.timers.pop_due(10.0)) == [("p-1", 1.0), ("p-2", 2.0)]


def test_tune_gc_freezes_the_start_up_objects_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(young_threshold=12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > 1_000  # the imported modules at least
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_worker_runs_with_the_tuned_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[tuple[int, ...], int]] = []

    class FakeWorker:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.spinner: object = object()

        def execute_from_commandline(self) -> None:
            seen.append((gc.get_threshold(), gc.get_freeze_count()))

    async def no_topics(settings: Settings) -> None:
        return None

    monkeypatch.setattr(app_module, "ensure_topics", no_topics)
    monkeypatch.setattr(app_module, "create_app", lambda *a, **k: object())
    monkeypatch.setattr(faust, "Worker", FakeWorker)
    before = gc.get_threshold()
    try:
        app_module.run_worker(Settings(whatsapp_token="sandbox-token"), web=False)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert len(seen) == 1
    threshold, frozen = seen[0]
    assert threshold[0] == GC_YOUNG_THRESHOLD and frozen > 1_000


async def test_the_engine_commits_a_batch_the_configured_window_after_its_first_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=tmp_path, app_id=f"window-{tmp_path.name}", engine_batch_window_ms=40
    )
    app = create_app(settings, frozenset({"engine"}), web=False)
    runtime: EngineRuntime = app.runtime  # type: ignore[attr-defined]
    runtime.definitions.ready.set()
    runtime.audience.ready.set()
    monkeypatch.setattr(runtime, "_process_record", lambda *args: None)
    delays: list[float] = []
    loop = asyncio.get_running_loop()

    def call_later(delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        delays.append(delay)
        return asyncio.TimerHandle(loop.time() + 3600, callback, args, loop)

    monkeypatch.setattr(loop, "call_later", call_later)

    class Records:
        async def events(self) -> AsyncIterator[str]:
            for record in ("record-1", "record-2"):
                yield record

    class Stream:
        def noack(self) -> Records:
            return Records()

    await runtime._agent(cast(Any, Stream()))
    assert delays == [0.04]  # one timer, for the batch's first record
    assert cast(list[Any], runtime._batch) == ["record-1", "record-2"]
