"""Journeys for tests and benchmarks, derived from examples/journeys/ instead of copied.

A test or benchmark that needs a variant (a shorter wait, no quiet hours, its own id)
takes the example and changes only that, so the examples stay the journeys that run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "journeys"


def example(name: str) -> dict[str, Any]:
    """The parsed YAML of `examples/journeys/<name>.yaml`."""
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return loaded


def cart_recovery(journey_id: str, *, wait: str | None) -> str:
    """`cart-recovery.yaml` for a run that has to finish, as YAML text.

    Kept as the example writes them: the entry event and condition (carts over 20), the
    exit on `order.placed`, the timeout, the frequency cap, the language branch and the
    two `cart_reminder` sends. Changed: the journey's id; the one-hour wait lasts `wait`
    and is named `wait` (None: no wait, the journey starts at the language branch); an
    instance ends right after its send instead of waiting a day for the order; quiet hours
    are dropped (a run sends at any hour) and a profile enters once (`reentry: never`).
    """
    journey = example("cart-recovery")
    journey["id"] = journey_id
    journey["name"] = f"{journey['name']} ({journey_id})"
    journey["reentry"] = {"mode": "never"}
    del journey["quiet_hours"]
    activities: dict[str, Any] = journey["activities"]
    del activities["wait-order"]
    waiting = activities.pop("wait-1h")
    for send in ("send-es", "send-en"):
        activities[send]["next"] = "done"
    if wait is None:
        journey["start"] = waiting["next"]
    else:
        journey["start"] = "wait"
        journey["activities"] = {"wait": {**waiting, "duration": wait}, **activities}
    return yaml.safe_dump(journey, sort_keys=False)
