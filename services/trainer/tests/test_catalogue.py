"""Hyper-parameter validation: every bad value names the parameter and what is allowed."""

from __future__ import annotations

import pytest
from sklearn.linear_model import Ridge

from lepton_core.errors import InvalidArgument
from lepton_trainer.catalogue import CATALOGUE, algorithm


def test_defaults_and_parsed_values() -> None:
    est, used = algorithm("ridge").make({"alpha": "0.5", "fit_intercept": "false"})
    assert isinstance(est, Ridge) and est.alpha == 0.5 and est.fit_intercept is False
    assert used == {"alpha": 0.5, "fit_intercept": False}
    _, defaults = algorithm("linear_regression").make({})
    assert defaults == {"fit_intercept": True}


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"alpha": "-0.1"}, "params.alpha", "outside the allowed range [0.0, 1000000000.0]"),
        ({"alpha": "nan"}, "params.alpha", "finite"),
        ({"alpha": "big"}, "params.alpha", "expected a float"),
        ({"fit_intercept": "maybe"}, "params.fit_intercept", "expected a bool"),
        ({"max_depth": "3"}, "params.max_depth", "has no parameter 'max_depth'"),
    ],
)
def test_bad_parameters(params: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        algorithm("ridge").make(params)
    assert err.value.field == field
    assert words in err.value.message


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="available: linear_regression, ridge") as err:
        algorithm("xgboost")
    assert err.value.field == "algorithm"
    assert set(CATALOGUE) == {"linear_regression", "ridge"}
