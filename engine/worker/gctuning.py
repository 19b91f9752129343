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
    a batch holds alive set off a young collection every 700 allocations, and every tenth of
    those a middle one, and the full collections that follow scan the 100,000 objects of
    the imported modules and the faust app each time. In the WhatsApp connector at four
    numbers that was 16% of its CPU although the collector found nothing to free (0.51 ms
    of CPU per send); with the start-up objects frozen out of the collector's sight and a
    threshold of 50,000 it was 1% (0.44 ms per send; docs/BENCHMARKS.md, session 5). The
    young collections then took about 30 ms each.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, *gc.get_threshold()[1:])
