"""The engine's Kafka topics: their names, partitioning, retention, and creation.

Every topic that carries a profile's records has the same partition count and is keyed
by profile id, so one worker owns all of a profile's events, timers and state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from connectors.kafka import admin_client
from engine.streaming.clients import topics_with_leaders
from schemas.settings import Settings


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None

    def config(self) -> dict[str, str]:
        cfg: dict[str, str] = {}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """All topics the product uses, with partitions and retention."""
    p = settings.topic_partitions
    week = 7 * 24 * 3600 * 1000
    return [
        TopicSpec(settings.topic_profile_events, p),
        # Internal: the engine moves a profile event here from a partition other than its
        # key's murmur2 one (any client's partitioner), onto the key's partition.
        TopicSpec(settings.topic_profile_events_repartition, p, retention_ms=week),
        TopicSpec(settings.topic_timers, p, retention_ms=week),
        TopicSpec(settings.topic_whatsapp_requests, p),
        TopicSpec(settings.topic_delivery_events, p),
        TopicSpec(settings.topic_journey_steps, p),
        TopicSpec(settings.topic_dead_letter, p),
        TopicSpec(settings.topic_http_requests, p),
        TopicSpec(settings.topic_journey_definitions, 1, compacted=True),
        TopicSpec(settings.topic_profile_phones, p, compacted=True),
        TopicSpec(settings.topic_campaign_runs, 1, compacted=True),
        TopicSpec(settings.topic_whatsapp_controls, 1, compacted=True),
    ]


async def ensure_topics(
    settings: Settings, specs: list[TopicSpec] | None = None, *, visible_within: float = 30.0
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Returns once the broker describes every created topic with all its partitions (see
    `wait_visible`), so a client started next finds them. Existing topics are left alone:
    changing partitions would move profiles between workers and break key ordering, so
    that is an operator's deliberate act.
    """
    specs = specs if specs is not None else topic_specs(settings)
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            settings.topic_replication_factor,
                            topic_configs=spec.config(),
                        )
                    ]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it between list and create
        await wait_visible(admin, [s.name for s in missing], visible_within)
        return created
    finally:
        await admin.close()


async def wait_visible(admin: AIOKafkaAdminClient, names: list[str], seconds: float) -> None:
    """Wait until the cluster's metadata shows each topic in `names` with partitions that
    all have a leader; raise RuntimeError naming the rest after `seconds`.

    Kafka creates a topic asynchronously: CreateTopics can answer before the broker's
    metadata has it, and a client that describes the topic then is told that it does not
    exist (the webhook receiver refused to start so, on a loaded machine).
    """
    deadline = time.monotonic() + seconds
    pending = sorted(set(names))
    while pending:
        ready = await topics_with_leaders(admin, pending)
        pending = [name for name in pending if name not in ready]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topics not ready {seconds:g} s after creation: {pending}")
        await asyncio.sleep(0.1)
