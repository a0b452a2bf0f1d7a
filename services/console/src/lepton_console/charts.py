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
    chart_id: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    desc: str,
    labels: tuple[str, str],
    dots: bool = False,
) -> Markup:
    """Lines of ``(x, y)`` points (a training's loss per epoch), all on one scale, under a legend band; with
    ``dots``, a dot at each point too (``class="dot series-N"``), so a line of one point shows."""
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
        if dots:
            for x, y in line:
                px, py = at(x, y).split(",")
                parts.append(f'<circle class="dot {css}" cx="{px}" cy="{py}" r="3"/>')
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


TRAFFIC_WIDTH = 640
TRAFFIC_HEIGHT = 160
LEGEND = 18  # room above the bars for a legend row
TRAFFIC_SLOTS = 15


def traffic_svg(
    chart_id: str,
    windows: Sequence[tuple[str, int, int]],
    title: str,
    desc: str,
    names: tuple[str, str],
    labels: tuple[str, str],
) -> Markup:
    """Requests per window as bars, the failed part of each drawn over it in another class (``bar-error``),
    under a legend naming both (``names``); each bar's ``<title>`` says its window, requests and errors."""
    peak = max((requests for _, requests, _ in windows), default=0) or 1
    # Room for at least TRAFFIC_SLOTS windows, so one window is a bar, not the whole chart.
    n = max(len(windows), TRAFFIC_SLOTS)
    step = TRAFFIC_WIDTH / n
    plot = TRAFFIC_HEIGHT - AXIS
    room = plot - LEGEND
    parts = _opening(chart_id, title, desc, TRAFFIC_WIDTH, TRAFFIC_HEIGHT)
    parts.append(_legend_row(names, ("bar", "bar-error")))
    for i, (when, requests, errors) in enumerate(windows):
        x, width = i * step + 1, max(step - 2, 1)
        h = room * requests / peak
        e = room * min(errors, requests) / peak
        tip = escape(f"{when}: {names[0]} {requests}, {names[1]} {errors}")
        parts.append(
            f'<g><title>{tip}</title><rect class="bar" x="{x:.1f}" y="{plot - h:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}"/>'
        )
        if e > 0:
            parts.append(
                f'<rect class="bar-error" x="{x:.1f}" y="{plot - e:.1f}" width="{width:.1f}" height="{e:.1f}"/>'
            )
        parts.append("</g>")
    parts.append(f'<text class="tick" x="4" y="{LEGEND + 10}">{escape(str(peak))}</text>')
    return _closing(parts, labels, TRAFFIC_WIDTH, TRAFFIC_HEIGHT)


def _legend_row(names: tuple[str, str], classes: tuple[str, str]) -> str:
    """Two swatches with their names, left to right along the top: what each bar's class stands for."""
    out = []
    x = 4.0
    for name, css in zip(names, classes, strict=True):
        out.append(f'<rect class="{css} swatch" x="{x:.1f}" y="3" width="10" height="10"/>')
        out.append(f'<text class="legend-text" x="{x + 14:.1f}" y="12">{escape(name)}</text>')
        x += 24 + 6.5 * sum(2 if ord(ch) >= 0x2E80 else 1 for ch in name)  # a CJK character is twice as wide
    return "".join(out)


PAIRED_WIDTH = 400
PAIRED_HEIGHT = 150


def shares(counts: Sequence[int]) -> list[float]:
    """Counts as shares of their total (all zero when the total is)."""
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def paired_bars_svg(
    chart_id: str,
    bins: Sequence[str],
    reference: Sequence[float],
    live: Sequence[float],
    title: str,
    desc: str,
    names: tuple[str, str],
    labels: tuple[str, str],
) -> Markup:
    """Two bars a bin, side by side on one scale: ``reference`` (outlined, class ``ref``) against ``live``
    (filled, class ``live``), shares of their totals, under a legend naming both; the two differ in
    shape as well as colour. Each bar's ``<title>`` names its bin and its share."""
    peak = max([*reference, *live, 0.0]) or 1.0
    n = max(len(bins), 1)
    step = PAIRED_WIDTH / n
    plot = PAIRED_HEIGHT - AXIS
    room = plot - LEGEND
    half = max((step - 2) / 2, 0.5)
    parts = _opening(chart_id, title, desc, PAIRED_WIDTH, PAIRED_HEIGHT)
    parts.append(_legend_row(names, ("ref", "live")))
    for i, name in enumerate(bins):
        for j, (css, value) in enumerate((("ref", reference[i]), ("live", live[i]))):
            h = room * value / peak
            x = i * step + 1 + j * half
            tip = escape(f"{name}: {names[j]} {value:.1%}")
            parts.append(
                f'<rect class="{css}" x="{x:.1f}" y="{plot - h:.1f}" width="{half:.1f}" height="{h:.1f}">'
                f"<title>{tip}</title></rect>"
            )
    parts.append(f'<text class="tick" x="{PAIRED_WIDTH - 4}" y="{LEGEND + 10}" text-anchor="end">{peak:.0%}</text>')
    return _closing(parts, labels, PAIRED_WIDTH, PAIRED_HEIGHT)
