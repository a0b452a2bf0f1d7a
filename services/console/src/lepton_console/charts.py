"""Pictures drawn on the server as inline SVG: no script, readable by screen readers.

Each chart is ``<svg role="img">`` with an ``aria-label``, and a ``<title>`` and ``<desc>`` that say
what it shows in words; colours come from classes in ``console.css`` (the page's policy allows no
inline styles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 320
HEIGHT = 120
AXIS = 16  # room under the bars for the axis labels


def _number(value: float) -> str:
    return f"{value:.4g}"


def bars_svg(chart_id: str, heights: Sequence[int], title: str, desc: str, labels: tuple[str, str]) -> Markup:
    """Vertical bars scaled to the tallest, ``labels`` under the left and right ends."""
    peak = max(heights, default=0) or 1
    n = max(len(heights), 1)
    step = WIDTH / n
    plot = HEIGHT - AXIS
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-label="{escape(title)}" '
        f'aria-describedby="{escape(chart_id)}-desc">',
        f"<title>{escape(title)}</title>",
        f'<desc id="{escape(chart_id)}-desc">{escape(desc)}</desc>',
    ]
    for i, count in enumerate(heights):
        h = plot * count / peak
        parts.append(
            f'<rect class="bar" x="{i * step + 1:.1f}" y="{plot - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{count}</title></rect>'
        )
    parts.append(f'<line class="axis" x1="0" y1="{plot}" x2="{WIDTH}" y2="{plot}"/>')
    parts.append(f'<text class="tick" x="0" y="{HEIGHT - 3}">{escape(labels[0])}</text>')
    parts.append(f'<text class="tick" x="{WIDTH}" y="{HEIGHT - 3}" text-anchor="end">{escape(labels[1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


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
            low=_number(edges[0]),
            high=_number(edges[-1]),
            peak=counts[top],
            peak_low=_number(edges[top]),
            peak_high=_number(edges[top + 1]),
        )
        title = t("chart.histogram", column=column)
        return bars_svg(chart_id, counts, title, desc, (_number(edges[0]), _number(edges[-1])))
    top_values = profile.get("top_values")
    if isinstance(top_values, dict) and top_values:
        ranked = sorted(((str(k), int(v)) for k, v in top_values.items()), key=lambda kv: (-kv[1], kv[0]))
        desc = t("chart.top_values_desc", bars=len(ranked), peak_label=ranked[0][0], peak=ranked[0][1])
        title = t("chart.top_values", column=column)
        return bars_svg(chart_id, [c for _, c in ranked], title, desc, (ranked[0][0], ranked[-1][0]))
    return None
