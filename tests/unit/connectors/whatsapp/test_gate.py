"""The gate decides from what Meta said: skip, wait, or send; a wait gives way on revocation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.whatsapp.controls import Controls, Record, template_records, tier_record
from connectors.whatsapp.gate import HoldAbandoned, SendGate
from schemas.messages import SendRequest, SkipReason
from schemas.settings import Settings

NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def request(to: str = "+34600111222", **extra: Any) -> SendRequest:
    return SendRequest.model_validate(
        {
            "message_id": f"m-{to}",
            "journey_id": "j",
            "journey_version": 1,
            "activity_id": "send",
            "profile_id": f"p-{to}",
            "to": to,
            "consent": "opted_in",
            "template": "promo",
            "language": "es",
            "requested_at": NOW,
            **extra,
        }
    )


def gate(*records: Record) -> tuple[SendGate, Controls, list[Record]]:
    controls = Controls(window_seconds=60.0)
    for key, value in records:
        controls.apply(key, value)
    written: list[Record] = []

    async def write(record: Record) -> None:
        written.append(record)

    return SendGate(controls, Settings(), write, lambda: NOW, lambda: 1000.0), controls, written


async def test_paused_and_disabled_templates_are_skipped_with_their_reasons() -> None:
    paused, _, _ = gate(*template_records("promo", "es", NOW, status="PAUSED"))
    assert (await paused.check(request(), lambda: None))[0] is SkipReason.TEMPLATE_PAUSED  # type: ignore[index]
    disabled, _, _ = gate(*template_records("promo", "es", NOW, status="DISABLED"))
    waiting = request(on_paused="wait", wait_until=NOW + timedelta(days=1))
    assert (await disabled.check(waiting, lambda: None))[0] is SkipReason.TEMPLATE_DISABLED  # type: ignore[index]


async def test_a_wait_for_a_paused_template_ends_when_it_is_reinstated() -> None:
    g, controls, _ = gate(*template_records("promo", "es", NOW, status="PAUSED"))
    held: list[bool] = []
    waiting = request(on_paused="wait", wait_until=NOW + timedelta(days=1))
    task = asyncio.create_task(g.check(waiting, lambda: held.append(True)))
    await asyncio.sleep(0.05)
    assert not task.done() and held == [True]
    for key, value in template_records("promo", "es", NOW, status="APPROVED"):
        controls.apply(key, value)
    assert await asyncio.wait_for(task, 1.0) is None


async def test_a_held_new_user_gives_way_when_the_partition_is_revoked() -> None:
    g, _, written = gate(tier_record(1, NOW))
    assert await g.check(request("+34600000001"), lambda: None) is None
    assert [key for key, _ in written] and written[0][0].startswith(b"reach:")
    mine = [True]
    task = asyncio.create_task(g.check(request("+34600000002"), lambda: None, lambda: mine[0]))
    await asyncio.sleep(0.05)
    assert not task.done()
    mine[0] = False
    with pytest.raises(HoldAbandoned):
        await asyncio.wait_for(task, 2.0)
