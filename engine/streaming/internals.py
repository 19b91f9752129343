"""The reaches into faust's private internals that the worker and the connectors use.

Every such reach lives in engine/streaming behind its version guard (guard.py): this
module, clients.py (aiokafka), consumer.py (the consumer fixes) and drain.py (a copy of
faust's fetch loop). Connectors never import the engine: they declare what they need
(connectors/whatsapp/shell.py, StreamShell) and the wiring hands them `FaustShell`.
"""

from __future__ import annotations

import weakref
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.streams import _current_event
from faust.types import TableT

import engine.streaming.guard  # noqa: F401  (the version guard)
from engine.streaming.clients import topic_partitions


def raw_producer(app: faust.App) -> AIOKafkaProducer:
    """aiokafka's producer under faust's (started with the app).

    Produced to directly: faust's Topic.send wraps every record in codecs, sensors and
    callbacks, and its changelog buffer sends one record at a time."""
    return cast(Any, app.producer)._ensure_producer()


def set_current_event(event: faust.EventT[Any] | None) -> None:
    """Make `event` faust's current event: a RocksDB table store writes to the database of
    the current event's partition. None: no current event."""
    _current_event.set(weakref.ref(event) if event is not None else None)


def set_persisted_offset(table: TableT[Any, Any], tp: TopicPartition, offset: int) -> None:
    """What faust's `_on_changelog_sent` does after a changelog write: the store remembers
    how far the changelog is already in its local database."""
    cast(Any, table.data).set_persisted_offset(tp, offset)


class FaustShell:
    """connectors/whatsapp/shell.py's StreamShell for a faust app: what a connector needs of
    faust's and aiokafka's internals, handed to it by the wiring."""

    def __init__(self, app: faust.App) -> None:
        self.app = app

    def producer(self) -> AIOKafkaProducer:
        return raw_producer(self.app)

    def set_current_event(self, event: faust.EventT[Any] | None) -> None:
        set_current_event(event)

    def set_persisted_offset(
        self, table: TableT[Any, Any], tp: TopicPartition, offset: int
    ) -> None:
        set_persisted_offset(table, tp, offset)

    async def topic_partitions(self, consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        return await topic_partitions(consumer, topic)
