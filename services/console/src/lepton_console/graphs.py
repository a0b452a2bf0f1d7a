"""Lineage drawn as a graph: boxes in columns by their distance from the sources, arrows between them.

Like :mod:`lepton_console.charts`, an inline ``<svg role="img">`` with a ``<title>`` and a ``<desc>``
saying in words what the picture shows; the page lists the same steps as links beside it, so the
picture holds nothing a keyboard must reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from lepton_console.charts import SVG_NS

BOX_W = 196
BOX_H = 46
GAP_X = 44
GAP_Y = 14
PAD = 8
#: Characters of a line a box shows (the rest is cut with "…"; the list beside the graph has it whole).
LINE = 24


@dataclass(frozen=True)
class Node:
    """One box: ``kind`` picks its colour class (``node-dataset``, ``node-job``, ...), two lines of text,
    and where the list beside the graph links it."""

    id: str
    kind: str
    title: str
    detail: str
    href: str | None = None


def _cut(text: str) -> str:
    return text if len(text) <= LINE else text[: LINE - 1] + "…"


def layers(nodes: Sequence[Node], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: the length of the longest path reaching it (a cycle is cut where it closes)."""
    known = {n.id for n in nodes}
    parents: dict[str, list[str]] = {n.id: [] for n in nodes}
    for src, dst in edges:
        if src in known and dst in known and src != dst:
            parents[dst].append(src)
    depth: dict[str, int] = {}

    def visit(node: str, path: frozenset[str]) -> int:
        if node in depth:
            return depth[node]
        reachable = [p for p in parents[node] if p not in path]
        depth[node] = 1 + max((visit(p, path | {node}) for p in reachable), default=-1)
        return depth[node]

    for n in nodes:
        visit(n.id, frozenset())
    return depth


def graph_svg(chart_id: str, nodes: Sequence[Node], edges: Sequence[tuple[str, str]], title: str, desc: str) -> Markup:
    """The graph of ``nodes`` joined by ``edges`` (``(from, to)`` ids), read left to right."""
    depth = layers(nodes, edges)
    columns: dict[int, list[Node]] = {}
    for n in nodes:
        columns.setdefault(depth[n.id], []).append(n)
    width = PAD * 2 + len(columns) * BOX_W + max(len(columns) - 1, 0) * GAP_X
    tallest = max((len(c) for c in columns.values()), default=1)
    height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y
    at: dict[str, tuple[float, float]] = {}
    for col, members in columns.items():
        offset = (height - (len(members) * BOX_H + (len(members) - 1) * GAP_Y)) / 2
        for row, n in enumerate(members):
            at[n.id] = (PAD + col * (BOX_W + GAP_X), offset + row * (BOX_H + GAP_Y))
    parts = [
        f'<svg class="graph" id="{escape(chart_id)}" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" aria-label="{escape(title)}" aria-describedby="{escape(chart_id)}-desc" xmlns="{SVG_NS}">',
        f"<title>{escape(title)}</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    for src, dst in edges:
        if src not in at or dst not in at or src == dst:
            continue
        (x0, y0), (x1, y1) = at[src], at[dst]
        sx, sy, ex, ey = x0 + BOX_W, y0 + BOX_H / 2, x1, y1 + BOX_H / 2
        bend = max((ex - sx) / 2, 12)
        parts.append(
            f'<path class="edge" d="M{sx:.1f},{sy:.1f} C{sx + bend:.1f},{sy:.1f} {ex - bend:.1f},{ey:.1f} '
            f'{ex - 6:.1f},{ey:.1f}"/>'
        )
        parts.append(
            f'<path class="arrow" d="M{ex - 7:.1f},{ey - 4:.1f} L{ex:.1f},{ey:.1f} L{ex - 7:.1f},{ey + 4:.1f}Z"/>'
        )
    for n in nodes:
        x, y = at[n.id]
        parts.append(f'<g class="node node-{escape(n.kind)}" data-node="{escape(n.id)}">')
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6"/>')
        parts.append(f'<text class="node-title" x="{x + 8:.1f}" y="{y + 19:.1f}">{escape(_cut(n.title))}</text>')
        parts.append(f'<text class="node-detail" x="{x + 8:.1f}" y="{y + 36:.1f}">{escape(_cut(n.detail))}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
