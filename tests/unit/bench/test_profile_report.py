"""bench.profile_report: where py-spy's raw stacks put a worker's samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile_report import categories, summarize

RAW = "\n".join(
    [
        "_run_once (asyncio/base_events.py:1);select (selectors.py:9);epoll_wait 40",
        "_run_once (asyncio/base_events.py:1);WhatsAppConnector.handle (connectors/whatsapp/"
        "connector.py:5);CloudApiClient.send (connectors/whatsapp/client.py:7) 30",
        "_run_once (asyncio/base_events.py:1);WhatsAppConnector.handle (connectors/whatsapp/"
        "connector.py:5);WhatsAppConnector._store (connectors/whatsapp/connector.py:9) 20",
        "_run_once (asyncio/base_events.py:1);Fetcher._fetch (aiokafka/fetcher.py:3) 10",
    ]
)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "worker-py-spy.txt"
    path.write_text(RAW + "\n")
    return path


def test_connector_samples_land_in_the_connector_categories(raw: Path) -> None:
    shares = dict(categories(raw))
    assert shares["waiting (event loop idle)"] == pytest.approx(40.0)
    assert shares["Cloud API call (CloudApiClient.send)"] == pytest.approx(30.0)
    assert shares["table and changelog writes (_store)"] == pytest.approx(20.0)
    assert shares["other (faust and asyncio machinery)"] == pytest.approx(10.0)
    assert "rest of a request (handle: table, policy)" not in shares


def test_summary_counts_inclusive_and_self_samples(raw: Path) -> None:
    summary = summarize(raw, top=50)
    inclusive = dict(summary.inclusive)
    assert summary.samples == 100
    assert summary.idle == 40
    assert inclusive["WhatsAppConnector.handle (connectors/whatsapp/connector.py)"] == 50
    assert dict(summary.self_time)["CloudApiClient.send (connectors/whatsapp/client.py)"] == 30


ENGINE_RAW = "\n".join(
    [
        "_run_module_as_main (<frozen runpy>:1);_run_once (asyncio/base_events.py:1);"
        "EngineRuntime._agent (engine/worker/runtime.py:2);EngineRuntime._process_record "
        "(engine/worker/runtime.py:3) 50",
        "_run_module_as_main (<frozen runpy>:1);EngineRuntime.flush (engine/worker/runtime.py:4);"
        "EngineRuntime._flush_locked (engine/worker/runtime.py:5);"
        "EngineRuntime._flush_locked.<locals>.<listcomp> (engine/worker/runtime.py:6);"
        "state_record (engine/worker/runtime.py:7) 20",
        "_run_module_as_main (<frozen runpy>:1);EngineRuntime.flush (engine/worker/runtime.py:4);"
        "EngineRuntime._flush_locked (engine/worker/runtime.py:5);produce_batched "
        "(engine/streaming/produce.py:8) 10",
        "_run_module_as_main (<frozen runpy>:1);SeekingConsumer._drain_messages "
        "(engine/streaming/app.py:9);drain_messages (engine/streaming/drain.py:10) 20",
        "Thread._bootstrap (threading.py:1);WorkerThread.run (mode/threads.py:2);"
        "pthread_cond_timedwait 100",
    ]
)


def test_engine_categories_and_the_main_thread_alone(tmp_path: Path) -> None:
    path = tmp_path / "engine-py-spy.txt"
    path.write_text(ENGINE_RAW + "\n")
    every = dict(categories(path))
    main = dict(categories(path, main_thread=True))
    # All threads: the consumer thread's 100 waiting samples are half of them.
    assert every["waiting (event loop idle)"] == pytest.approx(50.0)
    assert every["interpreter and decoding (_process_record)"] == pytest.approx(25.0)
    # The main thread alone: its 100 samples, none of them waiting.
    assert "waiting (event loop idle)" not in main
    assert main["interpreter and decoding (_process_record)"] == pytest.approx(50.0)
    assert main["serializing states (flush step 1)"] == pytest.approx(20.0)
    assert main["rest of flush (table writes, acks)"] == pytest.approx(10.0)
    assert main["faust delivery (fetch loop, stream iteration)"] == pytest.approx(20.0)


def test_the_connectors_http_transport_and_record_writes_have_their_own_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "connector-py-spy.txt"
    path.write_text(
        "\n".join(
            [
                "_run_once (asyncio/base_events.py:1);_SelectorSocketTransport._read_ready "
                "(asyncio/selector_events.py:2);ResponseHandler.data_received "
                "(aiohttp/client_proto.py:3) 30",
                "_run_once (asyncio/base_events.py:1);ClientRequest.write_bytes "
                "(aiohttp/client_reqrep.py:4) 10",
                "_run_once (asyncio/base_events.py:1);RecordWriter._flush_all "
                "(connectors/whatsapp/records.py:5) 20",
                "_run_once (asyncio/base_events.py:1);Handle._run (asyncio/events.py:6) 40",
            ]
        )
        + "\n"
    )
    shares = dict(categories(path))
    assert shares["HTTP responses and request bodies (aiohttp)"] == pytest.approx(40.0)
    assert shares["Kafka record writes (RecordWriter)"] == pytest.approx(20.0)
    assert shares["other (faust and asyncio machinery)"] == pytest.approx(40.0)


def test_tied_functions_keep_their_stack_order_whatever_the_hash_seed(tmp_path: Path) -> None:
    # Six functions on one stack, all with the same count: a tie the summary must order
    # the same way in every process (a re-rendered report must not reshuffle its rows).
    names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    path = tmp_path / "tied-py-spy.txt"
    path.write_text(";".join(f"{n} (m.py:{i})" for i, n in enumerate(names)) + " 5\n")
    script = (
        "import sys; from pathlib import Path; from bench.profile_report import summarize; "
        "print([n for n, _ in summarize(Path(sys.argv[1])).inclusive])"
    )
    orders = {
        subprocess.run(
            [sys.executable, "-c", script, str(path)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            cwd=Path(__file__).resolve().parents[3],  # the repository, where bench is
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(8)
    }
    assert orders == {f"{[f'{n} (m.py)' for n in names]}\n"}
