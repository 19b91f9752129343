"""The worker's runtime: one faust agent drives the pure interpreter per profile.

The agent reads four co-partitioned topics keyed by profile id (profile events, the
profile events it moved onto their key's partition, timer ticks, delivery events), keeps each profile's state in one changelog-backed
table, and turns the interpreter's effects into records on the output topics.
Timer ticks are `{"profile_id", "due"}` (the clock) or `{"profile_id", "audience"}` (a
profile's share of an audience run or a campaign run; see engine/campaigns/fanout.py).
Its parts: base.py (shared attributes, partitioning), codec.py (stored state),
records.py (record handlers), ticks.py (due, timer and audience ticks), batch.py (the
batch and its commit protocol).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import faust
import structlog

from engine.campaigns.fanout import AudienceRuns
from engine.core.catalog import JourneyCatalog
from engine.core.interpreter import ProcessResult
from engine.core.timers import TimerIndex
from engine.streaming.registry import DefinitionsFollower
from engine.worker.base import EngineTopics
from engine.worker.batch import BatchCommit, Pending
from engine.worker.decoded import DecodedStates
from engine.worker.ticks import DUE_TICK_PREFIX, DueTicks
from schemas.deployment import JourneyDeployment
from schemas.settings import Settings

log = structlog.get_logger(__name__)

__all__ = ["EngineRuntime", "EngineTopics"]


class EngineRuntime(DueTicks, BatchCommit):
    """Wires the interpreter into faust: agent, table, timers and definitions."""

    def __init__(self, app: faust.App, topics: EngineTopics, settings: Settings) -> None:
        self.app = app
        self.topics = topics
        self.settings = settings
        self.catalog = JourneyCatalog()
        self.timers = TimerIndex()
        self.definitions = DefinitionsFollower(settings, self._apply_deployment)
        self.partitions = settings.topic_partitions
        self._key_hashes = {}
        self.profiles = app.Table(
            "profiles",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
        )
        self.profiles.on_recover(self._rebuild_timer_index)
        self._batch = []
        self._pending = Pending()
        self._in_flight = {}
        self._handed = set()
        self._decoded = DecodedStates(settings.engine_decoded_states)
        # What the record being processed changes in place when its state is shared (this
        # batch's, or a flushing batch's): where the state sits, and its bytes before.
        self._before = None
        self._flush_lock = asyncio.Lock()
        self._failed = None
        self._flush_timer = None
        self._tasks = set()
        self._source_topics = app.topic(
            topics.profile_events.get_topic_name(),
            topics.profile_events_repartition.get_topic_name(),
            topics.timers.get_topic_name(),
            topics.delivery_events.get_topic_name(),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        runs_topic = app.topic(  # compacted, one partition: every worker reads all of it
            settings.topic_campaign_runs,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=1,
        )
        self.audience = AudienceRuns(
            app,
            settings=settings,
            catalog=self.catalog,
            profiles=self.profiles,
            timers_topic=topics.timers,
            runs_topic=runs_topic,
            definitions_ready=self.definitions.ready,
            owned_partitions=self._owned_partitions,
            partition_of=self._scanned_partition_of,
            on_run_cancelled=self._run_cancelled,
        )
        app.agent(self._source_topics, name="journey-engine")(self._agent)
        app.task(self._follow_definitions)
        app.timer(settings.timer_scan_interval_seconds)(self._fire_timers)
        app.timer(60.0)(self._refresh_gauges)

    # --- definitions --------------------------------------------------------------

    def _apply_deployment(self, deployment: JourneyDeployment) -> None:
        was = self.catalog.status(deployment.journey_id)
        self.catalog.apply(deployment)
        if was != "archived" and self.catalog.status(deployment.journey_id) == "archived":
            self._wake_instances_of(deployment.journey_id, "journey archived")

    def _run_cancelled(self, journey_id: str, run_id: str) -> None:
        self._wake_instances_of(journey_id, f"campaign run {run_id} cancelled")

    def _wake_instances_of(self, journey_id: str, why: str) -> None:
        """Tick every owned profile with an instance of a journey, so what must end ends now."""
        needle = f'"journey_id":"{journey_id}"'.encode()
        now = time.time()
        woken = 0
        for key, raw in self.profiles.items():
            if raw is not None and needle in raw:
                self.timers.schedule(key.decode(), now)
                woken += 1
        log.info(f"{why}: ending its live instances", journey_id=journey_id, profiles=woken)

    async def _follow_definitions(self) -> None:
        await self.definitions.run()

    # --- the agent -----------------------------------------------------------------

    async def _agent(self, stream: faust.StreamT[bytes]) -> None:
        # Acks are ours: a record is acked only once its batch is durable (BatchCommit.flush).
        # faust's own stream.take_events() is not used: it can drop or repeat a record
        # at a batch boundary.
        await self.definitions.ready.wait()
        await self.audience.ready.wait()
        manual = cast(Any, stream).noack()  # faust's StreamT stub lacks noack()
        loop = asyncio.get_running_loop()
        async for event in manual.events():
            self._process_record(event, datetime.now(UTC), self._pending)
            self._batch.append(event)
            if self._batch_full():
                await self.flush(manual)
            elif self._flush_timer is None:
                self._flush_timer = loop.call_later(
                    self.settings.engine_batch_window_ms / 1000,
                    lambda: self._background(self.flush(manual)),
                )

    def _process_record(self, event: faust.EventT[bytes], now: datetime, pending: Pending) -> None:
        message = event.message
        topic = message.topic
        key: bytes | None = message.key
        value: bytes | None = message.value
        run: Callable[[], ProcessResult | None]
        if topic == self.topics.timers.get_topic_name():
            if value and value.startswith(DUE_TICK_PREFIX):
                self._on_due_tick(event, value, now, pending)
                return
            source, run = "timer", lambda: self._on_timer(key, value, now, pending)
        elif topic == self.topics.delivery_events.get_topic_name():
            source, run = "delivery", lambda: self._on_delivery(key, value, now, pending)
        else:
            source = "event"
            hopped = topic != self.topics.profile_events.get_topic_name()
            run = lambda: self._on_profile_event(  # noqa: E731
                key, value, message.partition, now, pending, hopped=hopped
            )
        self._guarded(source, event, key, value, run, pending)

    # --- timers --------------------------------------------------------------------

    async def _refresh_gauges(self) -> None:
        self._refresh_instance_gauge()
