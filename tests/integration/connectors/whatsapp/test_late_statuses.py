"""A receiver behind by more than the grace: the status of a call in doubt is still found.

Webhooks reach delivery-events in the order Meta stamped them. While the ones read are
stamped before the marker, the status of the call in doubt may still be on its way, so the
grace alone does not decide (the kill -9 reliability tests sent 117-291 messages twice).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson

from connectors.whatsapp.indoubt import find_statuses
from engine.streaming.clients import topic_partitions
from tests.integration.connectors.whatsapp.test_whatsapp_connector import (
    CreateTopics,
    Produce,
    SettingsFactory,
)


def status(message_id: str, at: datetime, status: str = "sent") -> tuple[bytes | None, bytes]:
    value = {
        "message_id": message_id,
        "wamid": f"wamid.{message_id}",
        "status": status,
        "occurred_at": at.isoformat(),
    }
    return b"p-1", orjson.dumps(value)


async def test_a_status_later_than_the_grace_is_found_while_the_receiver_catches_up(
    wa_settings: SettingsFactory, create_topics: CreateTopics, produce: Produce
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    topic = settings.topic_delivery_events
    called = datetime.now(UTC) - timedelta(seconds=5)  # the grace of 1 s is long over

    async def receiver_behind() -> None:
        # Statuses of calls before the one in doubt, still arriving; then its own.
        for i in range(6):
            backlog = [status(f"m-{i}-{j}", called - timedelta(seconds=2)) for j in range(5)]
            await produce(settings, topic, backlog)
            await asyncio.sleep(0.5)
        await produce(settings, topic, [status("m-doubt", called + timedelta(seconds=0.2))])
        await produce(settings, topic, [status("m-after", called + timedelta(seconds=3))])

    feeding = asyncio.create_task(receiver_behind())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    found = await find_statuses(settings, topic, {"m-doubt": called}, 1.0, topic_partitions)
    await feeding
    assert found["m-doubt"].wamid == "wamid.m-doubt"
    assert time.monotonic() - started < 9  # at most CATCH_UP_GRACES graces past the marker


async def test_without_statuses_coming_the_grace_decides(
    wa_settings: SettingsFactory, create_topics: CreateTopics
) -> None:
    settings = wa_settings()
    await create_topics(settings)
    called = datetime.now(UTC) - timedelta(seconds=5)
    started = time.monotonic()
    found = await find_statuses(
        settings, settings.topic_delivery_events, {"m-never": called}, 1.0, topic_partitions
    )
    assert found == {}
    assert time.monotonic() - started < 5
