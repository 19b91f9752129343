"""Journey definitions on the compacted `journey-definitions` topic: publish and follow.

Every worker reads the whole topic (no consumer group) into its JourneyCatalog and
keeps following it; event processing waits until the first full read is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from engine.streaming.clients import acknowledged_producer, assign_all, reader
from schemas.deployment import JourneyDeployment, JourneyStatus, version_key
from schemas.journey import JourneyDefinition
from schemas.settings import Settings

log = structlog.get_logger(__name__)


async def _caught_up(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


def decode_deployment(value: bytes | None) -> JourneyDeployment | None:
    if not value:
        return None  # a tombstone
    return JourneyDeployment.model_validate_json(value)


class DefinitionsFollower:
    """Keeps a catalog in step with the definitions topic; `ready` once caught up."""

    def __init__(self, settings: Settings, apply: Callable[[JourneyDeployment], None]) -> None:
        self._settings = settings
        self._apply = apply
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        settings = self._settings
        consumer = reader(settings)
        self._consumer = consumer
        await consumer.start()
        try:
            topic = settings.topic_journey_definitions
            tps = await assign_all(consumer, topic, wait_seconds=60)
            if not tps:
                raise RuntimeError(
                    f"topic {topic!r} does not exist; run `journeyctl deploy` or create topics"
                )
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            if all(off == 0 for off in end.values()):
                self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for record in records:
                        self._apply_record(record.key, record.value)
                if not self.ready.is_set() and await _caught_up(consumer, end):
                    self.ready.set()
                    log.info("journey definitions loaded", topic=topic)
        finally:
            await consumer.stop()

    def _apply_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            deployment = decode_deployment(value)
        except (ValidationError, ValueError) as exc:
            log.error("unreadable journey definition record", key=key, error=str(exc)[:300])
            return
        if deployment is not None:
            self._apply(deployment)
            log.info(
                "journey definition applied",
                journey_id=deployment.journey_id,
                version=deployment.version,
                status=deployment.status,
            )


async def read_deployments(
    settings: Settings, timeout: float = 15.0
) -> dict[str, JourneyDeployment]:
    """Read the definitions topic to its end: the current record of every journey.

    Keys `<id>@<version>` are folded in too, so the newest version wins even if the
    current-record key was compacted away.
    """
    consumer = reader(settings)
    await consumer.start()
    current: dict[str, JourneyDeployment] = {}
    try:
        topic = settings.topic_journey_definitions
        # Asking for one topic's metadata creates it where auto.create.topics.enable is on
        # (Kafka's default), with the broker's defaults. Listing all topics creates nothing.
        if topic not in await consumer.topics():
            return {}
        tps = await assign_all(consumer, topic, wait_seconds=0)
        if not tps:
            return {}
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout
        while not await _caught_up(consumer, end):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("timed out reading journey definitions")
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    dep = decode_deployment(record.value)
                    if dep is None:
                        continue
                    key = record.key.decode() if record.key else dep.journey_id
                    older = (
                        dep.journey_id in current and dep.version <= current[dep.journey_id].version
                    )
                    if "@" in key and older:
                        continue
                    current[dep.journey_id] = dep
        return current
    finally:
        await consumer.stop()


def next_deployment(
    definition: JourneyDefinition,
    existing: JourneyDeployment | None,
    *,
    source: str | None = None,
    deployed_by: str | None = None,
    now: datetime | None = None,
) -> JourneyDeployment | None:
    """The record to publish for a definition, or None when it is unchanged and active."""
    now = now or datetime.now(UTC)
    if existing is not None and existing.definition == definition and existing.status == "active":
        return None
    if existing is not None and existing.definition == definition:
        version = existing.version  # re-activating the same version
    else:
        version = existing.version + 1 if existing else 1
    return JourneyDeployment(
        journey_id=definition.id,
        version=version,
        status="active",
        definition=definition,
        deployed_at=now,
        deployed_by=deployed_by,
        source=source,
    )


def with_status(deployment: JourneyDeployment, status: JourneyStatus) -> JourneyDeployment:
    return deployment.model_copy(update={"status": status, "deployed_at": datetime.now(UTC)})


async def publish_deployments(settings: Settings, deployments: list[JourneyDeployment]) -> None:
    """Write each deployment under its version key and its journey key, and wait for acks."""
    producer = acknowledged_producer(settings, linger_ms=0)
    await producer.start()
    try:
        topic = settings.topic_journey_definitions
        futures = []
        for dep in deployments:
            value = orjson.dumps(dep.model_dump(mode="json", by_alias=True))
            futures.append(
                await producer.send(
                    topic, value, key=version_key(dep.journey_id, dep.version).encode()
                )
            )
            futures.append(await producer.send(topic, value, key=dep.journey_id.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
