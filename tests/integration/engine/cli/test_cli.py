"""`journeyctl` through its real entry point, on the real broker: output and exit codes.

Each test runs `python -m engine.cli.main ...` in a subprocess with its own topics (Stack), so
what an operator types is what is checked: the lines printed, the messages on stderr,
and the exit code (0 ok, 1 invalid input, 2 cannot reach Kafka, 3 not found).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support.builders import profile_event
from tests.support.kafka import Stack, collect, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]
WELCOME = "examples/journeys/welcome.yaml"
EXAMPLES = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "examples/journeys").glob("*.yaml")
)
# Every CLI call that talks to Kafka is bounded at 60 s by the CLI itself (_run_kafka).
CLI_TIMEOUT = 90.0
UNREACHABLE = "127.0.0.1:1"  # nothing listens on port 1: the connection is refused at once
SECRETS = ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "KAFKA_SASL_PASSWORD")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    seconds: float


class Cli:
    """Runs journeyctl as an operator would, with this test's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, timeout: float = CLI_TIMEOUT, **env: str) -> Result:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            env={**self.env, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _base_env() -> dict[str, str]:
    """The caller's environment without any WhatsApp or Kafka secret (or secret file)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.removesuffix("_FILE") not in SECRETS and not k.startswith("TOPIC_")
    }
    # Rich tables keep whole cells in a pipe; logs are JSON on stderr.
    return {**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def stack(kafka_bootstrap: str, unique: str) -> Stack:
    return Stack(kafka_bootstrap, unique)


@pytest.fixture
def cli(stack: Stack) -> Cli:
    return Cli({**_base_env(), **stack.env})


@pytest.fixture
def offline(unique: str) -> Cli:
    """journeyctl pointed at an address where no broker answers."""
    return Cli({**_base_env(), **Stack(UNREACHABLE, unique).env})


def _json_list(result: Result) -> list[dict[str, Any]]:
    assert result.code == 0, result.err
    data = orjson.loads(result.out)
    assert isinstance(data, list)
    return data


async def _topic_layout(bootstrap: str, topic: str) -> tuple[int, str] | None:
    """(partitions, cleanup.policy) of a topic, or None if it does not exist.

    Listing first: asking for one topic's metadata would create it on this broker.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return None
        [described] = await admin.describe_topics([topic])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        policy = next(
            entry[1]
            for resource in response.resources
            for entry in resource[4]
            if entry[0] == "cleanup.policy"
        )
        return len(described["partitions"]), str(policy)
    finally:
        await admin.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(cli: Cli, journey_id: str) -> tuple[int, str]:
    [row] = [r for r in _json_list(cli("list", "--json")) if r["id"] == journey_id]
    return row["version"], row["status"]


# --------------------------------------------------------------------------- help

COMMANDS = {
    "validate": "Check journey YAML files",
    "deploy": "deploy journeys",
    "list": "List deployed journeys",
    "pause": "Stop admitting profiles",
    "resume": "Admit profiles again",
    "archive": "end every live instance",
    "graph": "Mermaid flowchart",
    "worker": "Run the engine",
    "webhook": "Receive WhatsApp webhooks",
    "sandbox": "WhatsApp Cloud API",
    "publish": "Publish JSON lines of profile events",
    "tail": "Print records of a topic",
    "report": "report",  # in DESIGN.md's command-line contract
}


def test_help_of_the_group_lists_every_command(offline: Cli) -> None:
    result = offline("--help")
    assert result.code == 0, result.err
    assert "Operate the journey engine" in result.out
    listed = set(re.findall(r"^  ([a-z]+)\s", result.out, flags=re.MULTILINE))
    assert set(COMMANDS) <= listed, f"missing from --help: {sorted(set(COMMANDS) - listed)}"


@pytest.mark.parametrize(("command", "purpose"), COMMANDS.items(), ids=list(COMMANDS))
def test_help_of_each_command_says_what_it_is_for(offline: Cli, command: str, purpose: str) -> None:
    result = offline(command, "--help")
    assert result.code == 0, result.err
    assert f"journeyctl {command}" in result.out or f"cli {command}" in result.out
    assert purpose.lower() in " ".join(result.out.split()).lower()


# --------------------------------------------------------------------------- validate


def test_validate_prints_ok_for_each_valid_file(offline: Cli) -> None:
    # validate reads no Kafka: it works with the broker away.
    result = offline("validate", *EXAMPLES)
    assert result.code == 0, result.err
    for path in EXAMPLES:
        assert re.search(rf"^ok  {re.escape(path)}  \(", result.out, flags=re.MULTILINE), result.out
    assert result.err == ""


BROKEN = """\
id: Bad_Id
name: Broken
entry:
  event: user.signed_up
  condition: 'event.data.total >'
start: first
activities:
  first: {type: wait, duration: 5x, next: done}
  done: {type: end}
"""

TYPO = """\
id: second
name: Second
entry: {event: a.b}
start: s
colour: blue
activities:
  s: {type: end}
"""


def test_validate_reports_every_problem_of_every_file_with_its_location(
    offline: Cli, tmp_path: Path
) -> None:
    broken, typo = tmp_path / "broken.yaml", tmp_path / "typo.yaml"
    broken.write_text(BROKEN)
    typo.write_text(TYPO)
    result = offline("validate", str(broken), WELCOME, str(typo))
    assert result.code == 1
    assert result.out == "", "nothing is reported ok when a file is invalid"
    lines = result.err.strip().splitlines()
    located = [ln for ln in lines if re.match(r"^\S+:\d+:\d+: \S+: .+", ln)]
    assert [ln.split(": ")[1] for ln in located] == [
        "id",
        "entry.condition",
        "activities.first.duration",
        "colour",
    ]
    assert located[0].startswith(f"{broken}:1:5: id: String should match pattern")
    assert located[1].startswith(f"{broken}:5:14: entry.condition: invalid CEL expression")
    assert located[2].startswith(f"{broken}:8:33: activities.first.duration: invalid duration '5x'")
    assert located[3] == f"{typo}:5:1: colour: unknown field"
    assert lines[-1] == "error: 4 problem(s) in 2 file(s)"


def test_validate_reports_a_yaml_syntax_error_at_its_line(offline: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "unclosed.yaml"
    bad.write_text("id: welcome\nname: [unclosed\n")
    result = offline("validate", str(bad))
    assert result.code == 1
    assert re.search(rf"^{re.escape(str(bad))}:\d+:\d+: <journey>: invalid YAML", result.err, re.M)


def test_validate_of_a_missing_file_is_invalid_input(offline: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = offline("validate", str(missing))
    assert result.code == 1
    assert f"{missing}:1:1: <journey>: cannot read file: No such file or directory" in result.err


# --------------------------------------------------------------------------- deploy, list


def test_deploy_versions_only_what_changed_and_list_shows_it(cli: Cli, tmp_path: Path) -> None:
    assert _json_list(cli("list", "--json")) == []

    first = cli("deploy", WELCOME)
    assert first.code == 0, first.err
    assert first.out.splitlines() == ["deployed   welcome  v1"]

    again = cli("deploy", WELCOME)
    assert again.code == 0, again.err
    assert again.out.splitlines() == ["unchanged  welcome  v1"]

    changed = tmp_path / "welcome.yaml"
    changed.write_text((ROOT / WELCOME).read_text().replace("duration: 5s", "duration: 6s"))
    second = cli("deploy", str(changed), *[p for p in EXAMPLES if p != WELCOME])
    assert second.code == 0, second.err
    assert sorted(second.out.splitlines()) == [
        "deployed   cart-recovery  v1",
        "deployed   welcome  v2",
        "deployed   winback  v1",
    ]

    table = cli("list")
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "VERSION", "STATUS", "DEPLOYED", "NAME"]
    assert [r.split()[:3] for r in rows] == [
        ["cart-recovery", "1", "active"],
        ["welcome", "2", "active"],
        ["winback", "1", "active"],
    ]
    assert rows[1].endswith("Welcome series")

    listed = _json_list(cli("list", "--json"))
    assert [(r["id"], r["version"], r["status"]) for r in listed] == [
        ("cart-recovery", 1, "active"),
        ("welcome", 2, "active"),
        ("winback", 1, "active"),
    ]
    assert listed[1]["name"] == "Welcome series" and listed[1]["deployed_at"]


def test_deploy_of_an_invalid_file_deploys_nothing(cli: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(TYPO)
    result = cli("deploy", WELCOME, str(typo))
    assert result.code == 1
    assert f"{typo}:5:1: colour: unknown field" in result.err
    assert _json_list(cli("list", "--json")) == []


def test_reading_before_the_first_deploy_leaves_the_definitions_topic_to_deploy(
    cli: Cli, stack: Stack
) -> None:
    # The local broker (like Kafka by default) creates a topic when a client asks for its
    # metadata; a definitions topic made that way is neither compacted nor single-partition,
    # and deploy keeps it: deployed journeys would expire with the broker's retention.
    topic = stack.env["TOPIC_JOURNEY_DEFINITIONS"]
    assert _json_list(cli("list", "--json")) == []
    assert cli("pause", "welcome").code == 3
    assert cli("deploy", WELCOME).code == 0
    layout = asyncio.run(_topic_layout(stack.bootstrap, topic))
    assert layout == (1, "compact"), f"{topic} is {layout}"


# --------------------------------------------------------------------------- status


def test_pause_resume_archive_change_the_status_that_list_shows(cli: Cli) -> None:
    assert cli("deploy", WELCOME).code == 0

    paused = cli("pause", "welcome")
    assert (paused.code, paused.out.strip()) == (0, "welcome v1 is now paused")
    assert _status(cli, "welcome") == (1, "paused")

    resumed = cli("resume", "welcome")
    assert (resumed.code, resumed.out.strip()) == (0, "welcome v1 is now active")
    assert _status(cli, "welcome") == (1, "active")

    archived = cli("archive", "welcome")
    assert (archived.code, archived.out.strip()) == (0, "welcome v1 is now archived")
    assert _status(cli, "welcome") == (1, "archived")

    for command in ("resume", "pause"):
        refused = cli(command, "welcome")
        assert refused.code == 1, (command, refused.out, refused.err)
        assert "'welcome' is archived; deploy it again to bring it back" in refused.err
    assert _status(cli, "welcome") == (1, "archived")

    back = cli("deploy", WELCOME)
    assert back.out.splitlines() == ["deployed   welcome  v1"]
    assert _status(cli, "welcome") == (1, "active")


@pytest.mark.parametrize("command", ["pause", "resume", "archive"])
def test_status_change_of_an_unknown_journey_is_not_found(cli: Cli, command: str) -> None:
    result = cli(command, "no-such-journey")
    assert result.code == 3
    assert "no journey 'no-such-journey' is deployed (see `journeyctl list`)" in result.err


# --------------------------------------------------------------------------- graph


def test_graph_of_a_file_is_a_mermaid_flowchart(offline: Cli) -> None:
    result = offline("graph", WELCOME)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "flowchart TD"
    assert "on user.signed_up" in result.out and "wait 5s" in result.out


def test_graph_of_a_deployed_journey_and_of_an_unknown_id(cli: Cli) -> None:
    assert cli("deploy", WELCOME).code == 0
    deployed = cli("graph", "welcome")
    assert deployed.code == 0, deployed.err
    assert deployed.out == cli("graph", WELCOME).out

    unknown = cli("graph", "no-such-journey")
    assert unknown.code == 3
    assert "'no-such-journey' is neither a file nor a deployed journey" in unknown.err


def test_graph_of_an_invalid_file_is_invalid_input(offline: Cli, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(TYPO)
    result = offline("graph", str(typo))
    assert result.code == 1
    assert f"{typo}:5:1: colour: unknown field" in result.err


def test_graph_html_writes_a_self_contained_page(offline: Cli, tmp_path: Path) -> None:
    page = tmp_path / "welcome.html"
    result = offline("graph", WELCOME, "--html", str(page))
    assert result.code == 0, result.err
    assert result.out.startswith("flowchart TD")
    assert f"wrote {page}" in result.err
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "Welcome series" in html


# --------------------------------------------------------------------------- publish, tail


def _event_line(event_id: str, profile_id: str) -> str:
    return orjson.dumps(profile_event(event_id, "user.signed_up", profile_id)).decode()


def test_publish_sends_valid_lines_and_reports_bad_ones_by_line(
    cli: Cli, stack: Stack, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                _event_line("e1", "p-1"),
                "not json",
                '{"event_id": "e3", "type": "user.signed_up", "occurred_at": "2026-11-24T10:00:00Z"}',
                '{"event_id": "e4", "type": "x", "profile_id": "p-4", "occurred_at": "yesterday"}',
                "",
                _event_line("e6", "p-6"),
            ]
        )
        + "\n"
    )
    result = cli("publish", str(events))
    assert result.code == 1
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    assert result.out.strip() == f"published 2 event(s) to {topic}"
    problems = [ln for ln in result.err.splitlines() if ln.startswith(f"{events}:")]
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4"]
    assert problems[0].startswith(f"{events}:2: invalid JSON")
    assert problems[1] == f"{events}:3: profile_id: required to key the record"
    assert problems[2].startswith(f"{events}:4: occurred_at: ")
    assert "error: 3 line(s) were not published" in result.err

    records = asyncio.run(collect(stack.bootstrap, topic, lambda r: len(r) >= 2, timeout=20))
    assert sorted(r["event_id"] for r in records) == ["e1", "e6"]


def test_publish_of_a_clean_file_exits_zero(cli: Cli, stack: Stack, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(_event_line(f"e{i}", f"p-{i}") + "\n" for i in range(25)))
    result = cli("publish", str(events))
    assert result.code == 0, result.err
    assert result.out.strip() == f"published 25 event(s) to {stack.env['TOPIC_PROFILE_EVENTS']}"


def _delivery(i: int, status: str, reason: str | None = None) -> tuple[str, dict[str, Any]]:
    profile = f"p-{i}"
    return profile, {
        "message_id": f"welcome:1:{profile}:welcome-es:1",
        "wamid": None if status == "skipped" else f"wamid.{i}",
        "journey_id": "welcome",
        "journey_version": 1,
        "activity_id": "welcome-es",
        "profile_id": profile,
        "channel": "whatsapp",
        "template": "welcome",
        "language": "es",
        "status": status,
        "error": {"code": None, "title": reason, "retriable": False, "reason": reason}
        if reason
        else None,
        "occurred_at": "2026-11-24T11:00:03Z",
    }


def test_tail_prints_delivery_events_as_rows_and_stops_at_limit_or_timeout(
    cli: Cli, stack: Stack
) -> None:
    records = [
        _delivery(0, "accepted"),
        _delivery(1, "delivered"),
        _delivery(2, "skipped", "opted_out"),
    ]
    asyncio.run(produce(stack.bootstrap, stack.env["TOPIC_DELIVERY_EVENTS"], records))

    limited = cli("tail", "delivery-events", "--from-beginning", "--limit", "2", "--timeout", "30")
    assert limited.code == 0, limited.err
    header, *rows = limited.out.splitlines()
    assert header.split() == [
        "occurred_at",
        "status",
        "journey_id",
        "activity_id",
        "profile_id",
        "template",
        "error",
    ]
    assert len(rows) == 2
    assert limited.seconds < 25, "--limit ends the tail, not --timeout"

    everything = cli(
        "tail", "delivery-events", "--from-beginning", "--limit", "10", "--timeout", "4"
    )
    assert everything.code == 0, everything.err
    rows = everything.out.splitlines()[1:]
    assert sorted(r.split()[1] for r in rows) == ["accepted", "delivered", "skipped"]
    [skipped] = [r.split() for r in rows if "skipped" in r]
    assert skipped[2:] == ["welcome", "welcome-es", "p-2", "welcome", "opted_out"]
    assert 3.5 < everything.seconds < 30, "--timeout ends a tail that has no more records"

    as_json = cli("tail", "delivery-events", "--from-beginning", "--limit", "3", "--json")
    assert as_json.code == 0, as_json.err
    decoded = [orjson.loads(line) for line in as_json.out.splitlines()]
    assert sorted(d["message_id"] for d in decoded) == sorted(r[1]["message_id"] for r in records)


# --------------------------------------------------------------------------- Kafka away

OFFLINE_COMMANDS = {
    "list": ["list"],
    "deploy": ["deploy", WELCOME],
    "publish": ["publish", "EVENTS"],
    "pause": ["pause", "welcome"],
    "graph-id": ["graph", "welcome"],
    "tail": ["tail", "delivery-events", "--timeout", "5"],
}


@pytest.mark.parametrize("command", OFFLINE_COMMANDS.values(), ids=list(OFFLINE_COMMANDS))
def test_unreachable_kafka_is_exit_code_2_at_once(
    offline: Cli, tmp_path: Path, command: list[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(_event_line("e1", "p-1") + "\n")
    args = [str(events) if a == "EVENTS" else a for a in command]
    result = offline(*args, timeout=60)
    assert result.code == 2, (result.out, result.err[-2000:])
    assert f"cannot reach Kafka at {UNREACHABLE}" in result.err
    assert "Traceback" not in result.err
    assert result.seconds < 20


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (["worker", "--no-web"], {"WHATSAPP_TOKEN": "t"}),
        (["webhook", "--port", "0"], {"WHATSAPP_APP_SECRET": "s"}),
    ],
    ids=["worker", "webhook"],
)
def test_long_running_commands_exit_2_when_kafka_is_unreachable(
    offline: Cli, command: list[str], env: dict[str, str]
) -> None:
    result = offline(*command, timeout=60, **env)
    assert result.code == 2, (result.out, result.err[-2000:])
    assert f"cannot reach Kafka at {UNREACHABLE}" in result.err


def test_webhook_on_a_fresh_cluster_serves_with_topics_laid_out_right(
    cli: Cli, stack: Stack
) -> None:
    # In Kubernetes the webhook receiver may start before any worker has created the
    # topics. It reads profile-phones (compacted) and delivery-events (TOPIC_PARTITIONS).
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "webhook", "--port", str(port)],
        env={**cli.env, "WHATSAPP_APP_SECRET": "test-app-secret"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    healthy = False
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None and not healthy:
            try:
                healthy = (
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                )
            except httpx.TransportError:
                time.sleep(0.3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate(timeout=10)
    assert healthy, (
        f"the receiver never served /healthz:\n{output.decode(errors='replace')[-3000:]}"
    )
    phones = asyncio.run(_topic_layout(stack.bootstrap, stack.env["TOPIC_PROFILE_PHONES"]))
    deliveries = asyncio.run(_topic_layout(stack.bootstrap, stack.env["TOPIC_DELIVERY_EVENTS"]))
    assert phones == (stack.partitions, "compact")
    assert deliveries == (stack.partitions, "delete")


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """An address that accepts TCP connections and never answers: a wrong or hung broker."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


@pytest.mark.slow
def test_a_broker_that_never_answers_ends_in_bounded_time(offline: Cli, silent_broker: str) -> None:
    result = offline("list", timeout=CLI_TIMEOUT, KAFKA_BOOTSTRAP_SERVERS=silent_broker)
    assert result.code == 2, (result.out, result.err[-2000:])
    assert f"cannot reach Kafka at {silent_broker}" in result.err
    # The CLI's own bound on a Kafka call is 60 s; aiokafka gives up after its 40 s
    # request timeout. Either way an operator is not left waiting for ever.
    assert result.seconds < 65


# --------------------------------------------------------------------------- usage, secrets


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["no-such-command"],
        ["tail", "delivery-events", "--limit", "many"],
        ["publish", "/nonexistent.jsonl"],
        ["worker", "--role", "nobody"],
    ],
    ids=["missing-argument", "unknown-command", "not-a-number", "missing-file", "unknown-role"],
)
def test_usage_errors_are_invalid_input_not_a_kafka_failure(offline: Cli, args: list[str]) -> None:
    # click exits 2 on a usage error; in journeyctl's contract 2 means "cannot reach Kafka".
    result = offline(*args)
    assert result.code == 1, (result.code, result.err)
    assert "error" in result.err.lower()


def test_invalid_configuration_is_invalid_input(offline: Cli) -> None:
    result = offline("list", TOPIC_PARTITIONS="0")
    assert result.code == 1
    assert "error: invalid configuration" in result.err and "topic_partitions" in result.err


def test_sandbox_refuses_to_start_without_a_token(offline: Cli) -> None:
    result = offline("sandbox", "--port", "0", "--templates", "deploy/sandbox/templates.yaml")
    assert result.code == 1
    assert "WHATSAPP_TOKEN is not set" in result.err


def test_webhook_refuses_to_start_without_the_app_secret(offline: Cli) -> None:
    result = offline("webhook", "--port", "0")
    assert result.code == 1
    assert "WHATSAPP_APP_SECRET is not set: webhooks cannot be verified" in result.err
