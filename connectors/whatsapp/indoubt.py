"""Sends a crash left in doubt: did Meta take them? Its status webhooks say.

Before each call the connector stores a "sending" marker for the message id and waits for
the broker to have it (connector.py, step 3). A marker still there when a request comes
back (after a kill -9, a lost partition, a broker failure) means the call may have reached
Meta: the worker died between the call and the `accepted` record. The Cloud API has no
idempotency key and no lookup by our id, but Meta posts a status webhook (`sent`, then
`delivered`, `read` or `failed`) for every message it took, and the receiver publishes it
on delivery-events with our message id (from `biz_opaque_callback_data`). So
`find_statuses` reads delivery-events from a little before the marker and looks for them:

- a status naming a wamid: Meta took the message; it is recorded as accepted, not sent again;
- none by the marker's time + WHATSAPP_IN_DOUBT_SECONDS, and the statuses read show the
  receiver has caught up (one Meta stamped after the marker) or no more are coming: Meta
  never saw the call; the message is sent. While statuses keep coming, all stamped
  before the marker, the receiver is behind, and reading goes on (up to CATCH_UP_GRACES).

What remains: a message Meta took whose first webhook reaches delivery-events after the
receiver caught up past its marker, or after CATCH_UP_GRACES graces, is sent twice. Meta
retries a webhook the receiver did not take, so a longer grace covers a receiver that was
down too, at the price of a later send for the messages that really were not taken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.kafka import reader
from schemas.settings import Settings

log = structlog.get_logger("connectors.whatsapp.indoubt")

# Statuses only Meta produces (through the webhook receiver); each names the wamid.
EVIDENCE_STATUSES = frozenset({"accepted", "sent", "delivered", "read", "failed"})
# Read from this long before the marker: the status cannot be older than the call.
LOOKBACK_SECONDS = 60.0
# Statuses Meta stamps itself (the receiver's records; the connector's own are `accepted`).
META_STATUSES = frozenset({"sent", "delivered", "read", "failed"})
# Past the grace, the statuses are read on while they keep coming (the receiver is behind)
# until one Meta stamped after the latest marker shows it has caught up; at most this
# many graces in all. No status for STALL_SECONDS: nothing more is coming, stop.
CATCH_UP_GRACES = 10
STALL_SECONDS = 1.0
TopicPartitions = Callable[[AIOKafkaConsumer, str], Awaitable[set[int]]]


@dataclass(frozen=True, slots=True)
class Evidence:
    """A status webhook (or an earlier `accepted` record) that shows Meta took a message."""

    wamid: str
    status: str
    occurred_at: str


def evidence_of(value: bytes | None, wanted: Mapping[str, object]) -> tuple[str, Evidence] | None:
    """The (message id, evidence) a delivery-events record gives for a wanted id, else None."""
    if not value:
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    message_id = record.get("message_id")
    wamid = record.get("wamid")
    status = record.get("status")
    if (
        isinstance(message_id, str)
        and message_id in wanted
        and isinstance(wamid, str)
        and wamid
        and status in EVIDENCE_STATUSES
    ):
        return message_id, Evidence(wamid, str(status), str(record.get("occurred_at", "")))
    return None


def meta_time(value: bytes | None) -> float | None:
    """When Meta stamped a status the receiver published (epoch seconds), else None."""
    try:
        record = orjson.loads(value or b"")
        if record.get("status") in META_STATUSES and record.get("wamid"):
            return datetime.fromisoformat(record["occurred_at"]).timestamp()
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        pass
    return None


async def find_statuses(
    settings: Settings,
    topic: str,
    markers: Mapping[str, datetime],
    grace_seconds: float,
    topic_partitions: TopicPartitions,
) -> dict[str, Evidence]:
    """Evidence for each message id of `markers` (id -> when its call was about to be made).

    Waits until every id has evidence or the latest marker is `grace_seconds` old; then,
    while the receiver's statuses still lag behind the markers, until they catch up
    (a status Meta stamped over a second after the latest marker), at most
    CATCH_UP_GRACES graces: a status late by more than the grace is still found.
    `topic_partitions`: StreamShell.topic_partitions (connectors/whatsapp/shell.py).
    """
    if not markers:
        return {}
    found: dict[str, Evidence] = {}
    latest = max(markers.values()).timestamp()
    earliest = min(markers.values()).timestamp() - LOOKBACK_SECONDS
    deadline = time.monotonic() + max(0.0, latest + grace_seconds - time.time())
    cap = deadline + (CATCH_UP_GRACES - 1) * grace_seconds
    caught_up, last_status = False, time.monotonic()
    consumer = reader(settings, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, topic_partitions)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: int(earliest * 1000) for tp in tps})
        for tp in tps:
            at = starts.get(tp)
            if at is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)
        # Whatever is on the topic now is read even when the grace is over already.
        ends = await consumer.end_offsets(tps)
        while len(found) < len(markers):
            now = time.monotonic()
            left = deadline - now
            if left <= 0 and await _reached(consumer, ends):
                if caught_up or now - last_status >= STALL_SECONDS or now >= cap:
                    break
                ends = await consumer.end_offsets(tps)  # still coming: read on
            batches = await consumer.getmany(timeout_ms=int(min(max(left, 0.1), 0.5) * 1000))
            for records in batches.values():
                for record in records:
                    hit = evidence_of(record.value, markers)
                    if hit is not None:
                        found.setdefault(hit[0], hit[1])
                    stamped = meta_time(record.value)
                    if stamped is not None:
                        last_status = time.monotonic()
                        caught_up = caught_up or stamped > latest + 1.0
    finally:
        await consumer.stop()
    log.info(
        "whatsapp.in_doubt_resolved",
        in_doubt=len(markers),
        taken_by_meta=len(found),
        to_send=len(markers) - len(found),
    )
    return found


async def _reached(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    """Whether every partition has been read up to `ends`."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, topic_partitions: TopicPartitions
) -> set[int]:
    for _ in range(50):
        partitions = await topic_partitions(consumer, topic)
        if partitions:
            return partitions
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic!r} has no partitions")


Finder = Callable[[Mapping[str, datetime], float], Awaitable[dict[str, Evidence]]]
# How long a lost answer waits for others to share its look at delivery-events.
GATHER_SECONDS = 0.05


class LostAnswers:
    """Calls whose request went out but whose answer never came (a read timeout, a closed
    connection): Meta may have taken them, as with a crash, so each is settled the same
    way before any retry. `settle` gives Meta's status of the call (the message was
    taken: do not send it again) or None (no status within the grace: send it again).

    Calls lost at about the same time share one `finder` run (find_statuses), not a Kafka
    consumer each. A finder failure counts as no status, which sends again, as before.
    """

    def __init__(self, finder: Finder, grace_seconds: float) -> None:
        self._finder, self._grace = finder, grace_seconds
        self._waiting: list[tuple[str, datetime, asyncio.Future[Evidence | None]]] = []
        self._round: asyncio.Task[None] | None = None

    async def settle(self, message_id: str, called_at: datetime) -> Evidence | None:
        """Meta's status of the call made at `called_at` for `message_id`, or None."""
        future: asyncio.Future[Evidence | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((message_id, called_at, future))
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._rounds(), name="whatsapp-lost-answers")
        return await future

    async def _rounds(self) -> None:
        while self._waiting:
            await asyncio.sleep(GATHER_SECONDS)
            batch, self._waiting = self._waiting, []
            markers: dict[str, datetime] = {}
            for message_id, called_at, _ in batch:
                markers[message_id] = min(called_at, markers.get(message_id, called_at))
            try:
                found = await self._finder(markers, self._grace)
            except Exception:
                log.exception("whatsapp.lost_answers_unresolved", calls=len(batch))
                found = {}
            log.info("whatsapp.lost_answers", calls=len(markers), taken_by_meta=len(found))
            for message_id, _, future in batch:
                if not future.done():
                    future.set_result(found.get(message_id))
