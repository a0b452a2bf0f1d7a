"""Model bundles and the shared hold-out split."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from lepton_core.errors import DataIntegrityError
from lepton_ml import artifacts, splits


def _model() -> LinearRegression:
    x, y = load_diabetes(return_X_y=True)
    return LinearRegression().fit(x, y)


def test_pack_round_trips_model_and_signature() -> None:
    model = _model()
    sig = artifacts.Signature(features=[f"f{i}" for i in range(10)], target="y", task="regression", algorithm="lr")
    loaded, loaded_sig = artifacts.unpack(artifacts.pack(model, sig))
    assert loaded_sig == sig
    x, _ = load_diabetes(return_X_y=True)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_untrusted_types_are_refused() -> None:
    class Sneaky:
        pass

    with pytest.raises(DataIntegrityError, match="not trusted"):
        artifacts.load_model_bytes(sio.dumps({"x": Sneaky()}))


def test_not_a_bundle_is_refused() -> None:
    with pytest.raises(DataIntegrityError, match="not a Lepton model bundle"):
        artifacts.unpack(b"just bytes")


def test_holdout_split_is_deterministic_disjoint_and_complete() -> None:
    train, test = splits.holdout_split(442, 42, 0.2)
    again_train, again_test = splits.holdout_split(442, 42, 0.2)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert len(test) == 88 and len(train) == 354
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(442))
    _, other = splits.holdout_split(442, 7, 0.2)
    assert not np.array_equal(test, other)
    with pytest.raises(ValueError, match="between 0 and 1"):
        splits.holdout_split(10, 1, 1.5)
