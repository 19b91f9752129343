"""What every part of the worker's runtime shares: its topics, table, timer index and the
murmur2 partitioning of profile ids (the same as the producers')."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from engine.core.catalog import JourneyCatalog
from engine.core.timers import TimerIndex
from engine.streaming.internals import raw_producer
from engine.streaming.produce import key_hash
from engine.streaming.registry import DefinitionsFollower
from schemas.partitioning import partition_of
from schemas.settings import Settings
from schemas.state import ProfileState

if TYPE_CHECKING:
    from engine.campaigns.fanout import AudienceRuns
    from engine.worker.batch import Pending
    from engine.worker.decoded import DecodedStates
    from engine.worker.records import Before


@dataclass(frozen=True, slots=True)
class EngineTopics:
    """The faust topics the engine reads and writes; built once by the wiring."""

    profile_events: faust.TopicT
    profile_events_repartition: faust.TopicT
    timers: faust.TopicT
    delivery_events: faust.TopicT
    whatsapp_requests: faust.TopicT
    journey_steps: faust.TopicT
    dead_letter: faust.TopicT
    profile_phones: faust.TopicT
    http_requests: faust.TopicT


class RuntimeBase:
    """The runtime's shared attributes (set by EngineRuntime.__init__) and partitioning."""

    app: faust.App
    topics: EngineTopics
    settings: Settings
    catalog: JourneyCatalog
    timers: TimerIndex
    definitions: DefinitionsFollower
    audience: AudienceRuns
    partitions: int
    profiles: Any  # faust's Table of profile id -> codec bytes (engine/worker/codec.py)
    _key_hashes: dict[bytes, int]  # murmur2 of recent profile ids (key_hash)
    _batch: list[faust.EventT[bytes]]
    _pending: Pending
    # The states of a batch being flushed (engine/worker/batch.py, step 1 to 3).
    _in_flight: dict[str, tuple[faust.EventT[bytes], ProfileState]]
    # Profiles whose in-flight state a record was handed since the flush took its batch.
    _handed: set[str]
    _decoded: DecodedStates  # committed states, decoded (engine/worker/decoded.py)
    _before: Before | None
    _flush_lock: asyncio.Lock
    _failed: Exception | None
    _flush_timer: asyncio.TimerHandle | None
    _tasks: set[asyncio.Future[None]]

    def _producer(self) -> Any:
        """aiokafka's producer under faust's (started with the app)."""
        return raw_producer(self.app)

    def _partition_of(self, key: bytes) -> int:
        """A profile id's partition, remembered for the records about it that follow."""
        return key_hash(key, self._key_hashes) % self.partitions

    def _scanned_partition_of(self, key: bytes) -> int:
        """As `_partition_of`, for passes over the whole table: not remembered, so a pass
        does not push the profiles in use out of the cache."""
        return partition_of(key, self.partitions)

    def _owned_partitions(self) -> set[int]:
        name = self.topics.profile_events.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}
