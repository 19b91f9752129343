"""Decoded states of recently committed profiles, so the engine does not parse again the
states it wrote itself (a due tick a second after the event that set the timer, say).

Invariant: an entry is `(raw, state)` where `state` decodes to exactly `raw` and no record
holds it. `take` hands the state to one record and forgets it (the interpreter changes
states in place); a state comes back only through `keep`, once its batch is committed,
from the flush, which keeps only states no later record was handed. A state is used only
while its bytes are still the table's (`raw == stored`): a rebalance, a restore or another
writer changes the bytes, and the state is decoded from them instead.
"""

from __future__ import annotations

from collections import OrderedDict

from engine.worker.codec import state_from_bytes
from schemas.state import ProfileState


class DecodedStates:
    """At most `size` profiles' decoded states, the oldest kept dropped first."""

    __slots__ = ("_entries", "hits", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # OrderedDict, not dict: dropping the oldest of a dict whose first entries were
        # taken scans their empty slots each time (next(iter(d)) is not O(1) there).
        self._entries: OrderedDict[str, tuple[bytes, ProfileState]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, profile_id: str, stored: bytes) -> ProfileState:
        """The state in `stored`: the kept one if it is still those bytes, else decoded."""
        entry = self._entries.pop(profile_id, None)
        if entry is not None and entry[0] == stored:
            self.hits += 1
            return entry[1]
        return state_from_bytes(stored)

    def keep(self, profile_id: str, raw: bytes, state: ProfileState) -> None:
        """Remember `state`, which `raw` (now in the table) encodes, and which no record holds."""
        if self.size <= 0:
            return
        entries = self._entries
        entries[profile_id] = (raw, state)
        entries.move_to_end(profile_id)
        if len(entries) > self.size:
            entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
