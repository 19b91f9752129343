"""Fixtures of the reliability tests: topics per test, worker subprocesses, sandbox, tails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web

from connectors.whatsapp.sandbox import STATE, SandboxConfig, build_app
from connectors.whatsapp.webhook import build_webhook_app, new_producer
from schemas.settings import Settings
from tests.reliability.support import (
    APP_SECRET,
    PHONE_NUMBER_ID,
    TEMPLATES,
    TOKEN,
    Sandbox,
    TopicTail,
    open_tail,
)
from tests.support.kafka import Stack, Worker

StartWorker = Callable[..., Worker]
StartReceiver = Callable[..., Awaitable[str]]
StartSandbox = Callable[..., Awaitable[Sandbox]]
OpenTail = Callable[[Stack, str], Awaitable[TopicTail]]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[StartWorker]:
    """`workers(stack, name, role=...)` starts `journeyctl worker`; all are killed at teardown."""
    started: list[Worker] = []

    def start(stack: Stack, name: str = "worker", role: str = "all") -> Worker:
        worker = Worker(stack, tmp_path, role=role, name=name)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.kill()
        # pytest shows this only when the test fails.
        print(f"--- {worker.log_path.name} (last lines) ---\n{worker.log_text()[-3000:]}")


@pytest_asyncio.fixture
async def start_sandbox() -> AsyncIterator[StartSandbox]:
    """`await start_sandbox(**config)`: the Cloud API sandbox on 127.0.0.1, an ephemeral port.

    Served as `journeyctl sandbox` serves it (aiohttp's AppRunner, no handler cancellation):
    a call the client gave up on still completes, as a call Meta took does.
    """
    started: list[tuple[web.AppRunner, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Sandbox:
        config: dict[str, Any] = {
            "token": TOKEN,
            "app_secret": APP_SECRET,
            "templates": TEMPLATES,
            "phone_number_ids": (PHONE_NUMBER_ID,),
            "rate_per_second": None,
            "status_delays": (0.05, 0.1, 0.15),
        }
        config.update(overrides)
        app = build_app(SandboxConfig(**config))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        http = httpx.AsyncClient(base_url=url, trust_env=False, timeout=10)
        started.append((runner, http))
        return Sandbox(url=url, state=app[STATE], http=http)

    yield start
    for runner, http in started:
        await http.aclose()
        await runner.cleanup()


@pytest_asyncio.fixture
async def tail() -> AsyncIterator[OpenTail]:
    """`await tail(stack, "TOPIC_JOURNEY_STEPS")`: a reader of the whole topic, kept up to date."""
    opened: list[TopicTail] = []

    async def open_(stack: Stack, env_name: str) -> TopicTail:
        reader = await open_tail(stack.bootstrap, stack.env[env_name])
        opened.append(reader)
        return reader

    yield open_
    for reader in opened:
        await reader.consumer.stop()


@pytest_asyncio.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    """`await start_receiver(settings)`: the webhook receiver on 127.0.0.1; returns its URL."""
    started: list[tuple[web.AppRunner, Any]] = []

    async def start(settings: Settings, **options: Any) -> str:
        producer = new_producer(settings)
        await producer.start()
        runner = web.AppRunner(build_webhook_app(settings, producer, **options), access_log=None)
        await runner.setup()  # starts its Kafka followers and loads profile-phones
        started.append((runner, producer))
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/webhooks/whatsapp"

    yield start
    for runner, producer in started:
        await runner.cleanup()
        await producer.stop()
