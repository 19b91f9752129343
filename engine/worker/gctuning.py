"""Garbage-collector settings for long-running processes (workers, the bench sandbox).

Kept apart from engine.streaming.app so a process that does not load faust can use it.
"""

from __future__ import annotations

import gc

# Container allocations between two young-generation collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Keep the cyclic garbage collector from costing a share of every request.

    A worker takes records in batches of hundreds: at Python's default threshold the objects
    a batch holds alive set off a young collection every 700 allocations, and the full
    collections that follow scan every object of the imported modules and the faust app
    although they find nothing to free. Freezing the start-up objects out of the
    collector's sight and raising the young threshold keeps collections rare and small;
    cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *gc.get_threshold()[1:])
