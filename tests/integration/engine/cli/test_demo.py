"""`make run`'s demo end to end on the test broker: its summary agrees with what happened.

`python -m engine.cli.demo` runs with KAFKA_BOOTSTRAP_SERVERS set, so it uses the session's
broker instead of starting one; this test's own topics and consumer group (Stack), and
free ports for the sandbox, the webhook receiver and the worker's web server, keep it
apart from a demo or a test running beside it. The summary it prints is checked against
the sandbox's record (the line the demo prints) and against the delivery topic.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from engine.streaming.clients import assign_all
from tests.support.kafka import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[4]
DEMO_SECONDS = 150
JOURNEYS = ("cart-recovery", "welcome", "winback")
STATUSES = ("accepted", "sent", "delivered", "read", "failed", "skipped")
SECRETS = ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")
SANDBOX_LINE = re.compile(
    r"messages the sandbox received for this run: (\d+) \(accepted by the connector: (\d+)\)"
)


@dataclass(frozen=True)
class DemoRun:
    code: int
    output: str
    seconds: float
    left_running: list[int]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (the demo starts each service in its own session)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _is_service(pid: int) -> bool:
    try:
        return b"engine.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def run_demo(env: dict[str, str], log: Path) -> DemoRun:
    """Run the demo as `make run` does; whatever happens, leave none of its processes behind."""
    started = time.monotonic()
    services: set[int] = set()
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.demo"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            while demo.poll() is None and time.monotonic() - started < DEMO_SECONDS:
                services |= _children(demo.pid)
                time.sleep(0.5)
            if demo.poll() is None:
                # Ctrl-C, as a user would: the demo stops what it started.
                _kill_group(demo.pid, signal.SIGINT)
                try:
                    demo.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    _kill_group(demo.pid, signal.SIGKILL)
                    demo.wait(timeout=10)
        finally:
            if demo.poll() is None:
                _kill_group(demo.pid, signal.SIGKILL)
                demo.wait(timeout=10)
            left = sorted(pid for pid in services if _is_service(pid))
            for pid in left:
                _kill_group(pid, signal.SIGKILL)
    seconds = time.monotonic() - started
    output = log.read_text(encoding="utf-8", errors="replace")
    return DemoRun(demo.returncode, output, seconds, left)


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of a topic, up to its end offsets when called."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        assert topic in await consumer.topics(), f"no topic {topic}"
        tps = await assign_all(consumer, topic, wait_seconds=10)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        behind = {tp for tp in tps if end[tp] > 0}
        while behind:
            assert time.monotonic() < deadline, f"{topic} could not be read to its end"
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(orjson.loads(r.value) for r in batch if r.value)
            behind = {tp for tp in behind if await consumer.position(tp) < end[tp]}
        return records
    finally:
        await consumer.stop()


def summary_rows(output: str) -> dict[str, dict[str, int]]:
    """The 'Deliveries by journey' table: journey -> status -> count."""
    rows: dict[str, dict[str, int]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)[1:-1]]
        if len(cells) == 1 + len(STATUSES) and cells[0] in JOURNEYS:
            rows[cells[0]] = dict(zip(STATUSES, map(int, cells[1:]), strict=True))
    return rows


@pytest.fixture
def demo_env(kafka_bootstrap: str, unique: str, tmp_path: Path) -> dict[str, str]:
    sandbox_port, webhook_port, web_port = _free_ports(3)
    base = {
        k: v
        for k, v in os.environ.items()
        if k.removesuffix("_FILE") not in SECRETS and not k.startswith(("TOPIC_", "DEMO_"))
    }
    return {
        **base,
        **Stack(kafka_bootstrap, unique).env,
        # Overrides proposed for engine.cli.demo: until it reads them it listens on 8070 and
        # 8080 and logs to the repository's .demo/ (the test skips if those ports are busy).
        "DEMO_SANDBOX_PORT": str(sandbox_port),
        "DEMO_WEBHOOK_PORT": str(webhook_port),
        "DEMO_DIR": str(tmp_path / "demo"),
        "WORKER_WEB_PORT": str(web_port),
        "DATA_DIR": str(tmp_path / "worker-data"),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONUNBUFFERED": "1",
    }


def test_demo_runs_its_journeys_and_its_summary_matches_the_record(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    if "DEMO_SANDBOX_PORT" not in (ROOT / "engine/cli/demo.py").read_text(encoding="utf-8"):
        # This engine.cli.demo listens on fixed ports: another demo there would take its traffic.
        busy = [p for p in (8070, 8080) if _port_in_use(p)]
        if busy:
            pytest.skip(f"engine.cli.demo's fixed ports {busy} are in use by another process")

    demo = run_demo(demo_env, tmp_path / "demo-output.txt")

    tail = demo.output[-4000:]
    assert demo.code == 0, f"the demo exited with {demo.code}:\n{tail}"
    assert demo.seconds < DEMO_SECONDS, f"the demo took {demo.seconds:.0f}s:\n{tail}"
    assert not demo.left_running, f"the demo left services running: {demo.left_running}"
    assert "starting the local Kafka broker" not in demo.output
    assert re.search(r"^\$ journeyctl test examples/", demo.output, flags=re.M)
    assert re.search(r"^\d+ passed, 0 failed in ", demo.output, flags=re.M), demo.output[:2000]

    rows = summary_rows(demo.output)
    assert sorted(rows) == sorted(JOURNEYS), f"summary table:\n{tail}"

    [(received, accepted)] = SANDBOX_LINE.findall(demo.output)
    assert int(received) == int(accepted), "the sandbox got what the connector says it sent"
    assert int(received) > 250

    [reasons_text] = re.findall(r"^skipped by reason: (\{.*\})$", demo.output, flags=re.M)
    reasons = ast.literal_eval(reasons_text)
    assert {"opted_out", "invalid_phone"} <= set(reasons)

    # The summary against the delivery topic itself (this test's own topic).
    records = asyncio.run(
        read_topic(demo_env["KAFKA_BOOTSTRAP_SERVERS"], demo_env["TOPIC_DELIVERY_EVENTS"])
    )
    messages: dict[str, set[str]] = {}
    for record in records:
        messages.setdefault(record["journey_id"], set()).add(record["message_id"])
    for journey, counts in rows.items():
        assert sum(counts.values()) == len(messages.get(journey, ())), journey
    sent = {r["message_id"] for r in records if r["status"] == "accepted"}
    assert len(sent) == int(accepted)
    skipped = {
        r["message_id"]: (r.get("error") or {}).get("reason")
        for r in records
        if r["status"] == "skipped"
    }
    assert Counter(skipped.values()) == Counter(reasons)
