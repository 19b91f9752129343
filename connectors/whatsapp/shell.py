"""What the connector needs of faust and aiokafka beyond their public API.

Connectors never import the engine: the engine's wiring (engine/streaming/app.py) hands
the connector an implementation, engine/streaming/internals.py's FaustShell, which keeps
every such reach in one place behind a version guard.
"""

from __future__ import annotations

from typing import Any, Protocol

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TableT


class StreamShell(Protocol):
    def producer(self) -> AIOKafkaProducer:
        """aiokafka's producer under the app's, started with the app."""

    def set_current_event(self, event: faust.EventT[Any] | None) -> None:
        """Table writes that follow go to the store of `event`'s partition."""

    def set_persisted_offset(
        self, table: TableT[Any, Any], tp: TopicPartition, offset: int
    ) -> None:
        """After a changelog write: the table's store records how far its changelog is in
        its local database, as faust's own changelog callback does."""

    async def topic_partitions(self, consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        """The partitions of `topic` from fresh cluster metadata; empty while it does not
        exist."""
