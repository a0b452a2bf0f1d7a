"""Model metrics as pure functions: regression, classification, clustering, bootstrap intervals, cross-validation.

Everything here works on in-memory arrays and returns plain Python values, so results can be stored as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn import metrics as skm
from sklearn.model_selection import KFold, StratifiedKFold

REGRESSION = "regression"
CLASSIFICATION = "classification"
CLUSTERING = "clustering"

_HEADLINES = {REGRESSION: "r2", CLASSIFICATION: "accuracy", CLUSTERING: "silhouette"}

HIGHER_IS_BETTER: dict[str, bool] = {
    # regression
    "mse": False,
    "rmse": False,
    "mae": False,
    "mape": False,
    "r2": True,
    "explained_variance": True,
    # Residual summaries: closer to zero (smaller magnitude) is better.
    "residual_mean": False,
    "residual_std": False,
    "residual_max_abs": False,
    # classification (``metrics`` and ``per_class`` keys)
    "accuracy": True,
    "balanced_accuracy": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "precision_weighted": True,
    "recall_weighted": True,
    "f1_weighted": True,
    "roc_auc": True,
    "log_loss": False,
    "precision": True,
    "recall": True,
    "f1": True,
    "support": True,  # a count, informational
    # clustering
    "clusters": True,  # a count, informational
    "silhouette": True,
}
"""Direction of every metric name this module produces."""

# Above this many resampled cells per chunk, the vectorised bootstrap works chunk by chunk.
_BOOTSTRAP_CHUNK_CELLS = 4_000_000


@dataclass
class Report:
    """Classification metrics.

    Attributes:
        metrics: Overall scores (accuracy, balanced accuracy, macro and weighted precision/recall/F1, and
            ``roc_auc``/``log_loss`` when valid probabilities were given).
        per_class: ``precision``, ``recall``, ``f1`` and ``support`` for each class, keyed by ``str(label)``.
        confusion: Counts with rows the true class and columns the predicted class, both in ``classes`` order.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)


def headline(task: str) -> str:
    """The metric that ranks models of a task.

    Args:
        task: ``"regression"``, ``"classification"`` or ``"clustering"``.

    Returns:
        ``"r2"``, ``"accuracy"`` or ``"silhouette"``.

    Raises:
        ValueError: For an unknown task.
    """
    try:
        return _HEADLINES[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_HEADLINES)}") from None


def regression_metrics(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> dict[str, float]:
    """Regression scores and residual summaries.

    Residuals are ``y_true - y_pred``. ``mape`` is left out when ``y_true`` holds a zero, where it is unbounded.

    Args:
        y_true: Observed targets.
        y_pred: Predicted targets, same shape.

    Returns:
        ``mse``, ``rmse``, ``mae``, ``mape`` (when defined), ``r2``, ``explained_variance``, ``residual_mean``,
        ``residual_std`` and ``residual_max_abs``.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    mse = float(skm.mean_squared_error(yt, yp))
    out = {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(yt, yp)),
    }
    if not np.any(yt == 0):
        out["mape"] = float(skm.mean_absolute_percentage_error(yt, yp))
    residuals = yt - yp
    out |= {
        "r2": float(skm.r2_score(yt, yp)),
        "explained_variance": float(skm.explained_variance_score(yt, yp)),
        "residual_mean": float(np.mean(residuals)),
        "residual_std": float(np.std(residuals)),
        "residual_max_abs": float(np.max(np.abs(residuals))) if residuals.size else 0.0,
    }
    return out


def _valid_proba(proba: npt.NDArray[Any], rows: int, n_classes: int) -> bool:
    if proba.ndim != 2 or proba.shape != (rows, n_classes) or n_classes < 2:
        return False
    if not np.all(np.isfinite(proba)) or np.any(proba < 0) or np.any(proba > 1):
        return False
    return bool(np.allclose(proba.sum(axis=1), 1.0, atol=1e-6))


def classification_metrics(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, proba: npt.NDArray[Any] | None, classes: Sequence[Any]
) -> Report:
    """Classification scores, per-class scores and the confusion matrix.

    Precision, recall and F1 are computed over ``classes`` (so absent classes count) with zero division as 0.
    ``roc_auc`` and ``log_loss`` are added only when ``proba`` has one column per class in ``classes`` order,
    rows of probabilities summing to 1, and ``y_true`` holds at least two classes: binary AUC scores
    ``proba[:, 1]`` (the positive class is ``classes[1]``), multiclass AUC is one-vs-rest macro.

    Args:
        y_true: Observed labels.
        y_pred: Predicted labels.
        proba: Predicted class probabilities, shape ``(rows, len(classes))``, or None.
        classes: Every label, in the column order of ``proba`` and of the confusion matrix.

    Returns:
        The :class:`Report`.
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    labels = list(classes)
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(yt, yp)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(yt, yp)),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(yt, yp, labels=labels, average=average, zero_division=0)
        out |= {f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)}

    if proba is not None:
        pr = np.asarray(proba, dtype=np.float64)
        if _valid_proba(pr, len(yt), len(labels)) and len(np.unique(yt)) >= 2:
            try:
                if len(labels) == 2:
                    auc = skm.roc_auc_score(yt == labels[1], pr[:, 1])
                else:
                    auc = skm.roc_auc_score(yt, pr, multi_class="ovr", average="macro", labels=labels)
                out["roc_auc"] = float(auc)
                out["log_loss"] = float(skm.log_loss(yt, pr, labels=labels))
            except ValueError:
                # e.g. a class of ``classes`` absent from y_true makes one-vs-rest AUC undefined.
                out.pop("roc_auc", None)

    p, r, f, s = skm.precision_recall_fscore_support(yt, yp, labels=labels, average=None, zero_division=0)
    per_class = {
        str(label): {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": float(s[i])}
        for i, label in enumerate(labels)
    }
    confusion = skm.confusion_matrix(yt, yp, labels=labels)
    return Report(metrics=out, per_class=per_class, confusion=[[int(c) for c in row] for row in confusion])


def clustering_metrics(x: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, float]:
    """Cluster count and, where defined (``2 <= clusters < rows``), the silhouette score.

    Args:
        x: Feature rows, shape ``(rows, features)``.
        labels: Cluster label of each row.

    Returns:
        ``clusters`` and, when defined, ``silhouette``.
    """
    lab = np.asarray(labels)
    n_clusters = len(np.unique(lab))
    out = {"clusters": float(n_clusters)}
    if 2 <= n_clusters < len(lab):
        out["silhouette"] = float(skm.silhouette_score(np.asarray(x), lab))
    return out


def _r2_rows(yt: npt.NDArray[Any], yp: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    ss_res = np.sum((yt - yp) ** 2, axis=1)
    ss_tot = np.sum((yt - yt.mean(axis=1, keepdims=True)) ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    # sklearn's force_finite: a constant target scores 1 when predicted exactly, else 0.
    return np.where(ss_tot == 0, np.where(ss_res == 0, 1.0, 0.0), r2)


def _accuracy_rows(yt: npt.NDArray[Any], yp: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return np.asarray(np.mean(yt == yp, axis=1), dtype=np.float64)


def _mse_rows(yt: npt.NDArray[Any], yp: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return np.asarray(np.mean((yt - yp) ** 2, axis=1), dtype=np.float64)


def _mae_rows(yt: npt.NDArray[Any], yp: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return np.asarray(np.mean(np.abs(yt - yp), axis=1), dtype=np.float64)


def _rmse_rows(yt: npt.NDArray[Any], yp: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return np.sqrt(_mse_rows(yt, yp))


_RowMetric = Callable[[npt.NDArray[Any], npt.NDArray[Any]], npt.NDArray[np.float64]]

# Row-wise equivalents of common sklearn metrics, applied to a whole batch of resamples at once.
_VECTORISED: dict[Any, _RowMetric] = {
    skm.r2_score: _r2_rows,
    skm.accuracy_score: _accuracy_rows,
    skm.mean_squared_error: _mse_rows,
    skm.mean_absolute_error: _mae_rows,
    skm.root_mean_squared_error: _rmse_rows,
}


def bootstrap_ci(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    metric: Callable[[npt.NDArray[Any], npt.NDArray[Any]], float],
    n: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric, resampling rows with replacement.

    The resample indices are drawn in one go from ``numpy.random.default_rng(seed)``, so the interval is
    reproducible. ``r2_score``, ``accuracy_score``, ``mean_squared_error``, ``mean_absolute_error`` and
    ``root_mean_squared_error`` from ``sklearn.metrics`` (with default arguments) are evaluated for all resamples
    at once; any other callable is called once per resample. Resamples where the metric is not finite are dropped.

    Args:
        y_true: Observed values, first axis the rows.
        y_pred: Predicted values, same number of rows.
        metric: ``metric(y_true, y_pred) -> float``.
        n: Number of resamples.
        alpha: One minus the coverage; the interval spans the ``alpha/2`` and ``1 - alpha/2`` quantiles.
        seed: Seed of the resampling.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no resample gave a finite value.

    Raises:
        ValueError: For no rows, mismatched rows, ``n < 1`` or ``alpha`` outside (0, 1).
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    rows = len(yt)
    if rows == 0 or len(yp) != rows:
        raise ValueError(f"need equally many (and some) rows, got {rows} and {len(yp)}")
    if n < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    idx = np.random.default_rng(seed).integers(0, rows, size=(n, rows))
    fast = _VECTORISED.get(metric) if yt.ndim == 1 and yp.ndim == 1 else None
    if fast is not None:
        step = max(1, _BOOTSTRAP_CHUNK_CELLS // rows)
        stats = np.concatenate([fast(yt[idx[i : i + step]], yp[idx[i : i + step]]) for i in range(0, n, step)])
    else:
        stats = np.array([float(metric(yt[i], yp[i])) for i in idx], dtype=np.float64)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def cross_validate(
    make_estimator: Callable[[], Any],
    x: npt.ArrayLike,
    y: npt.ArrayLike | None,
    task: str,
    k: int = 5,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """K-fold cross-validation of the headline metric (and ``rmse`` for regression).

    Folds come from ``StratifiedKFold`` for classification and ``KFold`` otherwise, both shuffled with ``seed``.
    A fresh estimator is fitted on each training fold and scored on its held-out fold; clustering fits on the
    training fold and scores the silhouette of the held-out fold's predicted labels (``y`` may be None).

    Args:
        make_estimator: Builds a fresh, unfitted estimator.
        x: Feature rows.
        y: Targets (None allowed for clustering).
        task: ``"regression"``, ``"classification"`` or ``"clustering"``.
        k: Number of folds.
        seed: Seed of the shuffle.

    Returns:
        Metric name to ``(mean, std)`` over the folds (population std, as ``numpy.std``).

    Raises:
        ValueError: For an unknown task, or a missing ``y`` for a supervised task.
    """
    name = headline(task)
    xa = np.asarray(x)
    ya = None if y is None else np.asarray(y)
    if ya is None and task != CLUSTERING:
        raise ValueError(f"{task} needs targets")
    splitter = (
        StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        if task == CLASSIFICATION
        else KFold(n_splits=k, shuffle=True, random_state=seed)
    )
    scores: dict[str, list[float]] = {name: []}
    if task == REGRESSION:
        scores["rmse"] = []
    for train, test in splitter.split(xa, ya):
        estimator = make_estimator()
        if task == CLUSTERING:
            estimator.fit(xa[train])
            labels = np.asarray(estimator.predict(xa[test]))
            scores[name].append(clustering_metrics(xa[test], labels).get("silhouette", float("nan")))
            continue
        assert ya is not None
        estimator.fit(xa[train], ya[train])
        predicted = np.asarray(estimator.predict(xa[test]))
        if task == CLASSIFICATION:
            scores[name].append(float(skm.accuracy_score(ya[test], predicted)))
        else:
            scores[name].append(float(skm.r2_score(ya[test], predicted)))
            scores["rmse"].append(float(skm.root_mean_squared_error(ya[test], predicted)))
    return {key: (float(np.mean(vals)), float(np.std(vals))) for key, vals in scores.items()}
