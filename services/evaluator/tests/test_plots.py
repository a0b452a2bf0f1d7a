"""Plots are 640x480 PNGs, the right set per task, and leave no figure open."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from sklearn import datasets
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import confusion_matrix

from lepton_evaluator import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (640, 480)


@pytest.fixture(autouse=True)
def no_figures_left() -> Iterator[None]:
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before == []


def _fit(name: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, list[Any], list[str]]:
    data = getattr(datasets, f"load_{name}")()
    model = LogisticRegression(max_iter=5000).fit(data.data, data.target)
    return (
        model,
        data.target,
        model.predict(data.data),
        model.predict_proba(data.data),
        list(model.classes_),
        [str(n) for n in data.feature_names],
    )


@pytest.mark.parametrize("name", ["breast_cancer", "iris"])
def test_classification_plots(name: str) -> None:
    model, yt, yp, proba, classes, features = _fit(name)
    assert_png(plots.confusion_matrix_png(confusion_matrix(yt, yp, labels=classes).tolist(), classes))
    for fn in (plots.roc_png, plots.pr_png, plots.calibration_png):
        assert_png(fn(yt, proba, classes))
    got = plots.plots_for("classification", yt, yp, proba, classes, features, model)
    assert set(got) == {"confusion_matrix", "roc", "pr", "calibration", "feature_importance"}
    for data in got.values():
        assert_png(data)


def test_classification_without_proba_or_importances() -> None:
    yt = np.array(["x", "y", "y", "x"])
    got = plots.plots_for("classification", yt, yt[::-1], None, ["x", "y"], ["f"], object())
    assert set(got) == {"confusion_matrix"}
    assert_png(got["confusion_matrix"])


def test_regression_plots() -> None:
    x, y = datasets.load_diabetes(return_X_y=True)
    model = LinearRegression().fit(x, y)
    yp = model.predict(x)
    assert_png(plots.predicted_vs_actual_png(y, yp))
    assert_png(plots.residuals_png(y, yp))
    names = [f"f{i}" for i in range(x.shape[1])]
    got = plots.plots_for("regression", y, yp, None, None, names, model)
    assert set(got) == {"predicted_vs_actual", "residuals", "feature_importance"}
    for data in got.values():
        assert_png(data)
    assert set(plots.plots_for("regression", y, yp, None, None, None, model)) == {"predicted_vs_actual", "residuals"}


def test_feature_importance_from_trees_and_top() -> None:
    data = datasets.load_breast_cancer()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(data.data, data.target)
    names = [str(n) for n in data.feature_names]
    assert_png(plots.feature_importance_png(names, model.feature_importances_, top=5))
    got = plots.plots_for("classification", data.target, model.predict(data.data), None, [0, 1], names, model)
    assert set(got) == {"confusion_matrix", "feature_importance"}


def test_importances_use_abs_coef_mean_over_classes() -> None:
    model, *_ = _fit("iris")
    values = plots._importances(model, 4)
    assert values is not None
    np.testing.assert_allclose(values, np.abs(model.coef_).mean(axis=0))
    assert plots._importances(model, 3) is None
