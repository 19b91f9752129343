"""The console against `make run`'s demo (`python -m engine.cli.demo`), in headless Chromium:
the demo's journeys are listed with their figures, a journey page draws its diagram with
counts, and the profile the demo names for `journeyctl inspect` has why-lines.

The demo runs on the session's broker with this test's topics and free ports, and holds its
services up (DEMO_HOLD_SECONDS) while the browser looks; Ctrl-C (SIGINT) then stops it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.integration.engine.cli.test_demo import _children, _free_ports, _is_service, _kill_group
from tests.integration.engine.console.test_console_browser import browser, shot
from tests.support.kafka import ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["browser"]  # the Chromium fixture, shared with test_console_browser

CONSOLE_LINE = re.compile(r"console: (http://127\.0\.0\.1:\d+/console/) .*journeyctl inspect (\S+)")
DEMO_SECONDS = 200


def _start_demo(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli.demo"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_demo(demo: subprocess.Popen[bytes], services: set[int]) -> None:
    _kill_group(demo.pid, signal.SIGINT)  # as a user's Ctrl-C: the demo stops its services
    try:
        demo.wait(timeout=40)
    except subprocess.TimeoutExpired:
        _kill_group(demo.pid, signal.SIGKILL)
        demo.wait(timeout=10)
    for pid in services:
        if _is_service(pid):
            _kill_group(pid, signal.SIGKILL)


async def test_console_on_the_demo(
    kafka_bootstrap: str, unique: str, tmp_path: Path, browser: Browser
) -> None:
    sandbox_port, webhook_port, web_port = _free_ports(3)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TOPIC_", "DEMO_"))}
    env = {
        **keep,
        **Stack(kafka_bootstrap, unique).env,
        "DEMO_SANDBOX_PORT": str(sandbox_port),
        "DEMO_WEBHOOK_PORT": str(webhook_port),
        "DEMO_DIR": str(tmp_path / "demo"),
        "DEMO_HOLD_SECONDS": "600",
        "WORKER_WEB_PORT": str(web_port),
        "DATA_DIR": str(tmp_path / "worker-data"),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "demo-output.txt"
    demo = _start_demo(env, log)
    services: set[int] = set()
    try:
        deadline = time.monotonic() + DEMO_SECONDS
        found = None
        while found is None:
            assert demo.poll() is None, f"the demo ended:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no console line:\n{log.read_text()[-3000:]}"
            services |= _children(demo.pid)
            found = CONSOLE_LINE.search(log.read_text(errors="replace"))
            await asyncio.sleep(1)
        url, profile_id = found.groups()
        assert url == f"http://127.0.0.1:{web_port}/console/"

        page = await browser.new_page(viewport={"width": 1366, "height": 768})
        await page.goto(url)
        await expect(page.get_by_role("heading", name="Journeys", exact=True)).to_be_visible()
        for journey in ("cart-recovery", "welcome", "winback"):
            await expect(page.get_by_role("link", name=journey, exact=True)).to_be_visible()
        welcome = page.locator("tr", has=page.get_by_role("link", name="welcome", exact=True))
        await expect(welcome.locator("td").nth(5)).not_to_have_text("0")  # entered, 24 h
        await shot(page, "demo-journeys")

        await page.get_by_role("link", name="cart-recovery", exact=True).click()
        await expect(page.locator("svg g.node").first).to_be_visible()
        await expect(page.locator('svg g.node[data-activity="entry"]')).to_contain_text("entered")
        await shot(page, "demo-journey")

        await page.goto(url + "profiles/" + profile_id)
        await expect(page.get_by_role("heading", name=f"Profile {profile_id}")).to_be_visible()
        await expect(page.locator("ul.why li").first).to_be_visible()
        await shot(page, "demo-profile")
    finally:
        _stop_demo(demo, services | _children(demo.pid))
