"""ClippedRidge: ridge regression whose predictions stay inside the range seen in training.

A small, realistic custom model: a scikit-learn-compatible estimator (fit/predict,
parameters in ``__init__``) that Lepton trains, stores, evaluates and serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge


class ClippedRidge(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Ridge regression with predictions clipped to the training target range.

    Args:
        alpha: Ridge's L2 strength.
        margin: How far outside the training range predictions may go, as a share of it.
    """

    def __init__(self, alpha: float = 1.0, margin: float = 0.0) -> None:
        self.alpha = alpha
        self.margin = margin

    def fit(self, x: Any, y: Any) -> ClippedRidge:
        y = np.asarray(y, dtype=np.float64)
        self.ridge_ = Ridge(alpha=self.alpha).fit(x, y)
        span = float(y.max() - y.min())
        self.low_ = float(y.min()) - self.margin * span
        self.high_ = float(y.max()) + self.margin * span
        self.n_features_in_ = self.ridge_.n_features_in_
        return self

    def predict(self, x: Any) -> Any:
        return np.clip(self.ridge_.predict(x), self.low_, self.high_)
