"""Fixtures for the whole test run: one real Kafka broker, unique names per test.

The broker is found in this order: KAFKA_BOOTSTRAP_SERVERS if set; else the project's
local broker (deploy/kafka/start, which fetches Apache Kafka through Maven); else a
testcontainers Kafka when a Docker engine answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TEST_KAFKA_PORT = os.environ.get("TEST_KAFKA_PORT", "19092")
TEST_KAFKA_CONTROLLER_PORT = os.environ.get("TEST_KAFKA_CONTROLLER_PORT", "19093")


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real broker, started for this test run if need be."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if shutil.which("java") and shutil.which("mvn"):
        env = {
            **os.environ,
            "KAFKA_PORT": TEST_KAFKA_PORT,
            "KAFKA_CONTROLLER_PORT": TEST_KAFKA_CONTROLLER_PORT,
        }
        pid_file = ROOT / ".kafka" / f"kafka-{TEST_KAFKA_PORT}.pid"
        already_running = pid_file.exists()
        out = subprocess.run(
            [str(ROOT / "deploy/kafka/start")], env=env, capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            pytest.fail(f"could not start the local Kafka broker:\n{out.stderr[-3000:]}")
        address = out.stdout.strip().splitlines()[-1]
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = address
        try:
            yield address
        finally:
            os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
            if not already_running:
                subprocess.run(
                    [str(ROOT / "deploy/kafka/stop")],
                    env={**env, "KAFKA_WIPE": "1"},
                    timeout=120,
                    check=False,
                )
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.0.0").with_kraft() as kafka:
            address = kafka.get_bootstrap_server()
            os.environ["KAFKA_BOOTSTRAP_SERVERS"] = address
            yield address
        return
    pytest.fail(
        "no Kafka: set KAFKA_BOOTSTRAP_SERVERS, install Java 17 and Maven, or run a Docker engine"
    )


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps this test's topics and groups apart from every other's."""
    return uuid.uuid4().hex[:10]
