"""Hyper-parameter validation: every bad value names the parameter and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import Ridge

from lepton_core.errors import InvalidArgument
from lepton_trainer.catalogue import CATALOGUE, CLUSTERING, algorithm


def test_defaults_and_parsed_values() -> None:
    est, used = algorithm("ridge").make({"alpha": "0.5", "fit_intercept": "false"})
    assert isinstance(est, Ridge) and est.alpha == 0.5 and est.fit_intercept is False
    assert used == {"alpha": 0.5, "fit_intercept": False}
    forest, _ = algorithm("random_forest_classifier").make({"max_depth": "none", "max_features": "all"}, seed=7)
    assert forest.max_depth is None and forest.max_features is None and forest.random_state == 7


@pytest.mark.parametrize(
    ("name", "params", "field", "words"),
    [
        ("ridge", {"alpha": "-0.1"}, "params.alpha", "outside the allowed range: expected a float in [0, 1e+09]"),
        ("ridge", {"alpha": "nan"}, "params.alpha", "expected a float"),
        ("ridge", {"alpha": "big"}, "params.alpha", "got 'big'; expected a float"),
        ("ridge", {"fit_intercept": "maybe"}, "params.fit_intercept", "expected true or false"),
        ("ridge", {"max_depth": "3"}, "params.max_depth", "ridge has no parameter 'max_depth'"),
        ("svc", {"kernel": "cubic"}, "params.kernel", "expected one of linear, rbf, poly, sigmoid"),
        ("kmeans", {"n_clusters": "0"}, "params.n_clusters", "expected a int in [1, 10000]"),
        ("decision_tree_classifier", {"max_depth": "-1"}, "params.max_depth", "or none"),
    ],
)
def test_bad_parameters(name: str, params: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        algorithm(name).make(params)
    assert err.value.field == field
    assert words in err.value.message, err.value.message


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="available: custom:clipped_ridge, decision_tree_classifier") as err:
        algorithm("xgboost")
    assert err.value.field == "algorithm"


def test_every_default_estimator_fits() -> None:
    x, y = load_iris(return_X_y=True)
    assert len([a for a in CATALOGUE if not a.startswith("custom:")]) == 19 and "custom:clipped_ridge" in CATALOGUE
    for algo in CATALOGUE.values():
        est, _ = algo.make({}, seed=0)
        est.fit(x) if algo.task == CLUSTERING else est.fit(x, y)
        assert np.asarray(est.predict(x[:3])).shape == (3,), algo.name


def test_custom_models_come_from_entry_points() -> None:
    clipped = CATALOGUE["custom:clipped_ridge"]
    assert clipped.task == "regression"
    assert {k: (p.kind, p.default) for k, p in clipped.params.items()} == {
        "alpha": (float, 1.0),
        "margin": (float, 0.0),
    }
    est, used = clipped.make({"alpha": "0.5"})
    assert type(est).__name__ == "ClippedRidge" and used == {"alpha": 0.5, "margin": 0.0}
    with pytest.raises(InvalidArgument, match="expected a float"):
        clipped.make({"margin": "wide"})
