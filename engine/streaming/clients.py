"""What a group-less consumer needs that aiokafka does not offer publicly.

The clients themselves are built from Settings by connectors/kafka.py (reader,
acknowledged_producer, admin_client), which the connectors use too.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

import engine.streaming.guard  # noqa: F401  (the version guard)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of `topic` from fresh cluster metadata, without adding the topic to
    the consumer's own metadata (a consumer without a subscription knows no topic's
    partitions); empty while the topic does not exist."""
    cluster = await consumer._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


async def topics_with_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> set[str]:
    """Those of `names` that the cluster's metadata shows with partitions that all have a
    leader. Asks for every topic's metadata: a request naming a topic would create it on
    a broker with auto.create.topics.enable (describe_topics does so)."""
    cluster = await admin._client.fetch_all_metadata()
    ready: set[str] = set()
    for name in names:
        partitions = cluster.partitions_for_topic(name)
        if partitions and cluster.available_partitions_for_topic(name) == partitions:
            ready.add(name)
    return ready


async def assign_all(
    consumer: AIOKafkaConsumer, topic: str, wait_seconds: float
) -> list[TopicPartition]:
    """Assign every partition of a topic to a group-less consumer; [] if it never appears.

    A consumer only caches metadata of topics it uses, and aiokafka has no public way to
    add one, so the consumer's client is asked for this one explicitly.
    """
    client = consumer._client
    client.add_topic(topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        await client.force_metadata_update()
        parts = client.cluster.partitions_for_topic(topic)
        if parts:
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            return tps
        if loop.time() >= deadline:
            return []
        await asyncio.sleep(0.2)
