"""Named model scores that rank one model against another: the trainer's search and the
evaluator's champion/challenger comparison use this one table.

Supervised scores take ``(y_true, y_pred)``; ``silhouette`` takes ``(x, labels)``.
scikit-learn is imported on the first score, not with the table: the registry checks policy
metric names against it and needs no second of start-up for scikit-learn's import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@functools.cache
def _skm() -> Any:  # scikit-learn ships no types
    from sklearn import metrics

    return metrics


@dataclass(frozen=True)
class Scorer:
    fn: Callable[..., float]
    higher_is_better: bool
    #: False for scores of (x, labels) rather than (y_true, y_pred).
    supervised: bool = True


SCORERS: dict[str, Scorer] = {
    "r2": Scorer(lambda y, p: float(_skm().r2_score(y, p)), True),
    "mse": Scorer(lambda y, p: float(_skm().mean_squared_error(y, p)), False),
    "rmse": Scorer(lambda y, p: float(np.sqrt(_skm().mean_squared_error(y, p))), False),
    "mae": Scorer(lambda y, p: float(_skm().mean_absolute_error(y, p)), False),
    "accuracy": Scorer(lambda y, p: float(_skm().accuracy_score(y, p)), True),
    "balanced_accuracy": Scorer(lambda y, p: float(_skm().balanced_accuracy_score(y, p)), True),
    "f1_macro": Scorer(lambda y, p: float(_skm().f1_score(y, p, average="macro", zero_division=0)), True),
    "silhouette": Scorer(lambda x, labels: float(_skm().silhouette_score(x, labels)), True, supervised=False),
}
