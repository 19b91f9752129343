"""What every benchmark needs: the broker, private topic sets, worker processes, fast
producing and reading, percentiles, and a description of the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from schemas.settings import Settings
from tests.support.builders import now_iso, phone

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts" / "bench"
PARTITIONS = 8  # the product default (TOPIC_PARTITIONS)


class BenchError(RuntimeError):
    """A benchmark could not produce its figure; the message says what went wrong."""


async def json_result(args: list[str], timeout: float, what: str, **options: Any) -> dict[str, Any]:
    """Run `args` (a bench program) to its end; its last stdout line, a JSON object."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, **options
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"{what} did not finish in time") from None
    if proc.returncode != 0:
        raise BenchError(f"{what} failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


# --- the broker ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kafka_version_from_pom() -> str:
    pom = ROOT / "deploy" / "kafka" / "pom.xml"
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    return match.group(1) if match else "unknown"


@dataclass
class Broker:
    """The broker the benchmarks use: KAFKA_BOOTSTRAP_SERVERS, or one started here."""

    bootstrap: str
    port: int | None
    started: bool
    version: str

    @classmethod
    def start(cls) -> Broker:
        given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if given:
            port = None
            match = re.fullmatch(r"(?:127\.0\.0\.1|localhost):(\d+)", given.strip())
            if match:
                port = int(match.group(1))
            return cls(given, port, started=False, version=_kafka_version_from_pom())
        port, controller = free_port(), free_port()
        env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller)}
        out = subprocess.run(  # noqa: S603 (our own script, fixed arguments)
            [str(ROOT / "deploy" / "kafka" / "start")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise BenchError(f"deploy/kafka/start failed:\n{out.stderr[-3000:]}")
        bootstrap = out.stdout.strip().splitlines()[-1]
        return cls(bootstrap, port, started=True, version=_kafka_version_from_pom())

    def stop(self) -> None:
        if not self.started or self.port is None:
            return
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_WIPE": "1"}
        subprocess.run(  # noqa: S603 (our own script, fixed arguments)
            [str(ROOT / "deploy" / "kafka" / "stop")], env=env, capture_output=True, check=False
        )
        self.port = None  # stopped: nothing left to stop or to read on disk

    @property
    def data_dir(self) -> Path | None:
        """The broker's log dir when it is a local broker of deploy/kafka (else None)."""
        if self.port is None:
            return None
        path = ROOT / ".kafka" / f"data-{self.port}"
        return path if path.is_dir() else None

    def topic_disk_bytes(self, topic: str) -> int | None:
        """Bytes of the topic's log segments on disk (indexes excluded), if the dir is local."""
        data = self.data_dir
        if data is None:
            return None
        total = 0
        for part in data.glob(f"{topic}-*"):
            if not re.fullmatch(re.escape(topic) + r"-\d+", part.name):
                continue
            total += sum(f.stat().st_size for f in part.glob("*.log"))
        return total


# --- one benchmark's topics ------------------------------------------------------------


@dataclass
class BenchStack:
    """A private set of topics and an app id, as worker environment and as Settings."""

    bootstrap: str
    name: str
    unique: str = field(default_factory=lambda: secrets.token_hex(3))
    partitions: int = PARTITIONS
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def suffix(self) -> str:
        return f"bench-{self.name}-{self.unique}"

    @property
    def app_id(self) -> str:
        return f"engine-{self.suffix}"

    @property
    def env(self) -> dict[str, str]:
        s = self.suffix
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "APP_ID": self.app_id,
            "TOPIC_PROFILE_EVENTS": f"profile-events-{s}",
            "TOPIC_PROFILE_EVENTS_REPARTITION": f"profile-events-repartition-{s}",
            "TOPIC_JOURNEY_DEFINITIONS": f"journey-definitions-{s}",
            "TOPIC_WHATSAPP_REQUESTS": f"whatsapp-requests-{s}",
            "TOPIC_DELIVERY_EVENTS": f"delivery-events-{s}",
            "TOPIC_JOURNEY_STEPS": f"journey-steps-{s}",
            "TOPIC_DEAD_LETTER": f"dead-letter-{s}",
            "TOPIC_TIMERS": f"journey-timers-{s}",
            "TOPIC_PROFILE_PHONES": f"profile-phones-{s}",
            "TOPIC_HTTP_REQUESTS": f"http-requests-{s}",
            "TOPIC_PARTITIONS": str(self.partitions),
            "LOG_FORMAT": "json",
            **self.extra,
        }

    @property
    def settings(self) -> Settings:
        values: Any = {k.lower(): v for k, v in self.env.items()}
        return Settings(**values)

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}-profiles-changelog"

    async def delete_topics(self) -> None:
        """Delete every topic whose name carries this stack's suffix (workers stopped first)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if self.suffix in t]
            if names:
                with contextlib.suppress(KafkaError):
                    await admin.delete_topics(names)
        finally:
            await admin.close()


# --- processes -------------------------------------------------------------------------

_RUNNING: list[Process] = []


class Process:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: dict[str, str],
        log_dir: Path,
        *,
        cwd: Path = ROOT,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.started_at = time.time()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (the benchmark's own commands)
                list(args),
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Raise with the end of the log if the process has exited."""
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail(3000)}"
            )

    def log_tail(self, chars: int = 2000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def rss_bytes(self) -> int:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) * 1024 if match else 0

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def stop_all() -> None:
    """Stop every process the benchmarks started that is still running."""
    for process in list(_RUNNING):
        process.stop(timeout=10)


def worker(
    stack: BenchStack,
    log_dir: Path,
    *,
    role: str = "engine",
    name: str = "worker",
    extra_env: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Process:
    """`journeyctl worker --role ROLE --no-web` for this stack's topics.

    `root` is the source tree the worker runs from: another checkout (or a patched copy)
    gives a before/after comparison in the same run.
    """
    env = {
        **stack.env,
        "DATA_DIR": str(log_dir / f"{name}-data"),
        "PYTHONPATH": str(root),
        **(extra_env or {}),
    }
    args = [sys.executable, "-m", "engine.cli", "worker", "--role", role, "--no-web"]
    return Process(name, args, env, log_dir, cwd=root)


# --- journeys and records --------------------------------------------------------------


async def deploy(stack: BenchStack, *journeys: str, root: Path = ROOT) -> None:
    """Create the stack's topics and deploy the journeys (YAML text) with `journeyctl deploy`.

    The CLI of the tree the worker runs from writes the records, so a worker from another
    tree (an older commit, a patched copy) reads definitions in its own schema.
    """
    folder = ARTIFACTS / "journeys" / stack.suffix
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n, text in enumerate(journeys):
        path = folder / f"journey-{n}.yaml"
        path.write_text(text)
        files.append(str(path))
    env = {**os.environ, **stack.env, "PYTHONPATH": str(root)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "deploy",
        *files,
        cwd=root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise BenchError(f"journeyctl deploy failed: {out.decode()[-2000:]}")


def partition_of(key: bytes, partitions: int) -> int:
    """murmur2, as Kafka's Java default (and the engine's check) computes it."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def preload(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]], partitions: int
) -> int:
    """Write records fast (one batch per partition at a time); return how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=512 * 1024
    )
    await producer.start()
    sent = 0
    try:
        batches: dict[int, Any] = {}
        futures: list[asyncio.Future[Any]] = []
        for key, value in records:
            part = partition_of(key, partitions)
            batch = batches.get(part)
            if batch is None:
                batch = batches[part] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=part))
                batch = batches[part] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            sent += 1
            if len(futures) > 64:
                await asyncio.gather(*futures)
                futures.clear()
        for part, batch in batches.items():
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=part))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of every partition of a topic (empty if it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        if not parts:
            return {}
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    client = consumer._client  # aiokafka has no public way to add a topic to metadata
    client.add_topic(topic)
    await client.force_metadata_update()
    return sorted(client.cluster.partitions_for_topic(topic) or [])


class OffsetWatch:
    """Polls a topic's total end offset cheaply (one long-lived consumer)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._tps: list[TopicPartition] = []

    async def __aenter__(self) -> OffsetWatch:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        if not self._tps:
            parts = await _partitions(self._consumer, self.topic)
            self._tps = [TopicPartition(self.topic, p) for p in parts]
            if not self._tps:
                return 0
        ends = await self._consumer.end_offsets(self._tps)
        return sum(ends.values())

    async def wait_for(
        self,
        expected: int,
        *,
        timeout: float,
        watch: Sequence[Process] = (),
        interval: float = 0.5,
        stall: float = 180.0,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, float]:
        """Wait until the topic holds `expected` records; return (count, seconds waited).

        Gives up after `timeout`, or after `stall` seconds without a new record.
        """
        started = last_change = time.monotonic()
        count = previous = -1
        while time.monotonic() - started < timeout:
            for process in watch:
                process.check()
            count = await self.total()
            if progress is not None:
                progress(count)
            if count >= expected:
                break
            now = time.monotonic()
            if count != previous:
                previous, last_change = count, now
            elif now - last_change > stall:
                break  # nothing new for `stall` seconds: the caller reports the shortfall
            await asyncio.sleep(interval)
        return max(count, 0), time.monotonic() - started


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    keep: Callable[[bytes | None, bytes | None], bool] | None = None,
    limit: int | None = None,
) -> list[Record]:
    """Every record now in the topic (up to `limit`), optionally filtered on (key, value)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    out: list[Record] = []
    try:
        parts = await _partitions(consumer, topic)
        if not parts:
            return out
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
            for tp, records in batches.items():
                for r in records:
                    if keep is None or keep(r.key, r.value):
                        out.append(Record(tp.partition, r.offset, r.key, r.value, r.timestamp))
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
            if limit is not None and len(out) >= limit:
                break
    finally:
        await consumer.stop()
    return out


async def edge_timestamps(bootstrap: str, topic: str) -> tuple[int, int] | None:
    """(earliest first-record timestamp, latest last-record timestamp) over the partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return None
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts: list[int] = []
        lasts: list[int] = []
        for tp in tps:
            if ends[tp] == 0:
                continue
            for offset, bucket in ((0, firsts), (ends[tp] - 1, lasts)):
                consumer.seek(tp, offset)
                batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
                records = batch.get(tp, [])
                if records:
                    bucket.append(records[0].timestamp)
        if not firsts:
            return None
        return min(firsts), max(lasts)
    finally:
        await consumer.stop()


# --- statistics and the machine ------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of unsorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (everything but idle and
    iowait in /proc/stat): the difference over a phase, divided by its length, is how
    many cores the phase kept busy, whoever used them."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return float("nan")
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def other_load() -> list[str]:
    """Other busy programs on the machine (brokers, test runs), to say when it was shared."""
    found: list[str] = []
    own = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == own:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmd:
            match = re.search(r"server-(\d+)\.properties", cmd)
            found.append(f"Kafka broker on port {match.group(1) if match else '?'}")
        elif "pytest" in cmd and "python" in cmd:
            found.append("pytest run")
    return sorted(set(found))


def machine_info() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "cpu": model.group(1).strip() if model else platform.processor(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "orjson": _version("orjson"),
        "pydantic": _version("pydantic"),
        "loadavg": os.getloadavg(),
    }


# --- the WhatsApp sandbox --------------------------------------------------------------

SANDBOX_TOKEN = "bench-" + secrets.token_hex(8)
PHONE_NUMBER_IDS = ("100000000000001", "100000000000002", "100000000000003", "100000000000004")


class Sandbox:
    """bench.sandbox_server in a subprocess, and the sandbox's inspection API."""

    def __init__(
        self, log_dir: Path, *, rate: float, numbers: Sequence[str], name: str = "sandbox"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "bench.sandbox_server", "--port", str(self.port)]
        args += ["--rate", str(rate)]
        for number in numbers:
            args += ["--number", number]
        self.process = Process(name, args, {"WA_SANDBOX_TOKEN": SANDBOX_TOKEN}, log_dir)

    @property
    def worker_env(self) -> dict[str, str]:
        """What a connector worker needs to call this sandbox."""
        return {
            "WHATSAPP_API_URL": self.url,
            "WHATSAPP_TOKEN": SANDBOX_TOKEN,
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_IDS[0],
        }

    async def ready(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                self.process.check()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise BenchError(f"the sandbox did not answer within {timeout:.0f}s")

    async def get(self, path: str, **params: str) -> Any:
        import httpx

        async with httpx.AsyncClient(trust_env=False, timeout=120) as client:
            response = await client.get(self.url + path, params=params)
            response.raise_for_status()
            return orjson.loads(response.content)

    async def reset(self) -> None:
        """Forget the messages and the counters (the rate buckets stay)."""
        import httpx

        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            (await client.delete(self.url + "/sandbox/stats")).raise_for_status()
            (await client.delete(self.url + "/sandbox/messages")).raise_for_status()

    def stop(self) -> None:
        self.process.stop(timeout=10)


def received_at(message: dict[str, Any]) -> float:
    """The sandbox's `received_at` (ISO, milliseconds) as epoch seconds."""
    return datetime.fromisoformat(str(message["received_at"]).replace("Z", "+00:00")).timestamp()


def callback_profile(message: dict[str, Any]) -> str | None:
    """The profile id the connector put in biz_opaque_callback_data."""
    raw = message.get("biz_opaque_callback_data")
    if not raw:
        return None
    value = orjson.loads(raw).get("profile_id")
    return str(value) if value is not None else None


def send_request(i: int, run: str, phone_number_id: str | None) -> tuple[bytes, bytes]:
    """(key, value) of a SendRequest the connector can send (opted in, valid phone)."""
    profile_id = f"p-{run}-{i}"
    stamp = now_iso()
    request = {
        "message_id": f"bench-send:1:{profile_id}:send:1",
        "journey_id": "bench-send",
        "journey_version": 1,
        "activity_id": "send",
        "profile_id": profile_id,
        "to": phone(i),
        "consent": "opted_in",
        "template": "cart_reminder",
        "language": "es",
        "parameters": {"body": ["Ana", str(20 + i % 50)]},
        "phone_number_id": phone_number_id,
        "requested_at": stamp,
        "trigger_at": stamp,
    }
    return profile_id.encode(), orjson.dumps(request)


async def commit_to_end(bootstrap: str, group: str, topic: str) -> None:
    """Start a consumer group at the topic's end: a worker of that group skips the backlog."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.commit({tp: off for tp, off in ends.items()})
    finally:
        await consumer.stop()


async def paced_produce(
    bootstrap: str,
    topic: str,
    make: Callable[[int], tuple[bytes, bytes]],
    *,
    rate: float,
    seconds: float,
) -> tuple[int, float]:
    """Produce `rate` records a second for `seconds` (murmur2-partitioned by key).

    Each record's timestamp is taken when it is handed to the client, so it is the time
    the upstream system published it. Returns (records, seconds it took).
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0)
    await producer.start()
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    sent = 0
    futures: list[asyncio.Future[Any]] = []
    try:
        start = loop.time()
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while sent < due:
                key, value = make(sent)
                futures.append(await producer.send(topic, value, key=key))
                sent += 1
            if len(futures) >= 500:
                # Never wait for acks here: that would turn the pacing into bursts.
                for future in futures:
                    if future.done():
                        future.result()
                futures = [f for f in futures if not f.done()]
            await asyncio.sleep(0.002)
        took = loop.time() - start
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent, took
