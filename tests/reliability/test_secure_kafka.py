"""SASL_SSL for real: the engine, the connector, the webhook receiver, ingestion and the CLI
against a broker with SCRAM-SHA-512, TLS and the StandardAuthorizer, logged in as a user
that holds only the ACLs docs/KAFKA.md lists; and the error a user reads when the
password is wrong or an ACL is missing.

The broker is `deploy/kafka/start --secure` on two free loopback ports from 29100 up
(TEST_SECURE_KAFKA_PORT fixes them), started once for the session, its data under the
checkout's .kafka/ and wiped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka.admin import AclOperation, ResourceType

from schemas.settings import Settings
from tests.reliability.conftest import StartReceiver, StartSandbox, StartWorker
from tests.reliability.support import reliability_stack, signup
from tests.support.brokers import Acl, LocalCluster, ScramAdmin, client_env, free_ports
from tests.support.kafka import ROOT, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOURNEY = """\
id: secure-welcome
name: Welcome over SASL_SSL
entry: {event: user.signed_up}
start: send
activities:
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""
READ_WRITE = (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.CREATE)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalCluster]:
    cluster = LocalCluster(port=free_ports(2, "TEST_SECURE_KAFKA_PORT"), secure=True)
    cluster.stop()  # a broker left by an interrupted run
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def documented_acls(stack: Stack) -> list[Acl]:
    """The ACLs of docs/KAFKA.md for a worker of every role, the receiver, ingest and the CLI:
    the project's topics (CREATE only because the worker creates missing ones), the
    topics and consumer group named by APP_ID (faust's changelogs and its group)."""
    topics = [v for k, v in stack.env.items() if k.startswith("TOPIC_") and k != "TOPIC_PARTITIONS"]
    app_id = stack.env["APP_ID"]
    return [
        *(
            Acl(ResourceType.TOPIC, name, READ_WRITE)
            for name in [*topics, "campaign-runs", "whatsapp-controls"]
        ),
        Acl(ResourceType.TOPIC, app_id, READ_WRITE, prefixed=True),
        Acl(ResourceType.GROUP, app_id, (AclOperation.READ, AclOperation.DESCRIBE), prefixed=True),
    ]


def login(
    secure_kafka: LocalCluster, stack: Stack, tmp_path: Path, acls: list[Acl] | None
) -> tuple[Stack, dict[str, str], str]:
    """A new user with `acls` (the documented ones when None): its stack, environment and
    password."""
    user, password = f"journeys-{stack.unique}", secrets.token_hex(12)
    admin = ScramAdmin(secure_kafka)
    admin.add_user(user, password)
    admin.allow(user, documented_acls(stack) if acls is None else acls)
    password_file = tmp_path / f"{user}.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    security = client_env(secure_kafka, user, password_file)
    secured = Stack(stack.bootstrap, stack.unique, stack.partitions, {**stack.extra, **security})
    return secured, secured.env, password


def clean_environ() -> dict[str, str]:
    """This process's environment without the Kafka and topic settings of the test broker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TOPIC_"))}


def journeyctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**clean_environ(), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def journeyctl_async(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`journeyctl` without blocking this loop (the sandbox and the receiver run in it)."""
    return await asyncio.to_thread(journeyctl, env, *args)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_every_part_runs_with_only_the_documented_acls(
    secure_kafka: LocalCluster,
    unique: str,
    tmp_path: Path,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
) -> None:
    sandbox = await start_sandbox()
    plain = reliability_stack(secure_kafka.bootstrap, unique, {"WHATSAPP_API_URL": sandbox.url})
    stack, env, password = login(secure_kafka, plain, tmp_path, None)
    journey = tmp_path / "welcome.yaml"
    journey.write_text(JOURNEY)

    deployed = await journeyctl_async(env, "deploy", str(journey))
    assert deployed.returncode == 0, deployed.stderr
    # The receiver runs in this process: its settings get the password itself.
    values: dict[str, Any] = {k.lower(): v for k, v in env.items() if not k.endswith("_FILE")}
    receiver = await start_receiver(Settings(**values, kafka_sasl_password=password))
    sandbox.state.config = sandbox.state.config.model_copy(update={"webhook_url": receiver})
    worker = workers(stack, "secure", role="all")

    # One profile through the CLI, one through ingestion.
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(signup(1)[1]) + b"\n")
    published = await journeyctl_async(env, "publish", str(events))
    assert published.returncode == 0, published.stderr
    port, token = free_port(), secrets.token_hex(8)
    ingest = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "engine.cli", "ingest", "--port", str(port)],
        env={**clean_environ(), **env, "INGEST_API_TOKEN": token},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/events"
        accepted = await post_when_up(url, token, signup(2)[1], ingest)
        assert (accepted.status_code, accepted.json()["accepted"]) == (202, 1), accepted.text
    finally:
        ingest.terminate()
        await asyncio.to_thread(ingest.wait, 30)

    await sandbox.wait_for(
        ["secure-welcome:1:p-1:send:1", "secure-welcome:1:p-2:send:1"], seconds=120, watch=[worker]
    )
    # The receiver's delivered statuses reach delivery-events; the CLI's report reads them.
    deadline = time.monotonic() + 60
    while True:
        report = await journeyctl_async(env, "report", "--format", "json", "--timeout", "30")
        assert report.returncode == 0, report.stderr
        activity = orjson.loads(report.stdout)["journeys"][0]["activities"]
        sends = [a for a in activity if a["activity_id"] == "send"]
        if sends and sends[0]["delivered"] == 2:
            break
        assert time.monotonic() < deadline, f"not delivered: {sends}"
        await asyncio.sleep(2)
    assert worker.alive()


async def post_when_up(
    url: str, token: str, event: object, proc: subprocess.Popen[bytes]
) -> httpx.Response:
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(trust_env=False, timeout=30, headers=headers) as http:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                return await http.post(url, json={"events": [event]})
            except httpx.TransportError:
                assert time.monotonic() < deadline, "ingest never listened"
                await asyncio.sleep(0.3)


def test_a_wrong_password_says_so(secure_kafka: LocalCluster, unique: str, tmp_path: Path) -> None:
    _, env, _ = login(
        secure_kafka, reliability_stack(secure_kafka.bootstrap, unique, {}), tmp_path, None
    )
    Path(env["KAFKA_SASL_PASSWORD_FILE"]).write_text("not-the-password")
    listed = journeyctl(env, "list")
    assert listed.returncode == 2
    assert (
        f"error: Kafka at {secure_kafka.bootstrap} refused the credentials of user "
        f"'journeys-{unique}' (SCRAM-SHA-512): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    ) in listed.stderr


def test_a_missing_acl_names_the_user_and_the_doc(
    secure_kafka: LocalCluster, unique: str, tmp_path: Path
) -> None:
    plain = reliability_stack(secure_kafka.bootstrap, unique, {})
    events_topic = plain.env["TOPIC_PROFILE_EVENTS"]
    without_write = [
        acl if acl.name != events_topic else Acl(acl.resource, acl.name, (AclOperation.DESCRIBE,))
        for acl in documented_acls(plain)
    ]
    _, env, _ = login(secure_kafka, plain, tmp_path, without_write)
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(signup(1)[1]) + b"\n")
    published = journeyctl(env, "publish", str(events))
    assert published.returncode == 2, published.stderr
    assert (
        f"error: Kafka at {secure_kafka.bootstrap} refused user 'journeys-{unique}' access to "
        "a topic (TopicAuthorizationFailedError"
    ) in published.stderr
    assert "an ACL is missing; docs/KAFKA.md lists the ACLs each part needs" in published.stderr
