"""`journeyctl inspect` and `GET /api/profiles/{id}` against a running worker on the real broker:
a profile that got a message, one refused at entry, one skipped for quiet hours and one that
exited on an exit event, each with its why-line; phones masked; unknown profiles are 404.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.engine.console.conftest import ConsoleStack, attributes, wait_for
from tests.support.kafka import ROOT

pytestmark = pytest.mark.integration


def inspect(stack: ConsoleStack, profile_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "inspect", profile_id, "--worker", stack.url, *args],
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def inspect_json(stack: ConsoleStack, profile_id: str) -> dict[str, Any]:
    out = inspect(stack, profile_id, "--format", "json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = orjson.loads(out.stdout)
    return result


def why_of(result: dict[str, Any], journey_id: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [w for w in result["why"] if w["journey_id"] == journey_id]
    assert len(lines) == 1, result["why"]
    return lines[0]


async def test_inspect_explains_each_profile(console_stack: ConsoleStack) -> None:
    s = console_stack
    await s.publish(
        s.event("e1", "user.signed_up", "p-got", attributes=attributes("Ana")),
        s.event("e2", "user.signed_up", "p-refused", attributes=attributes("Hans", "de")),
        s.event("e3", "promo.due", "p-quiet", attributes=attributes("Noa")),
        s.event("e4", "cart.abandoned", "p-exit", attributes=attributes("Eva")),
    )

    async def settled() -> bool:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            exit_state = await client.get(f"{s.url}/api/profiles/p-exit")
            return exit_state.status_code == 200 and bool(exit_state.json()["instances"])

    await wait_for(settled, "p-exit in the cart journey")
    await s.publish(s.event("e5", "order.placed", "p-exit"))

    async def done() -> bool:
        results = [inspect_json(s, p) for p in ("p-got", "p-quiet", "p-exit")]
        got, quiet, exited = (r["why"] for r in results)
        return (
            any(w["verdict"] == "completed" and "accepted" in w["text"] for w in got)
            and any(w["verdict"] == "skipped" for w in quiet)
            and any(w["verdict"] == "exited" for w in exited)
        )

    await wait_for(done, "the why-lines of the four profiles", 90)

    got = inspect_json(s, "p-got")
    assert set(got) >= {"profile_id", "instances", "steps", "deliveries", "why"}
    line = why_of(got, "greet")
    assert line["verdict"] == "completed"
    assert "message welcome at send: accepted" in line["text"]
    assert got["deliveries"][0]["status"] == "accepted"
    assert got["state"]["attributes"]["phone"] == "+34******222"
    assert "+34600111222" not in orjson.dumps(got).decode()

    refused = inspect_json(s, "p-refused")
    line = why_of(refused, "greet")
    assert line["verdict"] == "refused"
    assert "entry condition" in line["text"] and "entry condition is false" in line["text"]
    assert refused["state"]["history"]["greet"]["refused"] == 1
    assert refused["steps"] == []  # a refusal writes no step record
    assert why_of(refused, "cart")["verdict"] == "not matched"

    quiet = inspect_json(s, "p-quiet")
    line = why_of(quiet, "night")
    assert line["verdict"] == "skipped"
    assert "quiet_hours" in line["text"]

    exited = inspect_json(s, "p-exit")
    line = why_of(exited, "cart")
    assert line["verdict"] == "exited"
    assert "exit event order.placed" in line["text"]
    assert exited["instances"] == []

    table = inspect(s, "p-quiet")
    assert table.returncode == 0, table.stderr
    assert "quiet_hours" in table.stdout and "Timeline" in table.stdout
    assert "+34600111222" not in table.stdout


async def test_profile_api_answers_state_and_404(console_stack: ConsoleStack) -> None:
    s = console_stack
    await s.publish(s.event("c1", "cart.abandoned", "p-live", attributes=attributes("Lu")))
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:

        async def live() -> bool:
            return (await client.get(f"{s.url}/api/profiles/p-live")).status_code == 200

        await wait_for(live, "p-live's state")
        state = (await client.get(f"{s.url}/api/profiles/p-live")).json()
        [instance] = state["instances"]
        assert (instance["journey_id"], instance["activity_id"]) == ("cart", "pause")
        assert instance["waiting_for"] == "timer" and instance["waiting_until"]
        assert state["consent"] == {"whatsapp": "opted_in"}
        assert state["history"]["cart"]["entries"] == 1
        assert state["attributes"]["phone"] == "+34******222"

        missing = await client.get(f"{s.url}/api/profiles/nobody")
        assert missing.status_code == 404
        assert "nobody" in missing.json()["error"]

    out = inspect(s, "nobody")
    assert out.returncode == 3
    assert "no profile 'nobody'" in out.stderr
