"""Metrics equal sklearn's on real bundled datasets; bootstrap and cross-validation behave."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from sklearn import datasets
from sklearn import metrics as skm
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, train_test_split

from lepton_evaluator.metrics import (
    HIGHER_IS_BETTER,
    Report,
    bootstrap_ci,
    classification_metrics,
    clustering_metrics,
    cross_validate,
    headline,
    regression_metrics,
)


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y = datasets.load_diabetes(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0)
    return yte, LinearRegression().fit(xtr, ytr).predict(xte)


def _classify(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=5000).fit(xtr, ytr)
    return yte, model.predict(xte), model.predict_proba(xte), list(model.classes_)


@pytest.fixture(scope="module", params=["breast_cancer", "iris"])
def classified(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    return _classify(request.param)


def test_regression_metrics_equal_sklearn(diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    yt, yp = diabetes
    m = regression_metrics(yt, yp)
    residuals = yt - yp
    expected = {
        "mse": skm.mean_squared_error(yt, yp),
        "rmse": skm.root_mean_squared_error(yt, yp),
        "mae": skm.mean_absolute_error(yt, yp),
        "mape": skm.mean_absolute_percentage_error(yt, yp),
        "r2": skm.r2_score(yt, yp),
        "explained_variance": skm.explained_variance_score(yt, yp),
        "residual_mean": residuals.mean(),
        "residual_std": residuals.std(),
        "residual_max_abs": skm.max_error(yt, yp),
    }
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key
        assert isinstance(m[key], float)


def test_regression_mape_skipped_on_zero_targets() -> None:
    m = regression_metrics([0.0, 1.0, 2.0], [0.1, 1.1, 1.9])
    assert "mape" not in m
    assert m["mae"] == pytest.approx(0.1)


def test_classification_metrics_equal_sklearn(classified: tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]) -> None:
    yt, yp, proba, classes = classified
    report = classification_metrics(yt, yp, proba, classes)
    assert isinstance(report, Report)
    m = report.metrics
    expected = {
        "accuracy": skm.accuracy_score(yt, yp),
        "balanced_accuracy": skm.balanced_accuracy_score(yt, yp),
        "log_loss": skm.log_loss(yt, proba),
    }
    for average in ("macro", "weighted"):
        expected[f"precision_{average}"] = skm.precision_score(yt, yp, average=average)
        expected[f"recall_{average}"] = skm.recall_score(yt, yp, average=average)
        expected[f"f1_{average}"] = skm.f1_score(yt, yp, average=average)
    if len(classes) == 2:
        expected["roc_auc"] = skm.roc_auc_score(yt, proba[:, 1])
    else:
        expected["roc_auc"] = skm.roc_auc_score(yt, proba, multi_class="ovr", average="macro")
    assert m.keys() == expected.keys()
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key
    assert set(m) <= set(HIGHER_IS_BETTER)

    assert report.confusion == skm.confusion_matrix(yt, yp, labels=classes).tolist()
    p, r, f, s = skm.precision_recall_fscore_support(yt, yp, labels=classes)
    assert list(report.per_class) == [str(c) for c in classes]
    for i, c in enumerate(classes):
        row = report.per_class[str(c)]
        assert row == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
        assert set(row) <= set(HIGHER_IS_BETTER)


def test_classification_without_or_with_invalid_proba() -> None:
    yt, yp, proba, classes = _classify("iris")
    assert "roc_auc" not in classification_metrics(yt, yp, None, classes).metrics
    bad = classification_metrics(yt, yp, proba[:, :2], classes).metrics
    assert "roc_auc" not in bad and "log_loss" not in bad
    assert "roc_auc" not in classification_metrics(yt, yp, proba * 2, classes).metrics


def test_confusion_follows_classes_order() -> None:
    yt = np.array(["a", "b", "b", "c"])
    yp = np.array(["a", "b", "c", "c"])
    report = classification_metrics(yt, yp, None, ["c", "b", "a"])
    assert report.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report.per_class["b"]["support"] == 2.0


def test_clustering_on_iris() -> None:
    x, _ = datasets.load_iris(return_X_y=True)
    labels = KMeans(3, n_init=10, random_state=0).fit_predict(x)
    m = clustering_metrics(x, labels)
    assert m == {"clusters": 3.0, "silhouette": pytest.approx(skm.silhouette_score(x, labels))}
    assert clustering_metrics(x, np.zeros(len(x))) == {"clusters": 1.0}
    assert clustering_metrics(x[:3], [0, 1, 2]) == {"clusters": 3.0}


def test_headline_and_directions() -> None:
    assert (headline("regression"), headline("classification"), headline("clustering")) == (
        "r2",
        "accuracy",
        "silhouette",
    )
    with pytest.raises(ValueError):
        headline("ranking")
    assert HIGHER_IS_BETTER["r2"] and not HIGHER_IS_BETTER["rmse"] and not HIGHER_IS_BETTER["log_loss"]


def test_bootstrap_ci_contains_point_and_is_reproducible(diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    yt, yp = diabetes
    low, high = bootstrap_ci(yt, yp, skm.r2_score, n=500, seed=3)
    assert low < skm.r2_score(yt, yp) < high
    assert bootstrap_ci(yt, yp, skm.r2_score, n=500, seed=3) == (low, high)
    assert bootstrap_ci(yt, yp, skm.r2_score, n=500, seed=4) != (low, high)


def test_bootstrap_vectorised_equals_loop(diabetes: tuple[np.ndarray, np.ndarray]) -> None:
    """The fast path for known sklearn metrics gives what calling the metric per resample gives."""
    yt, yp = diabetes
    for metric in (skm.r2_score, skm.mean_squared_error, skm.mean_absolute_error):
        fast = bootstrap_ci(yt, yp, metric, n=200, seed=1)
        slow = bootstrap_ci(yt, yp, lambda a, b, m=metric: float(m(a, b)), n=200, seed=1)
        assert fast == pytest.approx(slow, rel=1e-9)
    yc, pc, _, _ = _classify("iris")
    fast = bootstrap_ci(yc, pc, skm.accuracy_score, n=200, seed=1)
    assert fast == pytest.approx(bootstrap_ci(yc, pc, lambda a, b: float(skm.accuracy_score(a, b)), n=200, seed=1))


def test_bootstrap_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for rows in (100, 400, 1600):
        yt = rng.normal(size=rows)
        yp = yt + rng.normal(scale=0.5, size=rows)
        low, high = bootstrap_ci(yt, yp, skm.r2_score, n=500)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


@pytest.mark.parametrize("metric", [skm.r2_score, skm.accuracy_score])
def test_bootstrap_is_fast(metric: Any) -> None:
    rng = np.random.default_rng(0)
    if metric is skm.accuracy_score:
        yt = rng.integers(0, 3, size=1000)
        yp = np.where(rng.random(1000) < 0.8, yt, rng.integers(0, 3, size=1000))
    else:
        yt = rng.normal(size=1000)
        yp = yt + rng.normal(scale=0.5, size=1000)
    start = time.perf_counter()
    low, high = bootstrap_ci(yt, yp, metric, n=1000)
    assert time.perf_counter() - start < 1.0
    assert low < metric(yt, yp) < high


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([], [], skm.r2_score)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], [1.0], skm.r2_score)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], [1.0, 2.0], skm.r2_score, alpha=1.5)


def test_cross_validate_regression_matches_sklearn() -> None:
    x, y = datasets.load_diabetes(return_X_y=True)
    got = cross_validate(LinearRegression, x, y, "regression", k=5, seed=7)
    cv = KFold(5, shuffle=True, random_state=7)
    r2 = cross_val_score(LinearRegression(), x, y, cv=cv, scoring="r2")
    rmse = -cross_val_score(LinearRegression(), x, y, cv=cv, scoring="neg_root_mean_squared_error")
    assert got.keys() == {"r2", "rmse"}
    assert got["r2"] == pytest.approx((r2.mean(), r2.std()))
    assert got["rmse"] == pytest.approx((rmse.mean(), rmse.std()))


def test_cross_validate_classification_matches_sklearn() -> None:
    x, y = datasets.load_iris(return_X_y=True)

    def make() -> LogisticRegression:
        return LogisticRegression(max_iter=5000)

    got = cross_validate(make, x, y, "classification", k=4, seed=2)
    scores = cross_val_score(make(), x, y, cv=StratifiedKFold(4, shuffle=True, random_state=2), scoring="accuracy")
    assert got == {"accuracy": pytest.approx((scores.mean(), scores.std()))}


def test_cross_validate_clustering() -> None:
    x, _ = datasets.load_iris(return_X_y=True)
    got = cross_validate(lambda: KMeans(3, n_init=10, random_state=0), x, None, "clustering", k=3)
    mean, std = got["silhouette"]
    assert 0.4 < mean < 0.7 and std >= 0
