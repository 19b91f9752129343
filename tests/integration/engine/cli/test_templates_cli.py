"""`journeyctl templates sync` and `list` as an operator runs them: sandbox and real broker."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings
from schemas.templates import load_templates
from tests.integration.conftest import TEMPLATES, TOKEN, settings_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]
WABA = "200000000000001"


async def journeyctl(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    # Async, so the sandbox in this test's loop keeps answering while the command runs.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sync_writes_the_templates_and_publishes_what_list_shows(
    wa_settings: Callable[..., Settings],
    start_sandbox: Callable[..., Awaitable[Any]],
    create_topics: Callable[[Settings], Awaitable[None]],
    tmp_path: Path,
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    sandbox = await start_sandbox()
    env = {**settings_env(settings), "WHATSAPP_API_URL": sandbox.url, "WHATSAPP_WABA_ID": WABA}
    output = tmp_path / "templates.yaml"

    code, out, err = await journeyctl(
        env, "templates", "sync", "--output", str(output), "--publish"
    )
    assert code == 0, err
    assert "wrote 2 template(s)" in err and "published 2 template(s)" in err
    assert TOKEN not in out + err
    key = lambda t: (t.name, t.language)  # noqa: E731
    assert sorted(load_templates(output), key=key) == sorted(TEMPLATES, key=key)

    code, out, err = await journeyctl(env, "templates", "list")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["cart_reminder"][:5] == ["cart_reminder", "es", "APPROVED", "UNKNOWN", "marketing"]
    assert rows["welcome"][:5] == ["welcome", "es", "APPROVED", "UNKNOWN", "utility"]

    no_waba = {k: v for k, v in env.items() if k != "WHATSAPP_WABA_ID"}
    code, _, err = await journeyctl(no_waba, "templates", "sync")
    assert code == 4 and "WHATSAPP_WABA_ID is not set" in err
