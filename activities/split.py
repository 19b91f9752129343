"""The split activity: a sticky random split, so a profile takes the same path on every visit.

A hash of profile, journey and activity (not Python's salted hash()) picks the path by weight.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from activities.base import StepContext, StepOutcome
from schemas.journey import SplitActivity

_SCALE = float(1 << 64)


def bucket(profile_id: str, journey_id: str, activity_id: str) -> float:
    """A stable number in [0, 1) for this profile at this split."""
    key = f"{profile_id}:{journey_id}:{activity_id}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def run(ctx: StepContext, activity: SplitActivity, now: datetime) -> StepOutcome:
    point = bucket(ctx.profile_id, ctx.journey.id, ctx.activity_id) * sum(
        p.weight for p in activity.paths
    )
    cumulative = 0.0
    for index, path in enumerate(activity.paths):
        cumulative += path.weight
        if point < cumulative:
            return StepOutcome.go(path.next, path.name or str(index))
    # Float rounding can leave the point just past the last bound.
    last = activity.paths[-1]
    return StepOutcome.go(last.next, last.name or str(len(activity.paths) - 1))
