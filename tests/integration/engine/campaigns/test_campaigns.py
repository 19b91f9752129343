"""Campaigns and audience entry on the real broker, with a worker subprocess.

Given stored profiles, a deployed campaign (or a journey entering by audience) sends one
request to each matching profile: on deploy, at its time, or when triggered through the
HTTP API or the CLI; repeating a trigger messages nobody twice; a cancel stops sending.
The WhatsApp connector does not run: send requests are counted on whatsapp-requests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.partitioner import murmur2

from engine.campaigns.planning import next_campaign_deployment
from engine.campaigns.runs import read_runs
from engine.core.loader import parse_campaign, parse_journey
from engine.streaming.registry import next_deployment, publish_deployments, read_deployments
from engine.streaming.topics import ensure_topics
from tests.support.builders import profile_event
from tests.support.kafka import ROOT, Stack, Worker, collect, produce, stored_profiles
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOKEN = "campaign-test-token"
PROBE = """\
id: probe
name: Probe
entry: {event: probe}
reentry: {mode: always}
start: done
activities: {done: {type: end}}
"""
GOLD = 'has(profile.tier) && profile.tier == "gold"'


def campaign_yaml(schedule: str | None = None, body: str = "['profile.first_name']") -> str:
    lines = [
        "kind: campaign",
        "id: promo",
        "name: Promo",
        f"audience: {{condition: '{GOLD}'}}",
        "message: {template: promo, language: es, parameters: {body: " + body + "}}",
    ]
    if schedule is not None:
        lines.append(f"schedule: {schedule}")
    return "\n".join(lines) + "\n"


def make_stack(bootstrap: str, unique: str, **extra: str) -> Stack:
    env = {"TOPIC_CAMPAIGN_RUNS": f"campaign-runs-{unique}", "CAMPAIGN_API_TOKEN": TOKEN}
    env.update({k.upper(): v for k, v in extra.items()})
    return Stack(bootstrap, unique, extra=env)


class WebWorker(Worker):
    """A worker with its web server on (the trigger API), on a free port."""

    def __init__(self, stack: Stack, log_dir: Path, name: str = "web-worker") -> None:
        super().__init__(stack, log_dir, role="engine", name=name)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start(self) -> WebWorker:
        env = {
            **os.environ,
            **self.stack.env,
            "DATA_DIR": str(self.data_dir),
            "PYTHONUNBUFFERED": "1",
            "WORKER_WEB_PORT": str(self.port),
        }
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "--role", "engine"],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def workers(tmp_path: Path):
    started: list[Worker] = []

    def make(stack: Stack, web: bool = False) -> Any:
        worker = WebWorker(stack, tmp_path) if web else Worker(stack, tmp_path)
        started.append(worker)
        return worker.start()

    yield make
    for worker in started:
        worker.kill()


def campaign_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.campaign", *args],
        env={**os.environ, **stack.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def deploy_journey(stack: Stack, text: str) -> None:
    await _deploy(stack, text, campaign=False)


async def deploy_campaign(stack: Stack, text: str) -> None:
    await _deploy(stack, text, campaign=True)


async def _deploy(stack: Stack, text: str, *, campaign: bool) -> None:
    await ensure_topics(stack.settings)
    current = await read_deployments(stack.settings)
    if campaign:
        parsed = parse_campaign(text)
        dep = next_campaign_deployment(parsed, current.get(parsed.id))
    else:
        definition = parse_journey(text)
        dep = next_deployment(definition, current.get(definition.id))
    assert dep is not None
    await publish_deployments(stack.settings, [dep])


def update(pid: str, n: int, **attributes: Any) -> tuple[str, dict[str, Any]]:
    attrs = {
        "phone": f"+346{n % 100_000_000:08d}",
        "first_name": f"Name{n}",
        "language": "es",
        "whatsapp_consent": "opted_in",
        **attributes,
    }
    return pid, profile_event(
        f"upd-{pid}-{time.monotonic_ns()}", "profile.updated", pid, attributes=attrs
    )


async def store_profiles(
    stack: Stack, worker: Worker, records: list[tuple[str, dict[str, Any]]]
) -> None:
    """Publish profile updates and wait until the worker has processed every one of them.

    A probe event on every partition, published last, enters the probe journey only after
    the partition's earlier records are processed.
    """
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    await produce(stack.bootstrap, topic, records)
    probes: dict[int, str] = {}
    n = 0
    while len(probes) < stack.partitions:
        pid = f"probe-{n}"
        probes.setdefault((murmur2(pid.encode()) & 0x7FFFFFFF) % stack.partitions, pid)
        n += 1
    tag = time.monotonic_ns()
    await produce(
        stack.bootstrap,
        topic,
        [(pid, profile_event(f"probe-{pid}-{tag}", "probe", pid)) for pid in probes.values()],
    )
    wanted = {f"probe-{pid}-{tag}" for pid in probes.values()}
    await collect(
        stack.bootstrap,
        stack.env["TOPIC_JOURNEY_STEPS"],
        lambda steps: wanted <= {s.get("event_id") for s in steps if s["kind"] == "entered"},
        180,
        watch=[worker],
    )


async def sends(stack: Stack, until: Any = lambda r: False, timeout: float = 2.0) -> list[Any]:
    return await collect(stack.bootstrap, stack.env["TOPIC_WHATSAPP_REQUESTS"], until, timeout)


async def sends_settled(stack: Stack) -> int:
    """How many send requests there are, if none came in the last second; else 0."""
    before = len(await sends(stack))
    await asyncio.sleep(1.0)
    return before if len(await sends(stack)) == before else 0


async def start_big_run(stack: Stack, worker: Worker, profiles: int) -> None:
    """Store `profiles` gold profiles, then trigger run `big` of an API campaign (CLI)."""
    await deploy_journey(stack, PROBE)
    await deploy_campaign(stack, campaign_yaml())
    await store_profiles(stack, worker, [update(f"p-{i}", i, tier="gold") for i in range(profiles)])
    await stored_profiles(stack, [f"p-{i}" for i in range(profiles)], 60, watch=[worker])
    started = campaign_cli(stack, "trigger", "promo", "--run-id", "big")
    assert started.returncode == 0, started.stderr


def send_journey(journey_id: str, entry: str, extra: str = "") -> str:
    """A journey that sends template `vip` to whoever enters, then ends."""
    return f"""\
id: {journey_id}
name: {journey_id}
entry: {entry}
{extra}start: send
activities:
  send: {{type: whatsapp, template: vip, language: es, parameters: {{body: ['profile.first_name']}}, next: done}}
  done: {{type: end}}
"""


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_an_audience_of_10000_profiles_gets_one_send_per_matching_profile(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique, campaign_rate_per_second="2000")
    await deploy_journey(stack, PROBE)
    worker = workers(stack)
    profiles = [update(f"p-{i}", i, tier="gold" if i % 2 else "silver") for i in range(10_000)]
    await store_profiles(stack, worker, profiles)
    gold = {pid for pid, event in profiles if event["attributes"]["tier"] == "gold"}

    deployed = time.monotonic()
    await deploy_campaign(stack, campaign_yaml("now"))
    found = await sends(stack, lambda r: len(r) >= len(gold), 180)
    fanned_out = time.monotonic() - deployed
    found = await sends(stack)  # a little longer: nothing more may come
    counts = Counter(s["message_id"] for s in found)
    assert set(counts.values()) == {1}, counts.most_common(3)
    assert {s["profile_id"] for s in found} == gold
    assert set(counts) == {f"promo:1:{pid}:send:now" for pid in gold}
    assert {(s["journey_id"], s["journey_version"], s["activity_id"]) for s in found} == {
        ("promo", 1, "send")
    }
    times = sorted(parse_time(s["requested_at"]) for s in found)
    rate = len(found) / max((times[-1] - times[0]).total_seconds(), 1e-3)
    print(
        f"\n10,000 profiles, {len(gold)} matching: all send requests {fanned_out:.1f}s after deploy; "
        f"{rate:.0f} send requests/s (limit 2000/s)"
    )
    registry = await read_runs(stack.settings)
    progress = registry.progress[("promo", "now")]
    assert sorted(progress) == list(range(stack.partitions))
    assert sum(p.queued for p in progress.values()) == len(gold)
    assert sum(p.scanned for p in progress.values()) >= 10_000
    assert rate <= 2000 * 1.3


async def test_a_campaign_at_a_time_sends_then_and_not_before(
    kafka_bootstrap: str, unique: str, workers: Any, tmp_path: Path
) -> None:
    stack = make_stack(kafka_bootstrap, unique)
    await deploy_journey(stack, PROBE)
    worker = workers(stack)
    await store_profiles(
        stack, worker, [update(f"p-{i}", i, tier="gold" if i < 6 else "bronze") for i in range(10)]
    )
    at = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    path = tmp_path / "promo.yaml"
    path.write_text(campaign_yaml(f"{{at: '{at.isoformat()}'}}"))
    deployed = campaign_cli(stack, "deploy", str(path))
    assert deployed.returncode == 0, deployed.stderr
    assert "deployed   promo  v1" in deployed.stdout and "next run at" in deployed.stdout
    found = await sends(stack, lambda r: len(r) >= 6, 60)
    assert datetime.now(UTC) >= at
    assert all(parse_time(s["requested_at"]) >= at for s in found)
    run_id = at.strftime("%Y%m%dT%H%MZ")
    assert {s["message_id"] for s in await sends(stack)} == {
        f"promo:1:p-{i}:send:{run_id}" for i in range(6)
    }
    listed = campaign_cli(stack, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = orjson.loads(listed.stdout)
    assert (row["id"], row["status"], row["next_run"]) == ("promo", "active", None)
    assert row["runs"][0]["run_id"] == run_id and row["runs"][0]["queued"] == 6


async def test_the_trigger_api_authenticates_and_a_repeated_trigger_messages_nobody_twice(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique)
    await deploy_journey(stack, PROBE)
    await deploy_campaign(stack, campaign_yaml(body="['profile.first_name', 'context.code']"))
    worker = workers(stack, web=True)
    await store_profiles(stack, worker, [update(f"p-{i}", i, tier="gold") for i in range(20)])
    async with httpx.AsyncClient(base_url=worker.url, trust_env=False, timeout=30) as http:
        ok = {"Authorization": f"Bearer {TOKEN}"}
        body = {"run_id": "r1", "context": {"code": "BF"}}
        assert (await http.post("/campaigns/promo/trigger", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (
            await http.post("/campaigns/promo/trigger", json=body, headers=wrong)
        ).status_code == 401
        missing = await http.post("/campaigns/nope/trigger", json=body, headers=ok)
        assert missing.status_code == 404
        bad = await http.post("/campaigns/promo/trigger", json={"run_id": "a:b"}, headers=ok)
        assert bad.status_code == 422
        first = await http.post("/campaigns/promo/trigger", json=body, headers=ok)
        assert first.status_code == 202, first.text
        assert first.json() == {
            "campaign_id": "promo",
            "run_id": "r1",
            "target": "audience",
            "profiles": 0,
            "repeated": False,
        }
        await sends(stack, lambda r: len(r) >= 20, 60)
        again = await http.post("/campaigns/promo/trigger", json=body, headers=ok)
        assert again.status_code == 202 and again.json()["repeated"] is True
        named = {**body, "profile_ids": ["p-1", "p-2", "p-unknown"]}
        direct = await http.post("/campaigns/promo/trigger", json=named, headers=ok)
        assert direct.status_code == 202 and direct.json()["profiles"] == 3
        # The CLI publishes to Kafka directly; a new run with a profile list reaches just them.
        cli = campaign_cli(
            stack,
            "trigger",
            "promo",
            "--run-id",
            "r2",
            "--profile",
            "p-3",
            "--context",
            '{"code": "X"}',
        )
        assert cli.returncode == 0, cli.stderr
        assert "triggered promo run r2 for 1 profile(s)" in cli.stdout
        await sends(stack, lambda r: len(r) >= 21, 60)
        await asyncio.sleep(3)
        found = await sends(stack)
        counts = Counter(s["message_id"] for s in found)
        assert set(counts.values()) == {1}, counts.most_common(3)
        assert len(counts) == 21
        assert {s["parameters"]["body"][1] for s in found if s["message_id"].endswith(":r1")} == {
            "BF"
        }
        assert [s["parameters"]["body"] for s in found if s["message_id"].endswith(":r2")] == [
            ["Name3", "X"]
        ]
        cancelled = campaign_cli(stack, "cancel", "promo")
        assert cancelled.returncode == 0, cancelled.stderr
        deadline = time.monotonic() + 30
        while True:
            refused = await http.post("/campaigns/promo/trigger", json={}, headers=ok)
            if refused.status_code == 409 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert refused.status_code == 409
        assert refused.json() == {
            "error": "campaign 'promo' is cancelled; deploy it again to bring it back"
        }
    assert campaign_cli(stack, "trigger", "promo").returncode == 1
    assert campaign_cli(stack, "trigger", "nope").returncode == 3


async def test_cancelling_a_run_stops_sending(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique, campaign_rate_per_second="200")
    await start_big_run(stack, workers(stack), 2000)
    await sends(stack, lambda r: len(r) >= 1, 60)
    await asyncio.sleep(2)
    cancelled = campaign_cli(stack, "cancel", "promo", "--run-id", "big")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "promo run big is cancelled" in cancelled.stdout
    # The cancel reaches the worker and queued work is skipped: the count stops growing.
    settled = await wait_until(lambda: sends_settled(stack), 30, what="sends stopping")
    await asyncio.sleep(4)
    final = await sends(stack)
    print(f"\ncancelled after about 2s at 200/s: {len(final)} of 2000 sent")
    assert len(final) == settled
    assert 0 < len(final) < 2000
    assert len({s["message_id"] for s in final}) == len(final)
    again = campaign_cli(stack, "trigger", "promo", "--run-id", "big")
    assert again.returncode == 1 and "is cancelled" in again.stderr


async def test_a_journey_entering_by_audience_reads_it_on_deploy(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique)
    journey = send_journey("gold-read", f"{{audience: {{condition: '{GOLD}'}}}}")
    await deploy_journey(stack, PROBE)
    worker = workers(stack)
    await store_profiles(
        stack, worker, [update(f"p-{i}", i, tier="gold" if i < 5 else "silver") for i in range(10)]
    )
    await deploy_journey(stack, journey)
    found = await sends(stack, lambda r: len(r) >= 5, 60)
    await asyncio.sleep(2)
    assert sorted(s["message_id"] for s in await sends(stack)) == [
        f"gold-read:1:p-{i}:send:1" for i in range(5)
    ]
    # p-7 turns gold later; version 2 reads the audience again: p-7 enters, nobody re-enters.
    await store_profiles(stack, worker, [update("p-7", 7, tier="gold")])
    await deploy_journey(stack, journey.replace("name: gold-read", "name: Gold read v2"))
    found = await sends(stack, lambda r: len(r) >= 6, 60)
    await asyncio.sleep(2)
    found = await sends(stack)
    assert sorted(s["message_id"] for s in found)[-1] == "gold-read:2:p-7:send:1"
    assert len(found) == 6


async def test_a_profile_qualifying_by_an_attribute_update_enters_at_once(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique)
    qualification = f"{{qualification: {{condition: '{GOLD}'}}}}"
    await deploy_journey(stack, send_journey("vip", qualification, "reentry: {mode: always}\n"))
    await deploy_journey(stack, PROBE)
    worker = workers(stack)
    await store_profiles(
        stack, worker, [update("p-1", 1, tier="silver"), update("p-2", 2, tier="gold")]
    )
    assert [s["profile_id"] for s in await sends(stack, lambda r: len(r) >= 1, 30)] == ["p-2"]
    await store_profiles(
        stack,
        worker,
        [update("p-1", 1, tier="gold"), update("p-2", 2, tier="gold", first_name="Still")],
    )
    await sends(stack, lambda r: len(r) >= 2, 30)
    await asyncio.sleep(2)
    assert sorted(s["message_id"] for s in await sends(stack)) == [
        "vip:1:p-1:send:1",
        "vip:1:p-2:send:1",
    ]


async def test_a_worker_killed_during_a_fan_out_is_replaced_and_nobody_is_messaged_twice(
    kafka_bootstrap: str, unique: str, workers: Any
) -> None:
    stack = make_stack(kafka_bootstrap, unique, campaign_rate_per_second="300")
    first = workers(stack)
    await start_big_run(stack, first, 1500)
    await sends(stack, lambda r: len(r) >= 300, 60)
    first.kill()
    second = workers(stack)
    found = await collect(
        stack.bootstrap,
        stack.env["TOPIC_WHATSAPP_REQUESTS"],
        lambda r: len({s["message_id"] for s in r}) >= 1500,
        180,
        watch=[second],
    )
    ids = {s["message_id"] for s in found}
    assert ids == {f"promo:1:p-{i}:send:big" for i in range(1500)}
    # Only a crash between a batch's effects and its state commit may repeat a request, with
    # the same message id (the connector sends an id once); it must stay rare.
    assert len(found) - len(ids) < 500
    registry = await read_runs(stack.settings)
    assert sorted(registry.progress[("promo", "big")]) == list(range(stack.partitions))
