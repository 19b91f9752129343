"""The in-memory index of when each owned profile next needs the clock.

The durable truth is each ProfileState's timers in the changelog-backed table; this
index is rebuilt from it after every rebalance and only decides when to send a tick.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(slots=True)
class TimerIndex:
    """A min-heap of (due, profile id) with lazy deletion of superseded entries."""

    _heap: list[tuple[float, str]] = field(default_factory=list)
    _due: dict[str, float] = field(default_factory=dict)

    def schedule(self, profile_id: str, due: float | None) -> None:
        """Record a profile's next due time (epoch seconds), or forget it with None."""
        if due is None:
            self._due.pop(profile_id, None)
            return
        if self._due.get(profile_id) == due:
            return
        self._due[profile_id] = due
        heapq.heappush(self._heap, (due, profile_id))

    def pop_due(self, now: float, limit: int = 10_000) -> list[tuple[str, float]]:
        """Remove and return up to `limit` (profile, due) pairs due at `now`."""
        fired: list[tuple[str, float]] = []
        heap = self._heap
        while heap and heap[0][0] <= now and len(fired) < limit:
            due, profile_id = heapq.heappop(heap)
            if self._due.get(profile_id) != due:
                continue  # superseded by a later schedule() for the same profile
            del self._due[profile_id]
            fired.append((profile_id, due))
        if len(heap) > 4 * len(self._due) + 1024:
            self._compact()
        return fired

    def clear(self) -> None:
        self._heap.clear()
        self._due.clear()

    def __len__(self) -> int:
        return len(self._due)

    def next_due(self) -> float | None:
        return min(self._due.values()) if self._due else None

    def _compact(self) -> None:
        self._heap = [(due, pid) for pid, due in self._due.items()]
        heapq.heapify(self._heap)
