"""`journeyctl import` on the real broker: the summary, the records, a re-run's duplicates
dropped by the engine, and a dry run that publishes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine.ingest.bulk import file_digest
from schemas.partitioning import murmur2
from tests.integration.engine.ingest.test_ingest_api import read_all
from tests.integration.engine.worker.test_engine_flow import deploy
from tests.support.kafka import ROOT, Stack, Worker, collect

pytestmark = pytest.mark.integration

UPDATED = """\
id: updated
name: Updated
entry: {event: profile.updated}
reentry: {mode: always}
start: done
activities:
  done: {type: end}
"""


def journeyctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, **stack.env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_import_twice_the_engine_takes_each_row_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    stack = Stack(kafka_bootstrap, unique)
    await deploy(stack, UPDATED)
    path = tmp_path / "people.csv"
    rows = [f"p-{i},Name{i},+3460022{i:04d},es" for i in range(300)]
    rows.insert(10, "p-bad,Bad,12345,es")  # line 12
    path.write_text("profile_id,first_name,phone,language\n" + "\n".join(rows) + "\n")

    dry = journeyctl(stack, "import", str(path), "--dry-run", "--no-progress")
    assert dry.returncode == 1, dry.stderr
    assert "rows: 301, would publish: 300, rejected: 1" in dry.stdout
    topic = stack.env["TOPIC_PROFILE_EVENTS"]
    assert await read_all(kafka_bootstrap, topic, 1, seconds=3) == []

    first = journeyctl(stack, "import", str(path), "--no-progress")
    assert first.returncode == 1, first.stderr
    assert "rows: 301, published: 300, rejected: 1" in first.stdout
    assert f"{path}:12:3: invalid profile event: attributes.phone" in first.stderr
    records = await read_all(kafka_bootstrap, topic, 300)
    assert len(records) == 300
    prefix = f"import-{file_digest(path)}-"
    for partition, key, _ in records:
        assert partition == (murmur2(key) & 0x7FFFFFFF) % stack.partitions

    worker = Worker(stack, tmp_path).start()
    try:
        second = journeyctl(stack, "import", str(path), "--no-progress")
        assert "published: 300" in second.stdout
        events = await collect(kafka_bootstrap, topic, lambda r: len(r) >= 600, 60)
        ids = Counter(e["event_id"] for e in events)
        assert len(ids) == 300 and set(ids.values()) == {2}
        assert all(i.startswith(prefix) for i in ids)
        await collect(
            kafka_bootstrap,
            stack.env["TOPIC_JOURNEY_STEPS"],
            lambda r: sum(s["kind"] == "entered" for s in r) >= 300,
            120,
            watch=[worker],
        )
        await asyncio.sleep(2)  # a duplicate entered late would show now
        steps = await collect(kafka_bootstrap, stack.env["TOPIC_JOURNEY_STEPS"], lambda r: False, 2)
        entered = Counter(s["profile_id"] for s in steps if s["kind"] == "entered")
        assert len(entered) == 300 and set(entered.values()) == {1}
    finally:
        worker.kill()
