"""LostAnswers: calls lost together share one look for their statuses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from connectors.whatsapp.indoubt import Evidence, LostAnswers

T0 = datetime(2026, 12, 8, 3, 0, tzinfo=UTC)


async def test_calls_lost_together_are_settled_in_one_look() -> None:
    looks: list[tuple[dict[str, datetime], float]] = []

    async def finder(markers: Mapping[str, datetime], grace: float) -> dict[str, Evidence]:
        looks.append((dict(markers), grace))
        return {"m-1": Evidence("wamid.1", "sent", "")}

    lost = LostAnswers(finder, 30.0)
    results = await asyncio.gather(
        lost.settle("m-1", T0), lost.settle("m-2", T0 + timedelta(seconds=1))
    )
    assert list(results) == [Evidence("wamid.1", "sent", ""), None]
    assert looks == [({"m-1": T0, "m-2": T0 + timedelta(seconds=1)}, 30.0)]
    # A later loss gets a look of its own.
    assert await lost.settle("m-3", T0) is None
    assert len(looks) == 2


async def test_a_failed_look_counts_as_no_status() -> None:
    async def finder(markers: Mapping[str, datetime], grace: float) -> dict[str, Evidence]:
        raise RuntimeError("broker down")

    assert await LostAnswers(finder, 30.0).settle("m-1", T0) is None
