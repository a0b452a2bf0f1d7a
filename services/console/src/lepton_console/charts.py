"""Pictures drawn on the server as inline SVG: no script, readable by screen readers.

Each chart is ``<svg role="img">`` with an ``aria-label``, and a ``<title>`` and ``<desc>`` that say
what it shows in words; colours come from classes in ``console.css`` (the page's policy allows no
inline styles).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from markupsafe import Markup, escape

WIDTH = 320
HEIGHT = 120
AXIS = 16  # room under the bars for the axis labels
#: Named, so a chart sent as markup (a job's curve, live) parses as SVG on its own too.
SVG_NS = "http://www.w3.org/2000/svg"


def number(value: float) -> str:
    return f"{value:.4g}"


def bars_svg(chart_id: str, heights: Sequence[int], title: str, desc: str, labels: tuple[str, str]) -> Markup:
    """Vertical bars scaled to the tallest, ``labels`` under the left and right ends."""
    peak = max(heights, default=0) or 1
    n = max(len(heights), 1)
    step = WIDTH / n
    plot = HEIGHT - AXIS
    parts = _opening(chart_id, title, desc)
    for i, count in enumerate(heights):
        h = plot * count / peak
        parts.append(
            f'<rect class="bar" x="{i * step + 1:.1f}" y="{plot - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{count}</title></rect>'
        )
    return _closing(parts, labels)


def _opening(chart_id: str, title: str, desc: str, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    """An SVG's opening tag, ``<title>`` and ``<desc>``: what every chart says to a screen reader."""
    return [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}" '
        f'aria-describedby="{escape(chart_id)}-desc" xmlns="{SVG_NS}">',
        f"<title>{escape(title)}</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]


def _closing(parts: list[str], labels: tuple[str, str], width: int = WIDTH, height: int = HEIGHT) -> Markup:
    """The x axis, ``labels`` under its ends, and the closing tag."""
    plot = height - AXIS
    parts.append(f'<line class="axis" x1="0" y1="{plot}" x2="{width}" y2="{plot}"/>')
    parts.append(f'<text class="tick" x="0" y="{height - 3}">{escape(labels[0])}</text>')
    parts.append(f'<text class="tick" x="{width}" y="{height - 3}" text-anchor="end">{escape(labels[1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


CURVE_WIDTH = 640
CURVE_HEIGHT = 200
#: Up to this many series get their own colour class (``series-0`` ...) in console.css.
SERIES = 4


def curve_svg(
    chart_id: str, series: Mapping[str, Sequence[tuple[float, float]]], title: str, desc: str, labels: tuple[str, str]
) -> Markup:
    """Lines of ``(x, y)`` points (a training's loss per epoch), all on one scale, under a legend band."""
    points = [p for line in series.values() for p in line]
    xs, ys = [x for x, _ in points] or [0.0], [y for _, y in points] or [0.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    plot = CURVE_HEIGHT - AXIS
    # The legend's rows sit above the lines' highest point, so no line runs through a name.
    top = 8 + 14 * len(series)
    parts = _opening(chart_id, title, desc, CURVE_WIDTH, CURVE_HEIGHT)

    def at(x: float, y: float) -> str:
        px = (x - x0) / (x1 - x0) * (CURVE_WIDTH - 8) + 4 if x1 > x0 else CURVE_WIDTH / 2
        py = plot - 4 - ((y - y0) / (y1 - y0) * (plot - 4 - top) if y1 > y0 else (plot - 4 - top) / 2)
        return f"{px:.1f},{py:.1f}"

    for i, (name, line) in enumerate(series.items()):
        css = f"series-{i % SERIES}"
        if line:
            parts.append(f'<polyline class="line {css}" points="{" ".join(at(x, y) for x, y in line)}"/>')
        parts.append(f'<text class="legend {css}" x="{CURVE_WIDTH - 4}" y="{14 + 14 * i}" text-anchor="end">')
        parts.append(f"{escape(name)}</text>")
    parts.append(f'<text class="tick" x="4" y="{top + 4}">{escape(number(y1))}</text>')
    parts.append(f'<text class="tick" x="4" y="{plot - 6}">{escape(number(y0))}</text>')
    return _closing(parts, labels, CURVE_WIDTH, CURVE_HEIGHT)


def column_chart(chart_id: str, column: str, profile: dict[str, object], t: Callable[..., str]) -> Markup | None:
    """A numeric column's histogram, or a categorical one's most frequent values; None when the profile has neither."""
    histogram = profile.get("histogram")
    if isinstance(histogram, dict) and histogram.get("counts"):
        edges = [float(e) for e in histogram["edges"]]
        counts = [int(c) for c in histogram["counts"]]
        top = max(range(len(counts)), key=counts.__getitem__)
        desc = t(
            "chart.histogram_desc",
            bins=len(counts),
            low=number(edges[0]),
            high=number(edges[-1]),
            peak=counts[top],
            peak_low=number(edges[top]),
            peak_high=number(edges[top + 1]),
        )
        title = t("chart.histogram", column=column)
        return bars_svg(chart_id, counts, title, desc, (number(edges[0]), number(edges[-1])))
    top_values = profile.get("top_values")
    if isinstance(top_values, dict) and top_values:
        ranked = sorted(((str(k), int(v)) for k, v in top_values.items()), key=lambda kv: (-kv[1], kv[0]))
        desc = t("chart.top_values_desc", bars=len(ranked), peak_label=ranked[0][0], peak=ranked[0][1])
        title = t("chart.top_values", column=column)
        return bars_svg(chart_id, [c for _, c in ranked], title, desc, (ranked[0][0], ranked[-1][0]))
    return None
