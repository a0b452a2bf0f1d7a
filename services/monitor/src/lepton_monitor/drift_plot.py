"""A drift report rendered to PNG bytes: reference against live distribution, one small panel per feature.

Like the evaluator's plots, the figure is built with the object-oriented API on an explicit
``FigureCanvasAgg``, never through pyplot, and cleared once rendered: nothing depends on or changes the
process's matplotlib backend, and nothing is left open.

The image is 640 pixels wide and ``ROW_PIXELS * rows + TITLE_PIXELS`` (``220 * rows + 60``) pixels high,
with :data:`COLUMNS` panels per row (fewer when there are fewer features), at 100 dpi; no
``bbox_inches="tight"``, so the size is exact.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lepton_monitor.drift import DRIFT, INSUFFICIENT_DATA, NUMERIC, OTHER, DriftReport, FeatureDrift

DPI = 100
WIDTH_PIXELS = 640
ROW_PIXELS = 220
TITLE_PIXELS = 60
COLUMNS = 3
REFERENCE_COLOR = "tab:blue"
LIVE_COLOR = "tab:orange"
_MAX_LABEL = 10


def figure_pixels(panels: int) -> tuple[int, int]:
    """Width and height in pixels of the image for ``panels`` panels.

    Args:
        panels: Features (plus the prediction) to draw; at least 1.

    Returns:
        ``(640, 220 * rows + 60)`` with ``rows = ceil(panels / 3)``.
    """
    rows = math.ceil(max(panels, 1) / COLUMNS)
    return WIDTH_PIXELS, ROW_PIXELS * rows + TITLE_PIXELS


def _shares(counts: Sequence[int]) -> npt.NDArray[np.float64]:
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    return values / total if total > 0 else values


def _title(result: FeatureDrift) -> tuple[str, str]:
    if result.verdict == INSUFFICIENT_DATA:
        return f"{result.name}\ninsufficient data (n={result.n_live})", "grey"
    psi = "n/a" if result.psi is None else f"{result.psi:.3f}"
    color = "tab:red" if result.verdict == DRIFT else "black"
    return f"{result.name}\nPSI {psi} · {result.verdict.replace('_', ' ')}", color


def _numeric(ax: Axes, result: FeatureDrift) -> None:
    edges = np.asarray(result.edges or [0.0, 1.0], dtype=np.float64)
    if edges[-1] <= edges[0]:  # a constant reference column: one zero-width bin, drawn one unit wide
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    ax.stairs(_shares(result.reference_counts), edges, fill=True, alpha=0.45, color=REFERENCE_COLOR, label="reference")
    ax.stairs(_shares(result.live_counts), edges, linewidth=1.5, color=LIVE_COLOR, label="live")


def _categorical(ax: Axes, result: FeatureDrift) -> None:
    labels = ["other" if c == OTHER else c for c in result.categories or []]
    positions = np.arange(len(labels))
    ax.bar(
        positions - 0.2,
        _shares(result.reference_counts),
        width=0.4,
        alpha=0.6,
        color=REFERENCE_COLOR,
        label="reference",
    )
    ax.bar(positions + 0.2, _shares(result.live_counts), width=0.4, color=LIVE_COLOR, label="live")
    short = [label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…" for label in labels]
    ax.set_xticks(positions, short, rotation=60, ha="right", fontsize=6)


def drift_png(report: DriftReport | Sequence[FeatureDrift], *, title: str = "Feature drift") -> bytes:
    """Reference and live shares over the same bins (or categories), one panel per feature.

    Each panel's title is the feature, its PSI and its verdict (red for drift, grey for insufficient
    data). The prediction column, when the report has one, comes last.

    Args:
        report: A drift report, or the feature results to draw.
        title: The figure's title.

    Returns:
        PNG bytes, of the size :func:`figure_pixels` gives.

    Raises:
        ValueError: When there is no feature to draw.
    """
    results = list(report) if not isinstance(report, DriftReport) else list(report.features)
    if isinstance(report, DriftReport) and report.prediction is not None:
        results.append(report.prediction)
    if not results:
        raise ValueError("report: no feature to draw")
    width, height = figure_pixels(len(results))
    rows = math.ceil(len(results) / COLUMNS)
    columns = min(COLUMNS, len(results))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    try:
        axes = fig.subplots(rows, columns, squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= len(results):
                ax.set_axis_off()
                continue
            result = results[k]
            if result.kind == NUMERIC:
                _numeric(ax, result)
            else:
                _categorical(ax, result)
            text, color = _title(result)
            ax.set_title(text, fontsize=8, color=color)
            ax.tick_params(labelsize=6)
            ax.set_ylabel("share", fontsize=7)
        axes.flat[0].legend(fontsize=6, loc="upper right")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    finally:
        fig.clear()


__all__ = ["COLUMNS", "DPI", "ROW_PIXELS", "TITLE_PIXELS", "WIDTH_PIXELS", "drift_png", "figure_pixels"]
