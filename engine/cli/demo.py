"""`make run`: the demo a new user sees first, on loopback only.

Runs the example journeys' test cases (`journeyctl test examples/`); starts the local
Kafka, the WhatsApp sandbox, the webhook receiver and a worker; deploys examples/journeys
with waits cut to seconds; publishes events for a few hundred profiles; shows deliveries
as they arrive and a summary; then, at a terminal, keeps the worker up for the console
(http://127.0.0.1:6066/console/). Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from rich.console import Console
from rich.table import Table

from connectors.kafka import reader
from engine.cli.publish import publish_file
from engine.core.loader import load_journey
from engine.streaming.registry import next_deployment, publish_deployments, read_deployments
from engine.streaming.topics import ensure_topics
from engine.testing.expect import case_lines, run_files
from engine.testing.suite import find_test_files
from schemas.journey import JourneyDefinition, WaitActivity, WaitForEventActivity
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the repository (this file is engine/cli/demo.py)
# Overridable so that a test, or a second demo, runs beside `make run` without sharing
# its ports or its log files (topics and the consumer group follow TOPIC_* and APP_ID).
DEMO_DIR = Path(os.environ.get("DEMO_DIR") or ROOT / ".demo")
SANDBOX_PORT = int(os.environ.get("DEMO_SANDBOX_PORT", "8070"))
WEBHOOK_PORT = int(os.environ.get("DEMO_WEBHOOK_PORT", "8080"))
PROFILES = 300
MAX_DEMO_SECONDS = 110
console = Console(width=120)


def shown(path: Path) -> str:
    """A path as the user would type it: relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def shorten(
    definition: JourneyDefinition, longest: timedelta = timedelta(seconds=4)
) -> JourneyDefinition:
    """The same journey with every wait cut to a few seconds, for a demo that ends."""
    copy = definition.model_copy(deep=True)
    for activity in copy.activities.values():
        if isinstance(activity, WaitActivity) and activity.duration is not None:
            activity.duration = min(activity.duration, longest)
        if isinstance(activity, WaitForEventActivity):
            activity.timeout = min(activity.timeout, longest + timedelta(seconds=2))
    return copy


def daytime_zone(now: datetime) -> str:
    """A time zone where it is daytime now, so quiet hours do not hide the demo."""
    for zone in (
        "Europe/Madrid",
        "America/New_York",
        "America/Los_Angeles",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Australia/Sydney",
        "Pacific/Auckland",
    ):
        if 9 <= now.astimezone(ZoneInfo(zone)).hour < 20:
            return zone
    return "UTC"


def sample_events(run: str, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events for the demo's profiles, and the orders some of them place a second later."""
    zone = daytime_zone(now)
    first, later = [], []
    stamp = now.isoformat().replace("+00:00", "Z")
    for i in range(PROFILES):
        pid = f"demo-{run}-{i:03d}"
        attributes: dict[str, Any] = {
            "first_name": ["Ana", "Luis", "Marta", "John", "Emma", "Pablo"][i % 6],
            "language": "es" if i % 2 == 0 else "en",
            "timezone": zone,
            "whatsapp_consent": "opted_out" if i % 10 == 9 else "opted_in",
        }
        if i % 15 != 14:  # a few profiles have no phone: skipped as invalid_phone
            attributes["phone"] = f"+346{int(run, 16) % 100:02d}{i:06d}"
        if i < 150:
            first.append(
                {
                    "event_id": f"{pid}-signup",
                    "type": "user.signed_up",
                    "profile_id": pid,
                    "occurred_at": stamp,
                    "attributes": attributes,
                }
            )
        else:
            first.append(
                {
                    "event_id": f"{pid}-attrs",
                    "type": "profile.updated",
                    "profile_id": pid,
                    "occurred_at": stamp,
                    "attributes": attributes,
                }
            )
        if i < 100:
            total = 15 + (i % 5) * 10  # some below 20: the entry condition keeps them out
            first.append(
                {
                    "event_id": f"{pid}-cart",
                    "type": "cart.abandoned",
                    "profile_id": pid,
                    "occurred_at": stamp,
                    "data": {"cart_total": total, "items": 1 + i % 3},
                }
            )
            if i % 3 == 0:
                later.append(
                    {
                        "event_id": f"{pid}-order",
                        "type": "order.placed",
                        "profile_id": pid,
                        "occurred_at": stamp,
                        "data": {"order_id": f"o-{i}"},
                    }
                )
        if 100 <= i < 250:
            first.append(
                {
                    "event_id": f"{pid}-inactive",
                    "type": "user.inactive",
                    "profile_id": pid,
                    "occurred_at": stamp,
                    "data": {"days_inactive": 30 + i % 60},
                }
            )
    return first, later


class Services:
    """The processes the demo starts, each in its own process group, stopped together."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.kafka_started = False

    def start(self, name: str, *args: str) -> None:
        log = (DEMO_DIR / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (DEMO_DIR / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.kafka_started:
            subprocess.run([str(ROOT / "deploy/kafka/stop")], env=self.env, check=False)


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


async def watch(settings: Settings, run: str) -> dict[str, dict[str, Any]]:
    """Print delivery events of this run as they arrive; return the last status per message."""
    consumer = reader(settings, settings.topic_delivery_events, auto_offset_reset="earliest")
    await consumer.start()
    final: dict[str, dict[str, Any]] = {}
    rank = {"skipped": 9, "failed": 8, "read": 5, "delivered": 4, "sent": 3, "accepted": 2}
    started = last_new = time.monotonic()
    shown = 0
    try:
        while True:
            now = time.monotonic()
            if now - started > MAX_DEMO_SECONDS or (now - started > 25 and now - last_new > 8):
                break
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for r in records:
                    d = orjson.loads(r.value or b"{}")
                    if not str(d.get("profile_id", "")).startswith(f"demo-{run}-"):
                        continue
                    last_new = time.monotonic()
                    prev = final.get(d["message_id"])
                    if prev is None or rank[d["status"]] >= rank[prev["status"]]:
                        final[d["message_id"]] = d
                    if shown < 40 or (d["status"] in ("failed", "skipped") and shown < 60):
                        err = d.get("error") or {}
                        console.print(
                            f"[dim]{d['occurred_at'][11:23]}[/] {d['status']:<9} {d['journey_id']:<14} "
                            f"{d['activity_id']:<16} {d['profile_id']:<22} "
                            f"{err.get('reason') or err.get('code') or ''}"
                        )
                        shown += 1
                        if shown == 40:
                            console.print(
                                "[dim]... (more deliveries arriving; summary at the end)[/]"
                            )
    finally:
        await consumer.stop()
    return final


def summarize(final: dict[str, dict[str, Any]], sandbox_count: int) -> None:
    table = Table(title="Deliveries by journey (last status of each message)")
    statuses = ["accepted", "sent", "delivered", "read", "failed", "skipped"]
    table.add_column("journey")
    for s in statuses:
        table.add_column(s, justify="right")
    by_journey: dict[str, Counter[str]] = {}
    for d in final.values():
        by_journey.setdefault(d["journey_id"], Counter())[d["status"]] += 1
    for journey, counts in sorted(by_journey.items()):
        table.add_row(journey, *(str(counts[s]) for s in statuses))
    console.print(table)
    skipped = Counter(
        (d.get("error") or {}).get("reason") for d in final.values() if d["status"] == "skipped"
    )
    failed = Counter(
        (d.get("error") or {}).get("code") for d in final.values() if d["status"] == "failed"
    )
    console.print(f"skipped by reason: {dict(skipped)}")
    console.print(f"failed by error code: {dict(failed)}")
    sent = sum(1 for d in final.values() if d["status"] not in ("skipped",) and d.get("wamid"))
    console.print(
        f"messages the sandbox received for this run: {sandbox_count} (accepted by the connector: {sent})"
    )


async def demo(services: Services, settings: Settings, run: str) -> None:
    now = datetime.now(UTC)
    console.print(f"[bold]run {run}[/]: starting sandbox, webhook receiver and worker")
    await ensure_topics(settings)
    services.start(
        "sandbox",
        "sandbox",
        "--port",
        str(SANDBOX_PORT),
        "--templates",
        str(ROOT / "deploy/sandbox/templates.yaml"),
        "--webhook-url",
        f"http://127.0.0.1:{WEBHOOK_PORT}/webhooks/whatsapp",
        "--failure-share",
        "0.05",
        "--read-share",
        "0.7",
    )
    services.start("webhook", "webhook", "--port", str(WEBHOOK_PORT))
    services.start("worker", "worker")
    await wait_http(f"http://127.0.0.1:{SANDBOX_PORT}/healthz")
    await wait_http(f"http://127.0.0.1:{WEBHOOK_PORT}/healthz")
    services.check_alive()

    current = await read_deployments(settings)
    records = []
    for path in sorted((ROOT / "examples/journeys").glob("*.yaml")):
        journey = shorten(load_journey(path))
        dep = next_deployment(journey, current.get(journey.id), source=str(path.relative_to(ROOT)))
        if dep:
            records.append(dep)
        console.print(
            f"deployed {journey.id} v{(dep or current[journey.id]).version}  ({path.name}, waits cut to seconds)"
        )
    await publish_deployments(settings, records)

    first, later = sample_events(run, now)
    events_file = DEMO_DIR / f"events-{run}.jsonl"
    events_file.write_bytes(b"\n".join(orjson.dumps(e) for e in first) + b"\n")
    await asyncio.sleep(3)  # let the worker join its group before the burst
    services.check_alive()
    sent, problems = await publish_file(
        settings, events_file, settings.topic_profile_events, show_progress=False
    )
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    console.print(f"published {sent} events for {PROFILES} profiles ({shown(events_file)})")
    await asyncio.sleep(1)
    later_file = DEMO_DIR / f"orders-{run}.jsonl"
    later_file.write_bytes(b"\n".join(orjson.dumps(e) for e in later) + b"\n")
    sent_later, _ = await publish_file(
        settings, later_file, settings.topic_profile_events, show_progress=False
    )
    console.print(
        f"published {sent_later} order.placed events (they end those cart-recovery instances)"
    )
    console.print(
        "[bold]deliveries as they arrive[/] (time, status, journey, activity, profile, reason):"
    )
    final = await watch(settings, run)
    services.check_alive()
    async with httpx.AsyncClient(trust_env=False) as client:
        messages = (await client.get(f"http://127.0.0.1:{SANDBOX_PORT}/sandbox/messages")).json()
    ours = [m for m in messages if f"demo-{run}-" in str(m.get("biz_opaque_callback_data") or "")]
    summarize(final, len(ours))
    console.print(
        f"logs: {shown(DEMO_DIR)}/  ·  try: journeyctl list · journeyctl graph examples/journeys/winback.yaml"
    )
    await hold(services, settings, str(first[0]["profile_id"]))


async def hold(services: Services, settings: Settings, profile_id: str) -> None:
    """Keep the services up for the console: until Ctrl-C at a terminal, else for
    DEMO_HOLD_SECONDS (0 by default, so a script's run ends with its summary)."""
    url = f"http://127.0.0.1:{settings.worker_web_port}/console/"
    console.print(f"console: {url}  ·  try: journeyctl inspect {profile_id}")
    default = "inf" if sys.stdin.isatty() else "0"
    seconds = float(os.environ.get("DEMO_HOLD_SECONDS", default))
    if seconds <= 0:
        return
    console.print("the worker stays up for the console; Ctrl-C stops everything")
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        services.check_alive()
        await asyncio.sleep(1)


def test_examples() -> bool:
    """`journeyctl test examples/`: the example journeys' own test cases, on a virtual clock."""
    console.print("[bold]$ journeyctl test examples/[/]  (their test cases, no Kafka needed)")
    files = find_test_files([str(ROOT / "examples")])
    run = run_files(files, on_invalid=lambda problem: console.print(str(problem), markup=False))
    for result in run.results:
        if not result.passed:
            console.print("\n".join(case_lines(result)), markup=False)
    console.print(f"{run.summary()} ({len(files)} files in examples/)")
    return run.ok


def main() -> int:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    test_examples()
    run = secrets.token_hex(3)
    env = {
        **os.environ,
        "WHATSAPP_TOKEN": secrets.token_urlsafe(24),
        "WHATSAPP_APP_SECRET": secrets.token_urlsafe(24),
        "WHATSAPP_VERIFY_TOKEN": secrets.token_urlsafe(12),
        "WHATSAPP_API_URL": f"http://127.0.0.1:{SANDBOX_PORT}",
        "LOG_FORMAT": "json",
    }
    services = Services(env)
    pid_file = ROOT / ".kafka" / f"kafka-{env.get('KAFKA_PORT', '9092')}.pid"
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        services.kafka_started = not pid_file.exists()
        console.print(
            "starting the local Kafka broker (the first time fetches it through Maven) ..."
        )
        out = subprocess.run(
            [str(ROOT / "deploy/kafka/start")], env=env, capture_output=True, text=True
        )
        if out.returncode != 0:
            console.print(out.stderr[-3000:])
            return 2
        env["KAFKA_BOOTSTRAP_SERVERS"] = out.stdout.strip().splitlines()[-1]
    settings = Settings(kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        asyncio.run(demo(services, settings, run))
    except KeyboardInterrupt:
        console.print("stopping ...")
    except RuntimeError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
