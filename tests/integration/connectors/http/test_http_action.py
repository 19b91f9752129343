"""Custom HTTP actions on the real broker: the call is made, its answer picks the path."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.engine.worker.test_engine_flow import deploy
from tests.support.builders import profile_event
from tests.support.kafka import Stack, Worker, collect, produce

pytestmark = pytest.mark.integration

JOURNEY = """\
id: crm-sync
name: CRM sync
entry: {event: order.placed}
start: notify-crm
activities:
  notify-crm:
    type: http
    method: POST
    url: URL
    body: {name: 'profile.first_name', total: 'event.data.total'}
    timeout: 5s
    next: thank
    on_error: failed
  thank:
    type: whatsapp
    template: welcome
    language: es
    parameters: {body: ['profile.first_name']}
    next: done
  failed: {type: end}
  done: {type: end}
"""


async def test_http_action_calls_out_and_branches_on_the_answer(
    kafka_bootstrap: str, unique: str, tmp_path: Any
) -> None:
    received: list[tuple[dict[str, Any], str | None]] = []

    async def crm(request: web.Request) -> web.Response:
        body = await request.json()
        received.append((body, request.headers.get("Idempotency-Key")))
        if body["name"] == "Bad":
            return web.json_response({"error": "refused"}, status=500)
        return web.json_response({"id": "crm-1"})

    app = web.Application()
    app.router.add_post("/hook", crm)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    stack = Stack(kafka_bootstrap, unique)
    worker = Worker(stack, tmp_path, role="engine,http")
    try:
        await deploy(stack, JOURNEY.replace("URL", f"http://127.0.0.1:{server.port}/hook"))
        worker.start()
        events = [
            (
                pid,
                profile_event(
                    f"o-{pid}",
                    "order.placed",
                    pid,
                    attributes={"first_name": name, "phone": "+34600111222"},
                    data={"total": 10},
                ),
            )
            for pid, name in (("p-good", "Ana"), ("p-bad", "Bad"))
        ]
        await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], events)
        steps = await collect(
            stack.bootstrap,
            stack.env["TOPIC_JOURNEY_STEPS"],
            lambda r: sum(1 for s in r if s["kind"] == "exited") >= 2,
            90,
            watch=[worker],
        )
    finally:
        worker.kill()
        await server.close()

    outcomes = {
        s["profile_id"]: s["outcome"]
        for s in steps
        if s["kind"] == "activity" and s["activity_id"] == "notify-crm"
    }
    assert outcomes == {"p-good": "ok", "p-bad": "error"}
    exits = {s["profile_id"]: s["activity_id"] for s in steps if s["kind"] == "exited"}
    assert exits == {"p-good": "done", "p-bad": "failed"}
    assert sorted(b["name"] for b, _ in received) == ["Ana", "Bad"]
    assert all(b["total"] == 10 for b, _ in received)
    assert {key for _, key in received} == {
        "crm-sync:1:p-good:1:notify-crm:1",
        "crm-sync:1:p-bad:1:notify-crm:1",
    }
    sends = await collect(stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], lambda r: False, 2)
    assert [s["profile_id"] for s in sends] == ["p-good"]
