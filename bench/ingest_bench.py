"""Upstream ingestion: the repartition hop's cost, the HTTP API beside a bare producer, and
bulk import.

- `repartition`: one engine worker over the same events (the no-wait bench journey), once
  with every record on its key's murmur2 partition and once with every record on another
  partition (each moved through the repartition topic first).
- `ingest`: `journeyctl ingest` in its own process, fed by an aiohttp client in this one
  (batches of 100 and of 500, a few requests in flight), beside a bare aiokafka producer
  writing the same events with the same settings (acks=all, idempotent) from this process.
- `import`: `journeyctl import` of a generated CSV (a phone, a name, a language, consent and
  a plan per row) to a topic of its own, wall time and CPU.
"""

from __future__ import annotations

import asyncio
import os
import resource
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    ARTIFACTS,
    BenchError,
    BenchStack,
    Broker,
    OffsetWatch,
    Process,
    deploy,
    free_port,
    median,
    partition_of,
    worker,
)
from bench.engine_bench import NO_WAIT
from tests.support.builders import event_record, now_iso

TOKEN = secrets.token_urlsafe(16)  # this run's bearer token


@dataclass(frozen=True, slots=True)
class IngestConfig:
    events: int = 50_000  # per run of each phase
    import_rows: int = 1_000_000
    in_flight: int = 4  # requests the HTTP client keeps open at once
    runs: int = 1  # of each repartition case
    timeout: float = 900.0


async def _load(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], move: int) -> None:
    """Write the records, each on its murmur2 partition + `move` (modulo the count)."""
    from engine.streaming.produce import produce_batched
    from schemas.settings import Settings

    producer = _producer(Settings(kafka_bootstrap_servers=bootstrap))
    await producer.start()
    try:
        count = len(await producer.partitions_for(topic))
        for first in range(0, len(records), 5000):
            chunk = records[first : first + 5000]
            parts = [(partition_of(k, count) + move) % count for k, _ in chunk]
            futures = await produce_batched(
                producer, [(topic, k, v) for k, v in chunk], partitions=iter(parts)
            )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _producer(settings: Any) -> Any:
    from connectors.kafka import acknowledged_producer

    return acknowledged_producer(settings)


async def _engine_rate(
    broker: Broker, label: str, move: int, cfg: IngestConfig, log_dir: Path
) -> dict[str, float]:
    """One warm worker (its first send seen) over `cfg.events` events written after, each
    on its murmur2 partition + `move`: events/s and worker CPU to the last send request."""
    stack = BenchStack(broker.bootstrap, f"hop-{label}")
    settings = stack.settings
    topic = settings.topic_profile_events
    try:
        await deploy(stack, NO_WAIT)
        process = worker(stack, log_dir, name=f"hop-{label}-{stack.unique}")
        stamp = now_iso()
        async with OffsetWatch(broker.bootstrap, settings.topic_whatsapp_requests) as sends:
            await _load(
                broker.bootstrap,
                topic,
                [event_record(cfg.events, stack.unique, occurred_at=stamp)],
                0,
            )
            got, _ = await sends.wait_for(1, timeout=180, watch=[process], interval=0.2)
            if got < 1:
                raise BenchError(f"the worker sent nothing:\n{process.log_tail(3000)}")
            records = [event_record(i, stack.unique, occurred_at=stamp) for i in range(cfg.events)]
            cpu, started = process.cpu_seconds(), time.monotonic()
            await _load(broker.bootstrap, topic, records, move)
            got, _ = await sends.wait_for(
                cfg.events + 1, timeout=cfg.timeout, watch=[process], interval=0.2
            )
            seconds = time.monotonic() - started
            cpu = process.cpu_seconds() - cpu
        process.stop()
        if got < cfg.events + 1:
            raise BenchError(f"{label}: {got - 1} of {cfg.events} send requests in time")
        return {"per_second": cfg.events / seconds, "cpu_per_event_ms": cpu / cfg.events * 1e3}
    finally:
        await stack.delete_topics()


async def run_repartition(broker: Broker, cfg: IngestConfig, log_dir: Path) -> dict[str, Any]:
    """Engine events/s with every record on the right partition and on a wrong one, in
    alternating runs (which goes first swaps), medians."""
    runs: dict[str, list[dict[str, float]]] = {"right": [], "wrong": []}
    for run_no in range(cfg.runs):
        order = (("right", 0), ("wrong", 1)) if run_no % 2 == 0 else (("wrong", 1), ("right", 0))
        for label, move in order:
            runs[label].append(await _engine_rate(broker, label, move, cfg, log_dir))
    out: dict[str, Any] = {"events": cfg.events, "runs": cfg.runs}
    for label, measured in runs.items():
        out[label] = {key: median([m[key] for m in measured]) for key in measured[0]}
    out["cost"] = 1 - out["wrong"]["per_second"] / out["right"]["per_second"]
    return out


async def _post_all(url: str, bodies: list[bytes], in_flight: int) -> float:
    """Seconds to get a 202 for every body, `in_flight` requests at a time."""
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body, headers=headers) as response:
                    text = await response.text()
                    if response.status != 202:
                        raise BenchError(f"ingest answered {response.status}: {text[:500]}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        return time.perf_counter() - started


async def _ready(url: str, process: Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            process.check()
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise BenchError(f"journeyctl ingest did not start:\n{process.log_tail(3000)}")


async def run_ingest(broker: Broker, cfg: IngestConfig, log_dir: Path) -> dict[str, Any]:
    """Events/s through one ingest process (batches of 100 and 500) and a bare producer."""
    from engine.streaming.produce import produce_batched
    from engine.streaming.topics import ensure_topics

    stack = BenchStack(broker.bootstrap, "ingest")
    settings = stack.settings
    out: dict[str, Any] = {"events": cfg.events, "in_flight": cfg.in_flight}
    try:
        await ensure_topics(settings)
        stamp = now_iso()
        values = [event_record(i, stack.unique, occurred_at=stamp)[1] for i in range(cfg.events)]
        # The bare producer: the same events, keyed and partitioned the same way, 500 a batch.
        producer = _producer(settings)
        await producer.start()
        try:
            topic = settings.topic_profile_events
            await producer.partitions_for(topic)
            started = time.perf_counter()
            for first in range(0, cfg.events, 500):
                chunk = [
                    (topic, f"p-{stack.unique}-{i}".encode(), values[i])
                    for i in range(first, min(first + 500, cfg.events))
                ]
                await asyncio.gather(*await produce_batched(producer, chunk))
            out["bare_per_second"] = cfg.events / (time.perf_counter() - started)
        finally:
            await producer.stop()
        port = free_port()
        process = Process(
            "ingest",
            [sys.executable, "-m", "engine.cli", "ingest", "--port", str(port)],
            {**stack.env, "INGEST_API_TOKEN": TOKEN},
            log_dir,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await _ready(url, process)
            for size in (100, 500):
                bodies = [
                    b'{"events":[' + b",".join(values[i : i + size]) + b"]}"
                    for i in range(0, cfg.events, size)
                ]
                cpu = process.cpu_seconds()
                seconds = await _post_all(url + "/v1/events", bodies, cfg.in_flight)
                out[f"batch_{size}"] = {
                    "per_second": cfg.events / seconds,
                    "cpu_per_event_us": (process.cpu_seconds() - cpu) / cfg.events * 1e6,
                }
        finally:
            process.stop()
    finally:
        await stack.delete_topics()
    return out


def write_csv(path: Path, rows: int) -> None:
    """A CSV of `rows` profiles, as a CRM export might have them."""
    header = "profile_id,first_name,phone,language,whatsapp_consent,plan\n"
    with path.open("w") as fh:
        fh.write(header)
        for i in range(rows):
            fh.write(f"p-{i},Name{i},+3460{i % 10_000_000:07d},es,opted_in,gold\n")


async def run_import(broker: Broker, cfg: IngestConfig, log_dir: Path) -> dict[str, Any]:
    """`journeyctl import` of `import_rows` rows: wall time and CPU of the command."""
    stack = BenchStack(broker.bootstrap, "import")
    path = ARTIFACTS / f"import-{cfg.import_rows}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_csv(path, cfg.import_rows)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.cli",
            "import",
            str(path),
            "--no-progress",
            env={**os.environ, **stack.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), cfg.timeout)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        (log_dir / "import.log").write_bytes(output)
        if proc.returncode != 0:
            raise BenchError(f"journeyctl import failed:\n{output.decode()[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {
            "rows": cfg.import_rows,
            "seconds": seconds,
            "rows_per_second": cfg.import_rows / seconds,
            "cpu_seconds": cpu,
            "summary": output.decode().strip().splitlines()[-1],
        }
    finally:
        await stack.delete_topics()


def section(results: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section of the three phases that ran."""
    hop, ingest, imported = (results.get(n) for n in ("repartition", "ingest", "import"))
    if hop is None and ingest is None and imported is None:
        return []
    out = ["## Upstream ingestion", ""]
    if hop is not None:
        out += _hop_lines(hop)
    if ingest is not None:
        out += _ingest_lines(ingest)
    if imported is not None:
        out += _import_lines(imported)
    return [*out, "Figures from a shared machine are noisy.", ""]


def _hop_lines(hop: dict[str, Any]) -> list[str]:
    if "error" in hop:
        return [f"**Repartition failed:** {hop['error']}", ""]
    return [
        f"The repartition hop (`--only repartition`): one warm engine worker, "
        f"{hop['events']:,} events of the no-wait journey written after its first send, "
        "every record on its key's murmur2 partition, or every record on another partition "
        "(each moved through the repartition topic); from the first write to the last send "
        f"request, median of {hop['runs']} alternating runs.",
        "",
        "| records | events/s | worker CPU per event |",
        "| --- | --- | --- |",
        *(
            f"| {label} | {hop[key]['per_second']:,.0f} | {hop[key]['cpu_per_event_ms']:.3f} ms |"
            for key, label in (("right", "on their partition"), ("wrong", "all moved"))
        ),
        "",
        f"The hop costs {hop['cost']:.0%} of the engine's throughput when every record takes it.",
        "",
    ]


def _ingest_lines(ingest: dict[str, Any]) -> list[str]:
    if "error" in ingest:
        return [f"**Ingest failed:** {ingest['error']}", ""]
    return [
        f"The HTTP ingestion API (`--only ingest`): {ingest['events']:,} events through one "
        f"`journeyctl ingest` process, {ingest['in_flight']} requests in flight from a client "
        "on the same machine, each answered after Kafka's acknowledgement (acks=all); beside "
        "it a bare aiokafka producer with the same settings, 500 events a batch.",
        "",
        "| sender | events/s | ingest CPU per event |",
        "| --- | --- | --- |",
        f"| bare producer | {ingest['bare_per_second']:,.0f} | |",
        *(
            f"| POST /v1/events, {size} a batch | {ingest[f'batch_{size}']['per_second']:,.0f} "
            f"| {ingest[f'batch_{size}']['cpu_per_event_us']:.0f} µs |"
            for size in (100, 500)
        ),
        "",
    ]


def _import_lines(imported: dict[str, Any]) -> list[str]:
    if "error" in imported:
        return [f"**Import failed:** {imported['error']}", ""]
    return [
        f"Bulk import (`--only import`): `journeyctl import` of {imported['rows']:,} CSV rows "
        f"(phone, name, language, consent, plan): {imported['seconds']:.0f} s "
        f"({imported['rows_per_second']:,.0f} rows/s), {imported['cpu_seconds']:.0f} s of CPU. "
        f"`{imported['summary']}`",
        "",
    ]
