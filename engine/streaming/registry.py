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
from pydantic import ValidationError

from connectors.kafka import CompactedFollower, acknowledged_producer
from schemas.deployment import JourneyDeployment, JourneyStatus, version_key
from schemas.journey import JourneyDefinition
from schemas.settings import Settings

log = structlog.get_logger(__name__)


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

    async def run(self) -> None:
        topic = self._settings.topic_journey_definitions
        follower = CompactedFollower(self._settings, topic, self._apply_record, max_records=1000)

        def loaded() -> None:
            self.ready.set()
            log.info("journey definitions loaded", topic=topic)

        await follower.run(wait_seconds=60, on_caught_up=loaded)

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
    current: dict[str, JourneyDeployment] = {}

    def fold(key: bytes | None, value: bytes | None) -> None:
        dep = decode_deployment(value)
        if dep is None:
            return
        name = key.decode() if key else dep.journey_id
        older = dep.journey_id in current and dep.version <= current[dep.journey_id].version
        if "@" in name and older:
            return
        current[dep.journey_id] = dep

    follower = CompactedFollower(settings, settings.topic_journey_definitions, fold)
    try:
        if not await follower.start():
            return {}
        await asyncio.wait_for(follower.catch_up(), timeout)
    except TimeoutError as exc:
        raise TimeoutError("timed out reading journey definitions") from exc
    finally:
        await follower.stop()
    return current


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
