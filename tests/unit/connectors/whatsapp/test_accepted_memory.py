"""What the accepted table keeps per message is the value's own bytes, not orjson's buffer."""

from __future__ import annotations

import tracemalloc

import orjson

from connectors.whatsapp.connector import right_sized


def test_a_kept_value_costs_its_own_size() -> None:
    value = {"wamid": "wamid.HBgLMzQ2MDAxMTEyMjIVAgARGBI1", "at": "2026-12-08T02:30:45+00:00"}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [right_sized(orjson.dumps(value)) for _ in range(1000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert kept[0] == orjson.dumps(value)
    assert per_value < 300  # the JSON is 85 bytes; orjson's own output holds 4 KiB
