"""Draw a journey as a Mermaid flowchart, for operators and reviewers (`journeyctl graph`).

One node per activity, shaped by type, with labelled edges; optional counts ride on the labels.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.common import format_duration
from schemas.journey import (
    ConditionActivity,
    EndActivity,
    HttpActivity,
    JourneyDefinition,
    JumpActivity,
    SplitActivity,
    WaitActivity,
    WaitForEventActivity,
    WhatsAppActivity,
    activity_targets,
)

ENTRY_NODE = "entry"
_MAX_LABEL = 40
# Mermaid's entity codes; `#` first so the codes themselves are not escaped again.
_ESCAPES = (
    ("#", "#35;"),
    ("&", "#amp;"),
    ('"', "#quot;"),
    ("<", "#lt;"),
    (">", "#gt;"),
    ("`", "#96;"),
)
# Opening and closing brackets of each node shape.
_SHAPES: dict[str, tuple[str, str]] = {
    "wait": ("([", "])"),
    "wait_for_event": ("{{", "}}"),
    "condition": ("{", "}"),
    "split": ("[/", "\\]"),
    "whatsapp": ("(", ")"),
    "http": ("[[", "]]"),
    "jump": (">", "]"),
    "end": ("(((", ")))"),
}


def entry_label(definition: JourneyDefinition) -> str:
    """How profiles enter, in a few words: `on cart.abandoned if ...`, `audience ...`."""
    rule = definition.entry
    if rule.audience is not None:
        return f"audience {_shorten(rule.audience.condition)}"
    if rule.qualification is not None:
        return f"qualifies {_shorten(rule.qualification.condition)}"
    entry = f"on {rule.event}"
    if rule.condition:
        entry += f" if {_shorten(rule.condition)}"
    return entry


def to_mermaid(definition: JourneyDefinition, counts: dict[str, int] | None = None) -> str:
    """A `flowchart TD` of the journey; `counts` (by activity id) are appended to the labels."""
    ids = _node_ids(definition.activities)
    lines = ["flowchart TD"]
    entry = entry_label(definition)
    lines.append(f'    {ENTRY_NODE}(("{_escape(entry)}"))')
    for activity_id, activity in definition.activities.items():
        opening, closing = _SHAPES[activity.type]
        label = activity_label(activity_id, activity)
        if counts is not None and activity_id in counts:
            label += f" ({counts[activity_id]:,})"
        lines.append(f'    {ids[activity_id]}{opening}"{_escape(label)}"{closing}')
    lines.append(f"    {ENTRY_NODE} --> {ids[definition.start]}")
    for activity_id, activity in definition.activities.items():
        for path, target in activity_targets(activity):
            edge = edge_label(activity, path)
            arrow = f'-->|"{_escape(edge)}"|' if edge else "-->"
            lines.append(f"    {ids[activity_id]} {arrow} {ids[target]}")
    return "\n".join(lines) + "\n"


def _node_ids(activities: dict[str, Any]) -> dict[str, str]:
    # Activity ids may hold '-' and may be Mermaid keywords such as `end`; prefix and sanitise.
    ids: dict[str, str] = {}
    taken: set[str] = {ENTRY_NODE}
    for activity_id in activities:
        base = "a_" + re.sub(r"[^A-Za-z0-9_]", "_", activity_id)
        node, n = base, 2
        while node in taken:
            node, n = f"{base}_{n}", n + 1
        taken.add(node)
        ids[activity_id] = node
    return ids


def activity_label(activity_id: str, activity: Any) -> str:
    match activity:
        case WaitActivity(duration=duration) if duration is not None:
            return f"wait {format_duration(duration)}"
        case WaitActivity():
            return f"wait until {_shorten(activity.until or '')}"
        case WaitForEventActivity():
            return f"wait for {activity.event} ≤ {format_duration(activity.timeout)}"
        case ConditionActivity():
            return f"{activity_id}?"
        case SplitActivity():
            return f"split {activity_id}"
        case WhatsAppActivity():
            return f"WhatsApp {activity.template}/{activity.language}"
        case HttpActivity():
            return _shorten(f"{activity.method} {re.sub(r'^https?://', '', activity.url)}")
        case JumpActivity():
            return f"jump to {activity.journey}"
        case EndActivity():
            return "end"
    return activity_id


def edge_label(activity: Any, path: tuple[str | int, ...]) -> str:
    match activity, path:
        case ConditionActivity(), ("branches", int(index), "next"):
            return _shorten(activity.branches[index].when)
        case ConditionActivity(), ("else",):
            return "else"
        case SplitActivity(), ("paths", int(index), "next"):
            total = sum(p.weight for p in activity.paths)
            split = activity.paths[index]
            share = f"{split.weight / total * 100:.4g}%"
            return f"{split.name}: {share}" if split.name else share
        case WaitForEventActivity(), ("next",):
            return activity.event
        case WaitForEventActivity(), ("on_timeout",):
            return "timeout"
        case HttpActivity(), ("next",):
            return "ok"
        case _, ("on_error",):
            return "on error"
    return ""


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _escape(text: str) -> str:
    for raw, code in _ESCAPES:
        text = text.replace(raw, code)
    return text
