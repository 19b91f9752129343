"""The ingestion API on the real broker: what each request gets back and what Kafka then holds.

In-process for the request behaviours (the app on a loopback port, a real producer); as
`journeyctl ingest` subprocesses for the token check and for kill -9 in the middle of a
client's batches, with an engine worker dropping the retried duplicates by event id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer

from engine.ingest.server import build_ingest_app, new_producer
from engine.streaming.topics import TopicSpec, ensure_topics
from schemas.partitioning import murmur2
from schemas.settings import Settings
from tests.integration.engine.worker.test_engine_flow import deploy
from tests.support.builders import profile_event
from tests.support.kafka import ROOT, Stack, Worker, collect

pytestmark = pytest.mark.integration

TOKEN = "ingest-test-token"
PARTITIONS = 4
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(i: int, profile: str | None = None, **extra: Any) -> dict[str, Any]:
    return {**profile_event(f"ev-{i}", "user.signed_up", profile or f"p-{i}"), **extra}


@pytest.fixture
def settings(kafka_bootstrap: str, unique: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_profile_events=f"profile-events-{unique}",
        topic_partitions=PARTITIONS,
        ingest_api_token=TOKEN,
        ingest_produce_timeout_seconds=3.0,
    )


@pytest_asyncio.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this test's loop, producing to the test's own profile-events topic."""
    await ensure_topics(settings, [TopicSpec(settings.topic_profile_events, PARTITIONS)])
    producer = new_producer(settings)
    await producer.start()
    server = TestServer(build_ingest_app(settings, producer), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as client:
        yield client
    await server.close()
    await producer.stop()


async def read_all(
    bootstrap: str, topic: str, expect: int, seconds: float = 30
) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the topic's records, once `expect` of them are there
    (or after `seconds`)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[tuple[int, bytes, bytes]] = []
    try:
        deadline = time.monotonic() + seconds
        while len(out) < expect and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                out.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
    finally:
        await consumer.stop()
    return out


async def test_a_batch_is_accepted_but_its_bad_events_are_rejected_by_index(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    too_old = event(3, occurred_at="2020-01-01T00:00:00Z")
    batch: list[Any] = [event(0), event(1), {"event_id": "ev-2", "type": "user.signed_up"}, too_old]
    batch += [event(4, data={"blob": "x" * 70_000}), "not an event", event(6, profile="p-0")]
    response = await api.post("/v1/events", json={"events": batch}, headers=AUTH)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 3
    rejected = {r["index"]: r for r in body["rejected"]}
    assert set(rejected) == {2, 3, 4, 5}
    assert rejected[2]["event_id"] == "ev-2"
    assert rejected[2]["error"].startswith("invalid profile event: profile_id: Field required")
    assert "more than 91d before" in rejected[3]["error"]
    assert rejected[4]["error"].startswith("event too large")
    assert rejected[5] == {
        "index": 5,
        "event_id": None,
        "error": "invalid profile event: <root>: Input should be an object",
    }
    # Acknowledged means in Kafka: keyed by profile id, on the key's murmur2 partition.
    records = await read_all(settings.kafka_bootstrap_servers, settings.topic_profile_events, 3)
    assert sorted(orjson.loads(v)["event_id"] for _, _, v in records) == ["ev-0", "ev-1", "ev-6"]
    for partition, key, value in records:
        assert key == orjson.loads(value)["profile_id"].encode()
        assert partition == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS

    metrics = (await api.get("/metrics")).text
    assert "ingest_events_accepted_total 3.0" in metrics
    assert 'ingest_events_rejected_total{reason="too_old"}' in metrics
    assert 'ingest_events_rejected_total{reason="too_large"}' in metrics
    assert "ingest_request_seconds_bucket" in metrics


async def test_ndjson_bodies_reject_a_line_that_is_not_json(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    lines = [orjson.dumps(event(0)), b"{oops", b"", orjson.dumps(event(1))]
    response = await api.post(
        "/v1/events",
        content=b"\n".join(lines) + b"\n",
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 202, response.text
    assert response.json() == {
        "accepted": 2,
        "rejected": [{"index": 1, "event_id": None, "error": "malformed JSON"}],
    }
    records = await read_all(settings.kafka_bootstrap_servers, settings.topic_profile_events, 2)
    assert len(records) == 2


async def test_requests_refused_whole(api: httpx.AsyncClient) -> None:
    one = {"events": [event(0)]}
    missing = await api.post("/v1/events", json=one)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await api.post("/v1/events", json=one, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    not_json = await api.post("/v1/events", content=b"{events: [", headers=AUTH)
    assert not_json.status_code == 400
    assert not_json.json()["error"].startswith("body is not JSON")
    no_list = await api.post("/v1/events", json={"event": event(0)}, headers=AUTH)
    assert no_list.status_code == 400
    many = await api.post("/v1/events", json={"events": [event(0)] * 501}, headers=AUTH)
    assert many.status_code == 413
    assert "at most 500" in many.json()["error"]
    huge = {"events": [event(i, data={"pad": "x" * 30_000}) for i in range(40)]}
    big = await api.post("/v1/events", json=huge, headers=AUTH)
    assert big.status_code == 413
    assert "1048576 bytes" in big.json()["error"]
    ndjson_many = b"\n".join(orjson.dumps(event(i)) for i in range(501))
    many_lines = await api.post(
        "/v1/events",
        content=ndjson_many,
        headers={**AUTH, "Content-Type": "application/x-ndjson"},
    )
    assert many_lines.status_code == 413


async def test_health_and_the_openapi_document(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    document = (await api.get("/openapi.json")).json()
    post = document["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) == {"202", "400", "401", "413", "503"}
    schemas = document["components"]["schemas"]
    assert schemas["EventsRequest"]["properties"]["events"]["maxItems"] == 500
    assert "event_id" in schemas["ProfileEvent"]["required"]


# --- journeyctl ingest as a process ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class IngestProcess:
    """`journeyctl ingest` in a subprocess on its own port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path, self.port = env, log_path, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "ingest", "--port", str(self.port)],
                env={**os.environ, **self.env, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            for _ in range(150):
                assert self.proc is not None and self.proc.poll() is None, self.log()
                try:
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"ingest did not start:\n{self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def ingest_processes(tmp_path: Path) -> Any:
    started: list[IngestProcess] = []

    def make(env: dict[str, str]) -> IngestProcess:
        process = IngestProcess(env, tmp_path / f"ingest-{len(started)}.log")
        started.append(process)
        return process

    yield make
    for process in started:
        process.kill()


def test_the_server_refuses_to_start_without_a_token(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_API_TOKEN")}
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "ingest", "--port", str(free_port())],
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "INGEST_API_TOKEN" in out.stderr


async def test_the_token_can_come_from_a_file(
    tmp_path: Path, kafka_bootstrap: str, unique: str, ingest_processes: Any
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    stack = Stack(kafka_bootstrap, unique, partitions=PARTITIONS)
    process = ingest_processes({**stack.env, "INGEST_API_TOKEN_FILE": str(token_file)}).start()
    await process.ready()
    async with httpx.AsyncClient(base_url=process.url, trust_env=False) as client:
        one = {"events": [event(0)]}
        assert (await client.post("/v1/events", json=one)).status_code == 401
        good = {"Authorization": "Bearer from-a-file"}
        assert (await client.post("/v1/events", json=one, headers=good)).status_code == 202


async def test_replicas_share_the_work(
    kafka_bootstrap: str, unique: str, ingest_processes: Any
) -> None:
    """Two processes, batches sent to each in turn: nothing lives in a process."""
    stack = Stack(kafka_bootstrap, unique, partitions=PARTITIONS)
    env = {**stack.env, "INGEST_API_TOKEN": TOKEN}
    replicas = [ingest_processes(env).start(), ingest_processes(env).start()]
    for replica in replicas:
        await replica.ready()
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        for number in range(6):
            batch = {"events": [event(number * 50 + i) for i in range(50)]}
            url = replicas[number % 2].url + "/v1/events"
            answer = await client.post(url, json=batch, headers=AUTH)
            assert answer.json() == {"accepted": 50, "rejected": []}
    records = await read_all(kafka_bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], 300)
    assert len({orjson.loads(v)["event_id"] for _, _, v in records}) == 300


RETRIED = """\
id: signups
name: Signups
entry: {event: user.signed_up}
reentry: {mode: always}
start: done
activities:
  done: {type: end}
"""


async def post_until_accepted(
    url: Callable[[], str], batch: list[dict[str, Any]], tries: int = 120
) -> dict[str, Any]:
    """A client that sends the batch again until it gets a 202 (any error: wait, retry)."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        for _ in range(tries):
            try:
                response = await client.post(
                    url() + "/v1/events", json={"events": batch}, headers=AUTH
                )
                if response.status_code == 202:
                    return dict(response.json())
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise AssertionError("the batch was never accepted")


async def test_kill_9_mid_batch_a_retrying_client_loses_nothing(
    kafka_bootstrap: str, unique: str, ingest_processes: Any, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, unique, partitions=PARTITIONS)
    await deploy(stack, RETRIED)
    worker = Worker(stack, tmp_path).start()
    try:
        env = {**stack.env, "INGEST_API_TOKEN": TOKEN}
        current = ingest_processes(env).start()
        await current.ready()
        batches = [[event(b * 200 + i) for i in range(200)] for b in range(12)]
        acked: list[int] = []
        four_acked = asyncio.Event()

        async def client() -> None:
            for number, batch in enumerate(batches):
                answer = await post_until_accepted(lambda: current.url, batch)
                assert answer == {"accepted": 200, "rejected": []}
                acked.append(number)
                if len(acked) == 4:
                    four_acked.set()

        sending = asyncio.create_task(client())
        await asyncio.wait_for(four_acked.wait(), 60)
        current.kill()  # the fifth batch is on its way or being produced
        killed_at = len(acked)
        current = ingest_processes(env).start()
        await current.ready()
        await asyncio.wait_for(sending, 120)
        assert killed_at < len(batches)
        # A client that did get its 202 but sends again anyway: duplicates on the topic.
        await post_until_accepted(lambda: current.url, batches[0])

        everything = {e["event_id"] for batch in batches for e in batch}
        topic = await collect(
            kafka_bootstrap,
            stack.env["TOPIC_PROFILE_EVENTS"],
            lambda r: {e["event_id"] for e in r} >= everything and len(r) >= 2600,
            60,
        )
        assert {e["event_id"] for e in topic} == everything
        assert len(topic) >= len(everything) + 200
        steps = await collect(
            kafka_bootstrap,
            stack.env["TOPIC_JOURNEY_STEPS"],
            lambda r: sum(s["kind"] == "entered" for s in r) >= len(everything),
            120,
            watch=[worker],
        )
        await asyncio.sleep(2)  # a duplicate entered late would show now
        steps = await collect(kafka_bootstrap, stack.env["TOPIC_JOURNEY_STEPS"], lambda r: False, 2)
        entered = Counter(s["profile_id"] for s in steps if s["kind"] == "entered")
        assert len(entered) == len(everything)
        assert set(entered.values()) == {1}
    finally:
        worker.kill()
