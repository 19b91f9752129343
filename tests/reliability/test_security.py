"""Secrets only from the environment or files, masked logs, a CEL that cannot reach out,
and Kafka SASL/TLS configured from the environment.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from activities.expressions import ExpressionError, evaluate
from engine.core.loader import JourneyValidationError, parse_journey
from engine.streaming.app import _broker_credentials
from schemas.common import compile_expression
from schemas.settings import Settings
from tests.reliability.conftest import StartWorker
from tests.reliability.support import (
    APP_SECRET,
    TOKEN,
    VERIFY_TOKEN,
    deploy,
    reliability_stack,
    report,
    signup,
)
from tests.support.builders import phone, profile_event
from tests.support.kafka import ROOT, Stack, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# --- secrets only from the environment or files --------------------------------------

SECRET_KEY = re.compile(
    r"""^\s*-?\s*["']?(?P<key>[A-Za-z0-9_.-]*(token|secret|passw(or)?d|api[_-]?key|"""
    r"""private[_-]?key|credential|auth)[A-Za-z0-9_.-]*)["']?\s*[:=]\s*(?P<value>.*?)\s*$""",
    re.IGNORECASE,
)
# Keys that name where a secret is, not the secret: secretName, WHATSAPP_TOKEN_FILE, ...
REFERENCE_KEY = re.compile(r"(name|file|path|ref|mount|type|kind|mode)$", re.IGNORECASE)
# What a value may be: nothing, a placeholder, a reference to the environment or a file.
HARMLESS_VALUE = re.compile(
    r"""^(["']?)(|replace[_-]?me|change[_-]?me[\w-]*|<[^>]*>|\$\{[^}]*\}|\$[A-Z_]+|"""
    r"""\.\.\.|x+|example[\w-]*|placeholder|null|none|~|true|false|\d+|/[\w./-]+|"""
    r"""[A-Z][A-Z0-9_]*)\1\s*(#.*)?$""",
    re.IGNORECASE,
)
# Shapes of real credentials, wherever they appear.
TOKEN_SHAPES = {
    "Meta access token": re.compile(r"\bEAA[A-Za-z0-9]{60,}"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
}
CONFIG_FILE = re.compile(r"(\.ya?ml|\.env(\.[\w-]+)?|\.ini|\.cfg|\.conf|\.properties)$")


def repository_files() -> list[Path]:
    """Files git tracks, plus new ones it would add (not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    names = sorted({n for n in out.stdout.decode().split("\0") if n})
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def test_no_secret_is_assigned_in_yaml_or_env_files() -> None:
    config = [p for p in repository_files() if CONFIG_FILE.search(p.name)]
    assert any(p.name.endswith((".yaml", ".yml")) for p in config)
    found = []
    for path in config:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            match = SECRET_KEY.match(line)
            if (
                match
                and not REFERENCE_KEY.search(match.group("key"))
                and not HARMLESS_VALUE.match(match.group("value"))
            ):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "secret-looking assignments:\n" + "\n".join(found)


def test_no_credential_shaped_string_anywhere_in_the_repository() -> None:
    found = []
    for path in repository_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for name, shape in TOKEN_SHAPES.items():
            for match in shape.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not found, "\n".join(found)


def test_secrets_come_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "whatsapp-token"
    token_file.write_text("token-from-a-file\n")
    password_file = tmp_path / "sasl-password"
    password_file.write_text("password-from-a-file")
    for name in ("WHATSAPP_TOKEN", "KAFKA_SASL_PASSWORD", "WHATSAPP_APP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WHATSAPP_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "secret-from-the-environment")
    settings = Settings()
    assert settings.whatsapp_token is not None and settings.kafka_sasl_password is not None
    assert settings.whatsapp_token.get_secret_value() == "token-from-a-file"
    assert settings.kafka_sasl_password.get_secret_value() == "password-from-a-file"
    assert settings.whatsapp_app_secret is not None
    assert settings.whatsapp_app_secret.get_secret_value() == "secret-from-the-environment"
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "from-a-file" not in shown and "from-the-environment" not in shown
    # A journey cannot carry a secret: the schema has no such field.
    journey = (
        "id: j\nname: J\nentry: {event: e}\nstart: send\nactivities:\n"
        "  send: {type: whatsapp, template: t, language: es, token: EAAsecret, next: done}\n"
        "  done: {type: end}\n"
    )
    with pytest.raises(JourneyValidationError) as caught:
        parse_journey(journey, "j.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "j.yaml:6:53: activities.send.token: unknown field"
    ]


# --- logs: phones and tokens masked ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A `journeyctl` subprocess whose whole output goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", *args],
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


async def wait_healthy(url: str, process: Process, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(trust_env=False, timeout=2) as http:
        while True:
            assert process.proc.poll() is None, process.log.read_text()[-3000:]
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} never answered 200"
            await asyncio.sleep(0.2)


TEMPLATES_YAML = """\
- {name: welcome, language: es, category: utility, body: 'Hola {{1}}, bienvenida.'}
"""
WELCOME_SOON = """\
id: welcome
name: Welcome
entry: {event: user.signed_up}
start: settle
activities:
  settle: {type: wait, duration: 1s, next: send}
  send: {type: whatsapp, template: welcome, language: es, parameters: {body: ['profile.first_name']}, next: done}
  done: {type: end}
"""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_no_log_line_shows_a_phone_number_or_a_secret(
    level: str,
    kafka_bootstrap: str,
    unique: str,
    tmp_path: Path,
    workers: StartWorker,
    processes: list[Process],
) -> None:
    """Sends, statuses, a failed call, an inbound STOP and its reply, a phone change and a
    dead letter: every line the worker, webhook receiver and sandbox wrote is searched."""
    sandbox_port, webhook_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    stack: Stack = reliability_stack(
        kafka_bootstrap, unique, {"WHATSAPP_API_URL": sandbox_url, "LOG_LEVEL": level}
    )
    await deploy(stack, WELCOME_SOON)
    templates = tmp_path / "templates.yaml"
    templates.write_text(TEMPLATES_YAML)
    webhook = Process(["webhook", "--port", str(webhook_port)], stack.env, tmp_path / "webhook.log")
    processes.append(webhook)
    sandbox = Process(
        [
            "sandbox",
            "--port",
            str(sandbox_port),
            "--templates",
            str(templates),
            "--webhook-url",
            f"http://127.0.0.1:{webhook_port}/webhooks/whatsapp",
        ],
        stack.env,
        tmp_path / "sandbox.log",
    )
    processes.append(sandbox)
    await wait_healthy(f"http://127.0.0.1:{webhook_port}/healthz", webhook)
    await wait_healthy(f"{sandbox_url}/healthz", sandbox)
    worker = workers(stack, "worker")

    people = [signup(900 + i) for i in range(5)]
    phones = [phone(900 + i) for i in range(5)] + [phone(990), phone(991)]
    records: list[tuple[str, Any]] = [*people]
    # A new phone for one profile (the phone index), and a phone that is not E.164.
    records.append(
        (
            "p-900",
            profile_event(
                "p-900:moved", "profile.updated", "p-900", attributes={"phone": phones[5]}
            ),
        )
    )
    records.append(
        (
            "p-bad",
            profile_event(
                "p-bad:1", "user.signed_up", "p-bad", attributes={"phone": "34610000991"}
            ),
        )
    )
    async with httpx.AsyncClient(base_url=sandbox_url, trust_env=False, timeout=10) as http:
        # Two calls fail first (logged with the recipient), then go through on retry.
        assert (await http.post("/sandbox/faults", json={"status": 500, "count": 2})).is_success
        await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

        async def messages() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = (await http.get("/sandbox/messages")).json()
            return found

        deadline = time.monotonic() + 90
        while len([m for m in await messages() if "read" in m["statuses"]]) < 5:
            assert worker.alive() and time.monotonic() < deadline, worker.log_text()[-3000:]
            await asyncio.sleep(0.3)
        # Someone answers STOP: inbound webhook, consent update, the confirmation sent back.
        answer = await http.post("/sandbox/inbound", json={"from": phones[1], "text": "STOP"})
        assert answer.is_success, answer.text
        while not [m for m in await messages() if m["type"] == "text"]:
            assert worker.alive() and time.monotonic() < deadline, worker.log_text()[-3000:]
            await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)
    worker.stop()
    for process in processes:
        process.stop()

    logs = {
        "worker": worker.log_text(),
        "webhook": webhook.log.read_text(errors="replace"),
        "sandbox": sandbox.log.read_text(errors="replace"),
    }
    secrets = {"token": TOKEN, "app secret": APP_SECRET, "verify token": VERIFY_TOKEN}
    leaks = []
    for name, text in logs.items():
        for number, line in enumerate(text.splitlines(), 1):
            for shown in phones:
                # E.164 and Meta's wa_id (the same digits without '+').
                if shown in line or shown[1:] in line:
                    leaks.append(f"{name}:{number}: phone {shown}: {line[:300]}")
            for what, value in secrets.items():
                if value in line:
                    leaks.append(f"{name}:{number}: {what}: {line[:300]}")
    masked = sum(text.count(phones[0][:3] + "******") for text in logs.values())
    report(
        f"log_masking_{level.lower()}",
        lines={name: len(text.splitlines()) for name, text in logs.items()},
        masked_phone_mentions=masked,
        leaks=len(leaks),
    )
    assert masked > 0, "no masked phone at all: the logs did not cover the sends"
    assert not leaks, "\n".join(leaks[:20])


# --- CEL cannot reach out -------------------------------------------------------------

VARIABLES = {
    "profile": {"first_name": "Ana", "phone": "+34610000001"},
    "event": {"type": "cart.abandoned", "data": {"cart_total": 42.5}},
    "trigger": {},
    "journey": {"id": "j", "version": 1},
}
MARKER = Path("/tmp/journey-engine-cel-side-effect")

# Each must fail to compile or to evaluate; none may do anything.
REACH_OUT = [
    'open("/etc/passwd")',
    f'open("{MARKER}", "w")',
    '__import__("os").system("touch {MARKER}")',
    'exec("import os")',
    'eval("1 + 1")',
    "getattr(profile, '__class__')",
    "profile.__class__",
    "profile.first_name.__class__.__mro__",
    '"".__class__.__subclasses__()',
    "event.data.__dict__",
    'profile["__globals__"]',
    "profile.first_name.upper()",
    "system('id')",
    'http.get("http://127.0.0.1:PORT/")',
    'fetch("http://127.0.0.1:PORT/")',
    'request("GET", "http://127.0.0.1:PORT/")',
    'dyn(profile).__init__.__globals__["os"]',
    "1 +",
    "}{",
]


@pytest.mark.parametrize("source", REACH_OUT)
async def test_cel_cannot_reach_files_network_or_python_objects(source: str) -> None:
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = source.replace("PORT", str(port))
    try:
        with pytest.raises((ValueError, ExpressionError)):
            compile_expression(source)
            evaluate(source, VARIABLES)
        await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()
    assert connections == [], "an expression opened a connection"
    assert not await asyncio.to_thread(MARKER.exists), "an expression touched the file system"


def test_python_objects_never_reach_an_expression() -> None:
    class Secret:
        password = "hunter2"

    with pytest.raises(ExpressionError, match="Failed to convert Python object"):
        evaluate("secret.password", {**VARIABLES, "secret": Secret()})


LONG_OR_DEEP = {
    "sum of 2,000 terms": "1 + " * 2_000 + "1",
    "sum of 20,000 terms": "1 + " * 20_000 + "1",
    "and of 20,000 terms": "true && " * 20_000 + "true",
    "5,000 nested parentheses": "(" * 5_000 + "1" + ")" * 5_000,
    "5,000 nested lists": "[" * 5_000 + "1" + "]" * 5_000,
    "100,000 negations": "!" * 100_000 + "true",
    "a 1 MB string literal": '"' + "x" * 1_000_000 + '" == ""',
}
_CHILD = """
import sys
from activities.expressions import ExpressionError, evaluate
from schemas.common import compile_expression
source = sys.stdin.read()
try:
    compile_expression(source)
except ValueError:
    print("compile error"); raise SystemExit(0)
try:
    evaluate(source, {})
except ExpressionError:
    print("evaluation error"); raise SystemExit(0)
print("value")
"""


@pytest.mark.parametrize("name", list(LONG_OR_DEEP))
def test_long_or_deep_expressions_end_in_an_error_or_a_value_never_a_crash(name: str) -> None:
    """In a child process: a crash there must fail this test, not end the test run."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=LONG_OR_DEEP[name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, (
        f"{name}: the process died with {signal.Signals(-out.returncode).name}"
        if out.returncode < 0
        else out.stderr[-2000:]
    )
    assert out.stdout.strip() in ("compile error", "evaluation error", "value")


def test_an_expression_cannot_keep_the_worker_busy() -> None:
    """Nested comprehensions multiply: three over 300 items are 27 million steps."""
    items = "[" + ",".join(["1"] * 300) + "]"
    source = f"{items}.all(a, {items}.all(b, {items}.all(c, true)))"
    started = time.monotonic()
    try:
        compile_expression(source)
        evaluate(source, {})
    except (ValueError, ExpressionError):
        pass
    elapsed = time.monotonic() - started
    report("cel_nested_comprehension", chars=len(source), seconds=round(elapsed, 2))
    assert elapsed < 1.0, f"one {len(source)}-character expression ran for {elapsed:.1f}s"


# --- Kafka SASL and TLS from the environment -------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA certificate and a client certificate and key (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    key, cert = tmp_path / "client.key", tmp_path / "client.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=journey-engine-test",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, cert, key  # the self-signed certificate is its own CA


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_comes_from_the_environment(
    mechanism: str, tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = tls_files
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1:9093,broker-2:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "journey-engine",
        "KAFKA_SASL_PASSWORD": "s3cr3t-from-env",
        "KAFKA_SSL_CAFILE": str(ca),
        "KAFKA_SSL_CERTFILE": str(cert),
        "KAFKA_SSL_KEYFILE": str(key),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    options = settings.aiokafka_security()
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "journey-engine",
        "sasl_plain_password": "s3cr3t-from-env",
    }
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs(), "the CA file was not loaded"
    # aiokafka takes these keyword arguments as they are (nothing connects here).
    AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, **options)
    AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **options)
    # And the faust app gets the same credentials.
    credentials = _broker_credentials(settings)
    assert (credentials.username, credentials.password) == ("journey-engine", "s3cr3t-from-env")
    assert credentials.mechanism.value == mechanism
    assert credentials.ssl_context is context or isinstance(credentials.ssl_context, ssl.SSLContext)


async def test_plain_ssl_and_plaintext_from_the_environment(
    tls_files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = tls_files
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(ca))
    monkeypatch.setenv("KAFKA_SSL_CERTFILE", str(cert))
    monkeypatch.setenv("KAFKA_SSL_KEYFILE", str(key))
    options = Settings().aiokafka_security()
    assert options["security_protocol"] == "SSL" and set(options) == {
        "security_protocol",
        "ssl_context",
    }
    AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9093", **options)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert Settings().aiokafka_security() == {}


def test_the_readme_documents_the_kafka_security_variables() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in (
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CAFILE",
        "KAFKA_SSL_CERTFILE",
        "KAFKA_SSL_KEYFILE",
        "_FILE",
    ):
        assert name in readme, f"README does not mention {name}"
