"""Self-contained HTML pages: a journey drawn as inline SVG, plus its Mermaid source.

No script and no network: the layout is computed here, so a page opens anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from engine.core.graph import activity_label, edge_label, entry_label
from schemas.journey import JourneyDefinition, activity_targets

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 190, 46, 40, 70, 30
_FILL = {
    "wait": "#e8f0fe",
    "wait_for_event": "#fef7e0",
    "condition": "#fce8e6",
    "split": "#f3e8fd",
    "whatsapp": "#e6f4ea",
    "http": "#e8eaed",
    "jump": "#e8eaed",
    "end": "#f1f3f4",
    "entry": "#d2e3fc",
}


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    label: str
    back: bool


def _layers(definition: JourneyDefinition) -> tuple[dict[str, int], list[Edge]]:
    """Longest-path layers from the start; edges closing a cycle are drawn as back edges."""
    edges: list[Edge] = []
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str) -> None:
        state[node] = 1
        for path, target in activity_targets(definition.activities[node]):
            back = state.get(target) == 1
            edges.append(Edge(node, target, edge_label(definition.activities[node], path), back))
            if target not in state:
                visit(target)
        state[node] = 2
        order.append(node)

    visit(definition.start)
    layer = {node: 1 for node in order}
    for node in reversed(order):  # reverse post-order is a topological order of forward edges
        for e in edges:
            if e.source == node and not e.back:
                layer[e.target] = max(layer[e.target], layer[node] + 1)
    layer["entry"] = 0
    return layer, [Edge("entry", definition.start, "", False), *edges]


def journey_svg(
    definition: JourneyDefinition, counts: Mapping[str, int | str] | None = None
) -> str:
    """The journey as an SVG drawing; `counts` by activity id (a number, or a short text
    such as the console's "3 now · 12 passed") are shown on the nodes."""
    layer, edges = _layers(definition)
    layer_of = layer
    rows: dict[int, list[str]] = {}
    for node, depth in sorted(layer.items(), key=lambda kv: kv[1]):
        rows.setdefault(depth, []).append(node)
    width = max(len(r) for r in rows.values()) * (NODE_W + GAP_X) + 2 * MARGIN
    height = (max(rows) + 1) * (NODE_H + GAP_Y) + 2 * MARGIN
    pos: dict[str, tuple[float, float]] = {}
    for depth, nodes in rows.items():
        row_w = len(nodes) * (NODE_W + GAP_X) - GAP_X
        x0 = (width - row_w) / 2
        for i, node in enumerate(nodes):
            pos[node] = (x0 + i * (NODE_W + GAP_X), MARGIN + depth * (NODE_H + GAP_Y))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="{escape(definition.name)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6368"/></marker></defs>',
    ]
    seen_pairs: dict[tuple[str, str], int] = {}
    for e in edges:
        # A second edge between the same two steps bows out and labels lower down.
        nth = seen_pairs.get((e.source, e.target), 0)
        seen_pairs[(e.source, e.target)] = nth + 1
        (sx, sy), (tx, ty) = pos[e.source], pos[e.target]
        sx, tx = sx + nth * 24, tx + nth * 24
        x1, y1 = sx + NODE_W / 2, sy + NODE_H
        x2, y2 = tx + NODE_W / 2, ty
        if e.back:  # loop around the right side
            x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H / 2, tx + NODE_W, ty + NODE_H / 2
            bend = max(x1, x2) + 60
            d = f"M{x1:.0f},{y1:.0f} C{bend:.0f},{y1:.0f} {bend:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = bend - 10, (y1 + y2) / 2
        elif layer_of[e.target] - layer_of[e.source] > 1:  # skips a row: pass beside it
            side = x1 + NODE_W / 2 + 90
            d = f"M{x1:.0f},{y1:.0f} C{side:.0f},{y1 + GAP_Y:.0f} {side:.0f},{y2 - GAP_Y:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = side - 20, (y1 + y2) / 2
        else:
            mid = (y1 + y2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2 + nth * 30, mid + nth * 14
        parts.append(
            f'<path class="edge" d="{d}" fill="none" stroke="#5f6368" marker-end="url(#arrow)"/>'
        )
        if e.label:
            parts.append(
                f'<text class="edge-label" x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" fill="#3c4043" '
                f'paint-order="stroke" stroke="#fff" stroke-width="3">{escape(e.label)}</text>'
            )
    entry = entry_label(definition)
    for node, (x, y) in pos.items():
        kind = "entry" if node == "entry" else definition.activities[node].type
        label = entry if node == "entry" else activity_label(node, definition.activities[node])
        rx = 23 if kind in ("entry", "end", "whatsapp") else 6
        value = None if counts is None else counts.get(node)
        count = "" if value is None else value if isinstance(value, str) else f"{value:,}"
        parts.append(
            f'<g class="node" data-activity="{escape(node)}" data-type="{kind}">'
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="{rx}" '
            f'fill="{_FILL[kind]}" stroke="#5f6368"/>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 19:.0f}" text-anchor="middle">{escape(label[:34])}</text>'
            f'<text x="{x + NODE_W / 2:.0f}" y="{y + 35:.0f}" text-anchor="middle" fill="#5f6368" '
            f'font-size="11">{escape(node if node != "entry" else "entry")}'
            + (
                f' · <tspan class="count" font-weight="bold" fill="#188038">{count}</tspan>'
                if count
                else ""
            )
            + "</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


PAGE_STYLE = (
    "body{font-family:sans-serif;margin:24px;color:#202124}h1{font-size:20px}h2{font-size:16px;margin-top:32px}"
    "table{border-collapse:collapse}td,th{border:1px solid #dadce0;padding:4px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}details{margin-top:8px}pre{background:#f8f9fa;padding:8px}"
)


def mermaid_page(title: str, journeys: Sequence[tuple[JourneyDefinition, str]]) -> str:
    """A page with each journey drawn as SVG and its Mermaid source underneath."""
    body = [f"<h1>{escape(title)}</h1>"]
    for definition, mermaid in journeys:
        body.append(
            f'<section class="journey" id="{escape(definition.id)}"><h2>{escape(definition.name)} '
            f"({escape(definition.id)})</h2>{journey_svg(definition)}"
            f"<details><summary>Mermaid source</summary><pre>{escape(mermaid)}</pre></details></section>"
        )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{PAGE_STYLE}</style></head><body>{''.join(body)}</body></html>"
    )
