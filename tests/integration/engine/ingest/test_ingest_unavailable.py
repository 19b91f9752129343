"""When Kafka stops answering, the ingestion API answers 503 with Retry-After within its
produce timeout, and accepts again once Kafka is back.

The shared broker cannot be paused, so this test starts a broker of its own
(deploy/kafka/start on ports of its own, data in the test's directory) and stops it
with SIGSTOP: a broker that holds its connections open and answers nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestServer

from engine.ingest.server import build_ingest_app, new_producer
from engine.streaming.topics import TopicSpec, ensure_topics
from schemas.settings import Settings
from tests.integration.engine.ingest.test_ingest_api import AUTH, TOKEN, event
from tests.support.kafka import ROOT

pytestmark = pytest.mark.integration

PORT, CONTROLLER_PORT = 19392, 19393


@pytest.fixture
def paused_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(bootstrap, pid) of a broker of this test's own, stopped for good at teardown."""
    main_home = ROOT / ".kafka"
    home = tmp_path / "kafka"
    home.mkdir()
    if (main_home / "classpath.txt").exists():  # Maven's answer, so it is not asked again
        (home / "classpath.txt").write_bytes((main_home / "classpath.txt").read_bytes())
    env = {
        **os.environ,
        "KAFKA_PORT": str(PORT),
        "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT),
        "KAFKA_HOME_DIR": str(home),
        "KAFKA_HEAP": "-Xmx256m -Xms64m",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_INTERNAL_PARTITIONS": "1",
    }
    out = subprocess.run(
        [str(ROOT / "deploy/kafka/start")], env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    pid = int((home / f"kafka-{PORT}.pid").read_text().split()[0])
    try:
        yield out.stdout.strip().splitlines()[-1], pid
    finally:
        os.kill(pid, signal.SIGCONT)
        subprocess.run(
            [str(ROOT / "deploy/kafka/stop")], env={**env, "KAFKA_WIPE": "1"}, timeout=120
        )


async def test_503_with_retry_after_while_kafka_does_not_answer(
    paused_broker: tuple[str, int],
) -> None:
    bootstrap, pid = paused_broker
    settings = Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_profile_events="profile-events-paused",
        topic_partitions=2,
        ingest_api_token=TOKEN,
        ingest_produce_timeout_seconds=2.0,
    )
    await ensure_topics(settings, [TopicSpec(settings.topic_profile_events, 2)])
    producer = new_producer(settings)
    await producer.start()
    server = TestServer(build_ingest_app(settings, producer), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as client:
            first = await client.post("/v1/events", json={"events": [event(0)]}, headers=AUTH)
            assert first.status_code == 202, first.text
            os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            paused = await client.post("/v1/events", json={"events": [event(1)]}, headers=AUTH)
            waited = time.monotonic() - started
            assert paused.status_code == 503, paused.text
            assert paused.headers["Retry-After"] == "1"
            assert "send the batch again" in paused.json()["error"]
            assert 1.5 < waited < 5, waited
            os.kill(pid, signal.SIGCONT)
            again = await client.post("/v1/events", json={"events": [event(1)]}, headers=AUTH)
            assert again.status_code == 202, again.text
    finally:
        os.kill(pid, signal.SIGCONT)
        await server.close()
        await producer.stop()
