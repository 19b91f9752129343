"""A running engine worker (engine + WhatsApp connector roles, web port on) against the
in-process Cloud API sandbox, with the console's journeys deployed: what `inspect` and the
browser tests ask about.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from engine.core.loader import parse_journey
from engine.streaming.registry import next_deployment, publish_deployments
from engine.streaming.topics import ensure_topics
from tests.integration.conftest import APP_SECRET, PHONE_NUMBER_ID, TOKEN
from tests.support.builders import profile_event
from tests.support.kafka import ROOT, Stack, produce

GREET = """\
id: greet
name: Greeting
entry: {event: user.signed_up, condition: 'profile.language == "es"'}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""

# Quiet all around the test's run (two hours either side of now, UTC): the message is skipped.
NIGHT = """\
id: night
name: Night promo
entry: {{event: promo.due}}
quiet_hours: {{start: '{start}', end: '{end}', timezone: UTC, action: skip}}
start: send
activities:
  send: {{type: whatsapp, template: welcome, language: es, parameters: {{body: ['profile.first_name']}}, next: done}}
  done: {{type: end}}
"""

CART = """\
id: cart
name: Cart reminder
entry: {event: cart.abandoned}
exit_on: [{event: order.placed}]
start: pause
activities:
  pause: {type: wait, duration: 1h, next: done}
  done: {type: end}
"""


def night_journey() -> str:
    now = datetime.now(UTC)
    return NIGHT.format(
        start=(now - timedelta(hours=2)).strftime("%H:%M"),
        end=(now + timedelta(hours=2)).strftime("%H:%M"),
    )


def attributes(name: str, language: str = "es") -> dict[str, Any]:
    return {
        "phone": "+34600111222",
        "first_name": name,
        "language": language,
        "whatsapp_consent": "opted_in",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ConsoleStack:
    """The worker's web address, its topics, and a way to publish profile events."""

    stack: Stack
    url: str
    env: dict[str, str]
    log_path: Path

    async def publish(self, *events: dict[str, Any]) -> None:
        topic = self.stack.env["TOPIC_PROFILE_EVENTS"]
        await produce(self.stack.bootstrap, topic, [(e["profile_id"], e) for e in events])

    def event(self, event_id: str, type_: str, profile_id: str, **kw: Any) -> dict[str, Any]:
        return profile_event(event_id, type_, profile_id, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def console_token() -> str | None:
    """The worker's CONSOLE_TOKEN (a test module may override this fixture)."""
    return None


@pytest_asyncio.fixture
async def console_stack(
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
    start_sandbox: Callable[..., Awaitable[Any]],
    console_token: str | None,
) -> AsyncIterator[ConsoleStack]:
    sandbox = await start_sandbox()
    port = free_port()
    stack = Stack(kafka_bootstrap, unique)
    env = {
        **stack.env,
        "WORKER_WEB_PORT": str(port),
        "WHATSAPP_API_URL": sandbox.url,
        "WHATSAPP_TOKEN": TOKEN,
        "WHATSAPP_APP_SECRET": APP_SECRET,
        "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        "DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    if console_token is not None:
        env["CONSOLE_TOKEN"] = console_token
    await deploy_journeys(stack)
    log_path = tmp_path / "worker.log"
    proc = start_worker(env, log_path)
    url = f"http://127.0.0.1:{port}"
    running = ConsoleStack(stack, url, env, log_path)
    try:
        await wait_ready(url, proc, running)
        yield running
    finally:
        stop_worker(proc)
        print(f"--- worker log ---\n{running.log()}")


async def deploy_journeys(stack: Stack) -> None:
    """Create the stack's topics and deploy GREET, NIGHT and CART."""
    settings = stack.settings
    await ensure_topics(settings)
    deployments = []
    for text in (GREET, night_journey(), CART):
        dep = next_deployment(parse_journey(text), None)
        assert dep is not None
        deployments.append(dep)
    await publish_deployments(settings, deployments)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_worker(env: dict[str, str], log_path: Path, role: str = "all") -> subprocess.Popen[bytes]:
    """`journeyctl worker --role ROLE` (web port on) in a subprocess logging to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--role", role],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_ready(url: str, proc: subprocess.Popen[bytes], running: ConsoleStack) -> None:
    deadline = time.monotonic() + 90
    token = running.env.get("CONSOLE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=2, trust_env=False, headers=headers) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the worker died:\n{running.log()}"
            try:
                ready = await client.get(url + "/readyz")
                journeys = await client.get(url + "/api/journeys")
                if ready.status_code == 200 and len(journeys.json()["journeys"]) == 3:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"the worker was not ready in 90 s:\n{running.log()}")


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not seen in {seconds:g} s")
