"""Evaluation plots rendered to PNG bytes (matplotlib's Agg canvas, 640x480 pixels).

Figures are built with the object-oriented API on an explicit ``FigureCanvasAgg``, never through pyplot: nothing
depends on (or changes) the process's matplotlib backend, nothing is registered in pyplot's figure list, and each
figure is cleared once rendered, so plotting from a headless service leaks nothing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

FIGSIZE = (6.4, 4.8)
DPI = 100


def _new() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    """Renders ``fig`` and clears it; no ``bbox_inches="tight"`` so the size stays exactly 640x480."""
    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        return buf.getvalue()
    finally:
        fig.clear()


def _binary_or_ovr(
    y_true: npt.ArrayLike, proba: npt.ArrayLike, classes: Sequence[Any]
) -> list[tuple[str, npt.NDArray[np.bool_], npt.NDArray[np.float64]]]:
    """``(label, is_label, score)`` curves: the positive class ``classes[1]`` if binary, else one per class."""
    yt = np.asarray(y_true)
    pr = np.asarray(proba, dtype=np.float64)
    if len(classes) == 2:
        return [(str(classes[1]), yt == classes[1], pr[:, 1])]
    return [(str(c), yt == c, pr[:, i]) for i, c in enumerate(classes)]


def confusion_matrix_png(confusion: Sequence[Sequence[int]], labels: Sequence[Any]) -> bytes:
    """Heatmap of a confusion matrix with counts in the cells.

    Args:
        confusion: Counts, rows true and columns predicted, in ``labels`` order.
        labels: Class labels.

    Returns:
        PNG bytes.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    names = [str(label) for label in labels]
    fig, ax = _new()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("Confusion matrix")
    if cm.size and len(names) <= 30:
        threshold = cm.max() / 2
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black")
    return _png(fig)


def roc_png(y_true: npt.ArrayLike, proba: npt.ArrayLike, classes: Sequence[Any]) -> bytes:
    """ROC curve (binary) or one-vs-rest ROC curves (multiclass), with AUC in the legend.

    Args:
        y_true: Observed labels.
        proba: Class probabilities, one column per class in ``classes`` order.
        classes: Class labels.

    Returns:
        PNG bytes.
    """
    fig, ax = _new()
    for label, positive, score in _binary_or_ovr(y_true, proba, classes):
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positive, score)
        ax.plot(fpr, tpr, label=f"{label} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="False positive rate", ylabel="True positive rate", title="ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def pr_png(y_true: npt.ArrayLike, proba: npt.ArrayLike, classes: Sequence[Any]) -> bytes:
    """Precision-recall curve (binary) or one-vs-rest curves (multiclass), with average precision in the legend.

    Args:
        y_true: Observed labels.
        proba: Class probabilities, one column per class in ``classes`` order.
        classes: Class labels.

    Returns:
        PNG bytes.
    """
    fig, ax = _new()
    for label, positive, score in _binary_or_ovr(y_true, proba, classes):
        if not positive.any():
            continue
        precision, recall, _ = skm.precision_recall_curve(positive, score)
        ap = skm.average_precision_score(positive, score)
        ax.plot(recall, precision, label=f"{label} (AP {ap:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title="Precision-recall")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    return _png(fig)


def calibration_png(y_true: npt.ArrayLike, proba: npt.ArrayLike, classes: Sequence[Any], bins: int = 10) -> bytes:
    """Reliability diagram: observed frequency against mean predicted probability, per class if multiclass.

    Args:
        y_true: Observed labels.
        proba: Class probabilities, one column per class in ``classes`` order.
        classes: Class labels.
        bins: Number of equal-width probability bins.

    Returns:
        PNG bytes.
    """
    fig, ax = _new()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="Perfectly calibrated")
    for label, positive, score in _binary_or_ovr(y_true, proba, classes):
        if positive.all() or not positive.any():
            continue
        observed, predicted = calibration_curve(positive, np.clip(score, 0.0, 1.0), n_bins=bins)
        ax.plot(predicted, observed, marker="o", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Mean predicted probability", ylabel="Observed frequency")
    ax.set_title("Calibration")
    ax.legend(loc="upper left", fontsize="small")
    return _png(fig)


def predicted_vs_actual_png(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> bytes:
    """Scatter of predictions against observed values, with the identity line.

    Args:
        y_true: Observed targets.
        y_pred: Predicted targets.

    Returns:
        PNG bytes.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    fig, ax = _new()
    ax.scatter(yt, yp, s=10, alpha=0.6)
    if yt.size:
        lo, hi = float(min(yt.min(), yp.min())), float(max(yt.max(), yp.max()))
        ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="Actual", ylabel="Predicted", title="Predicted vs actual")
    return _png(fig)


def residuals_png(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> bytes:
    """Residuals (``y_true - y_pred``) against predictions, with the zero line.

    Args:
        y_true: Observed targets.
        y_pred: Predicted targets.

    Returns:
        PNG bytes.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    fig, ax = _new()
    ax.scatter(yp, yt - yp, s=10, alpha=0.6)
    ax.axhline(0.0, linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="Predicted", ylabel="Residual (actual - predicted)", title="Residuals")
    return _png(fig)


def feature_importance_png(names: Sequence[str], importances: npt.ArrayLike, top: int = 20) -> bytes:
    """Horizontal bars of the ``top`` largest importances, largest at the top.

    Args:
        names: Feature names.
        importances: One importance per feature.
        top: How many features to show.

    Returns:
        PNG bytes.
    """
    values = np.asarray(importances, dtype=np.float64).ravel()
    order = np.argsort(values)[::-1][:top]
    fig, ax = _new()
    ax.barh([str(names[i]) for i in order][::-1], values[order][::-1])
    ax.set(xlabel="Importance", title=f"Feature importance (top {len(order)})")
    ax.tick_params(axis="y", labelsize="small")
    return _png(fig)


def _importances(model: Any, n_features: int) -> npt.NDArray[np.float64] | None:
    """``feature_importances_``, else ``|coef_|`` averaged over classes/outputs; None if absent or mis-sized."""
    raw = getattr(model, "feature_importances_", None)
    if raw is None:
        coef = getattr(model, "coef_", None)
        if coef is None:
            return None
        arr = np.abs(np.asarray(coef, dtype=np.float64))
        raw = arr.reshape(-1, arr.shape[-1]).mean(axis=0) if arr.ndim > 1 else arr
    values = np.asarray(raw, dtype=np.float64).ravel()
    return values if values.size == n_features else None


def plots_for(
    task: str,
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    proba: npt.ArrayLike | None,
    classes: Sequence[Any] | None,
    feature_names: Sequence[str] | None,
    model: Any,
) -> dict[str, bytes]:
    """The plots that fit a task, by name.

    Regression gives ``predicted_vs_actual`` and ``residuals``; classification gives ``confusion_matrix`` and,
    when ``proba`` is given, ``roc``, ``pr`` and ``calibration``. Any task adds ``feature_importance`` when
    ``model`` has ``feature_importances_`` or ``coef_`` (absolute, averaged over classes) matching
    ``feature_names``.

    Args:
        task: ``"regression"``, ``"classification"`` or ``"clustering"``.
        y_true: Observed targets or labels.
        y_pred: Predicted targets or labels.
        proba: Class probabilities (classification), one column per class in ``classes`` order, or None.
        classes: Class labels (classification); derived from the labels when None.
        feature_names: Names of the model's features, or None to skip feature importance.
        model: The fitted model.

    Returns:
        Plot name to PNG bytes.
    """
    out: dict[str, bytes] = {}
    if task == "regression":
        out["predicted_vs_actual"] = predicted_vs_actual_png(y_true, y_pred)
        out["residuals"] = residuals_png(y_true, y_pred)
    elif task == "classification":
        yt, yp = np.asarray(y_true), np.asarray(y_pred)
        labels = list(classes) if classes is not None else list(np.unique(np.concatenate([yt, yp])))
        confusion = skm.confusion_matrix(yt, yp, labels=labels)
        out["confusion_matrix"] = confusion_matrix_png(confusion.tolist(), labels)
        if proba is not None:
            out["roc"] = roc_png(y_true, proba, labels)
            out["pr"] = pr_png(y_true, proba, labels)
            out["calibration"] = calibration_png(y_true, proba, labels)
    if feature_names is not None and model is not None:
        values = _importances(model, len(feature_names))
        if values is not None:
            out["feature_importance"] = feature_importance_png(feature_names, values)
    return out
