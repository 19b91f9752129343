"""Fixtures for the WhatsApp integration tests: the sandbox, the receiver, a connector worker.

Everything runs for real on loopback: the sandbox and the webhook receiver in the test's
event loop, the connector as a faust worker subprocess, Kafka as the session's broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from connectors.whatsapp.sandbox import STATE, SandboxConfig, SandboxState, Template, build_app
from connectors.whatsapp.webhook import RECEIVER, WebhookReceiver, build_webhook_app, new_producer
from engine.streaming.topics import TopicSpec, ensure_topics
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "connectors" / "whatsapp" / "whatsapp_worker.py"
TOKEN = "integration-token"
APP_SECRET = "integration-app-secret"
VERIFY_TOKEN = "integration-verify-token"
PHONE_NUMBER_ID = "100000000000001"
PARTITIONS = 4

# The tests' own templates, so edits to deploy/sandbox/templates.yaml never break them.
TEMPLATES = (
    Template(
        name="welcome",
        language="es",
        category="utility",
        body="¡Hola {{1}}! Gracias por unirte.",
        footer="Responde STOP para darte de baja",
    ),
    Template(
        name="cart_reminder",
        language="es",
        category="marketing",
        body="Hola {{1}}, te has dejado artículos por valor de {{2}}.",
    ),
)


@pytest.fixture
def wa_settings(kafka_bootstrap: str, unique: str) -> Callable[..., Settings]:
    """Settings with this test's own topic names (suffix `unique`)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "topic_profile_events": f"profile-events-{unique}",
            "topic_whatsapp_requests": f"whatsapp-requests-{unique}",
            "topic_delivery_events": f"delivery-events-{unique}",
            "topic_dead_letter": f"dead-letter-{unique}",
            "topic_profile_phones": f"profile-phones-{unique}",
            "topic_whatsapp_controls": f"whatsapp-controls-{unique}",
            "topic_partitions": PARTITIONS,
            "whatsapp_token": TOKEN,
            "whatsapp_app_secret": APP_SECRET,
            "whatsapp_verify_token": VERIFY_TOKEN,
            "whatsapp_phone_number_id": PHONE_NUMBER_ID,
            "whatsapp_timeout_seconds": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


async def _create_topics(settings: Settings) -> None:
    names = [
        settings.topic_profile_events,
        settings.topic_whatsapp_requests,
        settings.topic_delivery_events,
        settings.topic_dead_letter,
    ]
    specs = [TopicSpec(name, settings.topic_partitions) for name in names]
    specs.append(
        TopicSpec(settings.topic_profile_phones, settings.topic_partitions, compacted=True)
    )
    specs.append(TopicSpec(settings.topic_whatsapp_controls, 1, compacted=True))
    await ensure_topics(settings, specs)


async def _produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5, acks="all"
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.fixture
def create_topics() -> Callable[[Settings], Awaitable[None]]:
    """Creates the settings' topics (profile-phones compacted), all with the same partitions."""
    return _create_topics


@pytest.fixture
def produce() -> Callable[[Settings, str, list[tuple[bytes | None, bytes]]], Awaitable[None]]:
    """Produces (key, value) records and waits until the broker has them all."""
    return _produce


@dataclass
class TopicReader:
    """Reads a whole topic from the beginning and keeps every record (key, value) it saw."""

    consumer: AIOKafkaConsumer
    topic: str
    records: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)

    async def poll(self, timeout_ms: int = 200) -> None:
        for batch in (await self.consumer.getmany(timeout_ms=timeout_ms)).values():
            self.records.extend((r.key, r.value) for r in batch)

    def values(self) -> list[dict[str, Any]]:
        return [orjson.loads(v) for _, v in self.records if v is not None]

    async def until(
        self, done: Callable[[list[dict[str, Any]]], bool], *, seconds: float = 30.0
    ) -> list[dict[str, Any]]:
        """Poll until `done(values)` holds; fail with what was seen when time runs out."""
        try:
            async with asyncio.timeout(seconds):
                while not done(self.values()):
                    await self.poll()
        except TimeoutError:
            seen = [orjson.loads(v) for _, v in self.records[-20:] if v is not None]
            pytest.fail(f"{self.topic}: condition not met in {seconds}s; last records: {seen}")
        return self.values()

    async def settle(self, seconds: float) -> list[dict[str, Any]]:
        """Keep reading for `seconds` (to show that nothing more arrives)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.poll(100)
        return self.values()


@pytest_asyncio.fixture
async def read_topic() -> AsyncIterator[Callable[[Settings, str], Awaitable[TopicReader]]]:
    readers: list[TopicReader] = []

    async def open_reader(settings: Settings, topic: str) -> TopicReader:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
        finally:
            await admin.close()
        assert described["partitions"], f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        await consumer.start()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        reader = TopicReader(consumer, topic)
        readers.append(reader)
        return reader

    yield open_reader
    for reader in readers:
        await reader.consumer.stop()


@dataclass
class SandboxServer:
    url: str
    state: SandboxState
    http: httpx.AsyncClient

    def message_ids(self) -> list[str]:
        """The connector's message id of every accepted message, from biz_opaque_callback_data."""
        return [
            orjson.loads(m.biz_opaque_callback_data)["message_id"]
            for m in self.state.messages
            if m.biz_opaque_callback_data
        ]


@pytest_asyncio.fixture
async def start_sandbox() -> AsyncIterator[Callable[..., Awaitable[SandboxServer]]]:
    started: list[tuple[TestServer, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> SandboxServer:
        config: dict[str, Any] = {
            "token": TOKEN,
            "app_secret": APP_SECRET,
            "templates": TEMPLATES,
            "phone_number_ids": (PHONE_NUMBER_ID,),
            "status_delays": (0.05, 0.1, 0.15),
            "webhook_retries": 2,
            "webhook_backoff": 0.05,
        }
        config.update(overrides)
        app = build_app(SandboxConfig(**config))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        http = httpx.AsyncClient(base_url=url, trust_env=False, timeout=5)
        started.append((server, http))
        return SandboxServer(url=url, state=app[STATE], http=http)

    yield start
    for server, http in started:
        await http.aclose()
        await server.close()


@dataclass
class ReceiverServer:
    url: str
    receiver: WebhookReceiver
    http: httpx.AsyncClient

    @property
    def webhook_url(self) -> str:
        return self.url + "/webhooks/whatsapp"


@pytest_asyncio.fixture
async def start_receiver() -> AsyncIterator[Callable[..., Awaitable[ReceiverServer]]]:
    started: list[tuple[web.AppRunner, AIOKafkaProducer, httpx.AsyncClient]] = []

    async def start(settings: Settings, **options: Any) -> ReceiverServer:
        producer = new_producer(settings)
        await producer.start()
        app = build_webhook_app(settings, producer, **options)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()  # starts the Kafka followers and loads profile-phones
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        http = httpx.AsyncClient(base_url=url, trust_env=False, timeout=10)
        started.append((runner, producer, http))
        return ReceiverServer(url=url, receiver=app[RECEIVER], http=http)

    yield start
    for runner, producer, http in started:
        await http.aclose()
        await runner.cleanup()
        await producer.stop()


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that gives Settings() in a subprocess these Kafka, topic and WhatsApp values."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None or not name.startswith(("kafka_bootstrap", "topic_", "whatsapp_")):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value)
    return env


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path: Path, unique: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts the connector in a faust worker subprocess; every one is stopped at teardown."""
    workers: list[WorkerProcess] = []

    def start(settings: Settings, *, app_id: str | None = None, **extra_env: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(workers)}.log"
        env = {
            **os.environ,
            **settings_env(settings),
            "PYTHONPATH": str(ROOT),
            "WA_WORKER_APP_ID": app_id or f"wa-connector-{unique}",
            "WA_WORKER_DATADIR": str(tmp_path / "faust-data"),
            # A killed worker's partitions move once its session expires: keep that short.
            "BROKER_SESSION_TIMEOUT": "6",
            "BROKER_HEARTBEAT_INTERVAL": "1",
            **extra_env,
        }
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, str(WORKER)],
                env=env,
                cwd=tmp_path,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
        # Shown by pytest only when the test fails.
        print(f"--- {worker.log_path.name} (last lines) ---\n{worker.log()}")
