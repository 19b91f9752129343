"""A three-node cluster (replication 3, min.insync.replicas=2) loses a broker mid-load.

`deploy/kafka/start --brokers 3` on six free loopback ports from 29100 up
(TEST_CLUSTER_KAFKA_PORT fixes them), started once for the session, data under the
checkout's .kafka/, wiped at the end.
The worker and its changelogs use TOPIC_REPLICATION_FACTOR=3.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.reliability.conftest import OpenTail, StartReceiver, StartSandbox, StartWorker
from tests.reliability.support import (
    duplicates_by_kill,
    finish,
    journeys_with_waits,
    report,
)
from tests.support.brokers import LocalCluster, free_ports
from tests.support.kafka import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROFILES = int(os.environ.get("RELIABILITY_CLUSTER_PROFILES", "1500"))
DOWN_SECONDS = 5.0


async def replication(bootstrap: str, topics: list[str]) -> set[int]:
    """The replica counts of every partition of `topics`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {len(p["replicas"]) for topic in described for p in topic["partitions"]}


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(port=free_ports(6, "TEST_CLUSTER_KAFKA_PORT"), brokers=3)
    cluster.stop()  # nodes left by an interrupted run
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_kill_9_of_one_broker_mid_load_loses_nothing_and_sends_once(
    kafka_cluster: LocalCluster,
    unique: str,
    start_sandbox: StartSandbox,
    start_receiver: StartReceiver,
    workers: StartWorker,
    tail: OpenTail,
) -> None:
    stack, sandbox, records, expected = await journeys_with_waits(
        kafka_cluster.bootstrap,
        unique,
        start_sandbox,
        PROFILES,
        start_receiver=start_receiver,
        TOPIC_REPLICATION_FACTOR="3",
    )
    steps = await tail(stack, "TOPIC_JOURNEY_STEPS")
    worker = workers(stack, "worker")
    changelog = f"{stack.env['APP_ID']}-profiles-changelog"
    started = time.monotonic()
    await produce(stack.bootstrap, stack.env["TOPIC_PROFILE_EVENTS"], records)

    # In the middle: a third of the messages out, timers pending, sends in flight.
    await sandbox.wait_count(len(expected.messages) // 3, seconds=180, watch=[worker])
    kafka_cluster.kill_node(1)
    killed_at, at_kill = time.time(), len(sandbox.accepted_ids())
    await asyncio.sleep(DOWN_SECONDS)  # two nodes left: min.insync.replicas=2 still holds
    during_outage = len(sandbox.accepted_ids()) - at_kill
    restart_started = time.monotonic()
    await asyncio.to_thread(kafka_cluster.start)  # the killed node only, on its data
    restart_s = time.monotonic() - restart_started
    outcome = await finish(steps, sandbox, expected, [worker], started)

    report(
        "kill_9_one_of_three_brokers",
        events=len(records),
        messages_at_kill=at_kill,
        messages_sent_while_down=during_outage,
        node_restart_s=round(restart_s, 1),
        **duplicates_by_kill(sandbox, [killed_at]),
        **outcome.figures(expected),
    )
    assert worker.alive()
    replicas = await replication(stack.bootstrap, [stack.env["TOPIC_PROFILE_EVENTS"], changelog])
    assert replicas == {3}, f"replicas per partition: {replicas}"
    # A broker's death can make the worker re-run one batch (like a worker's kill): its
    # step records may repeat, its messages must not.
    outcome.check(expected, kills=1)
