"""The `campaign-runs` topic: follow it (every worker), read it to its end and publish to it
(the CLI)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from connectors.kafka import CompactedFollower, acknowledged_producer
from engine.campaigns.planning import RunRegistry, encode
from schemas.campaign import (
    CampaignRun,
)
from schemas.settings import Settings

log = structlog.get_logger(__name__)


class RunsFollower:
    """Keeps a RunRegistry in step with `campaign-runs` (every partition, no group)."""

    def __init__(self, settings: Settings, registry: RunRegistry) -> None:
        self._settings = settings
        self._registry = registry
        self.ready = asyncio.Event()

    async def run(self) -> None:
        topic = self._settings.topic_campaign_runs
        follower = CompactedFollower(
            self._settings, topic, self._registry.apply_record, max_records=2000
        )

        def loaded() -> None:
            self.ready.set()
            log.info("campaign runs loaded", topic=topic, runs=len(self._registry.runs))

        await follower.run(wait_seconds=60, on_caught_up=loaded)


async def read_runs(settings: Settings, timeout: float = 15.0) -> RunRegistry:
    """Read `campaign-runs` to its end (for the CLI); empty while the topic does not exist."""
    registry = RunRegistry()
    follower = CompactedFollower(settings, settings.topic_campaign_runs, registry.apply_record)
    try:
        if await follower.start():
            await asyncio.wait_for(follower.catch_up(), timeout)
        return registry
    finally:
        await follower.stop()


async def publish_run(
    settings: Settings, run: CampaignRun, ticks: Iterable[tuple[str, bytes]] = ()
) -> None:
    """Publish a run record, then its profiles' ticks (keyed by profile: murmur2 partitions)."""
    producer = acknowledged_producer(settings)
    await producer.start()
    try:
        await (await producer.send(settings.topic_campaign_runs, encode(run), key=run.key.encode()))
        futures = [
            await producer.send(settings.topic_timers, value, key=pid.encode())
            for pid, value in ticks
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
