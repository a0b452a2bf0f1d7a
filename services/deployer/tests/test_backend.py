"""Which backend serves a version, and why: exact ONNX or the bundle as trained."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
from sklearn.datasets import load_diabetes
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge

from lepton_deployer.backends import ONNX_FILE, ONNX_INFO_FILE, choose_backend
from lepton_deployer.errors import RolloutFailed
from lepton_deployer.smoke import FLOAT32_RTOL, SMOKE_TOLERANCE, smoke_tolerance
from lepton_ml import artifacts
from lepton_ml.mlp import MLPParams, train_mlp
from lepton_ml.signing import Signer


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray, list[str]]:
    frame = load_diabetes(as_frame=True).frame
    features = [c for c in frame.columns if c != "target"]
    return frame[features].to_numpy(), frame["target"].to_numpy(), features


SIGNER = Signer.generate()


def _files(model: Any, features: list[str]) -> dict[str, bytes]:
    blob = artifacts.pack(model, artifacts.Signature(features, "target", "regression", type(model).__name__))
    return artifacts.unpack_files(artifacts.seal(blob, SIGNER), SIGNER.trusted())


def _inputs(x: np.ndarray, features: list[str]) -> dict[str, list[Any]]:
    return {f: x[:16, i].tolist() for i, f in enumerate(features)}


def test_an_exact_conversion_is_served_by_onnxruntime(diabetes: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    x, y, features = diabetes
    model = Ridge().fit(x, y)
    backend, why, files = choose_backend("auto", _files(model, features), _inputs(x, features))
    assert backend == "onnxruntime" and "exact ONNX conversion" in why, why
    session = ort.InferenceSession(files[ONNX_FILE], providers=["CPUExecutionProvider"])
    (got,) = session.run(["prediction"], {"features": x[:50]})
    np.testing.assert_allclose(np.asarray(got).reshape(-1), model.predict(x[:50]), atol=1e-9)
    # What the serving model needs instead of loading the estimator (Ridge takes no NaN).
    assert json.loads(files[ONNX_INFO_FILE]) == {"estimator": "Ridge", "allow_nan": False}


def test_float32_trees_and_an_explicit_python_keep_the_bundle(
    diabetes: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    x, y, features = diabetes
    forest = RandomForestRegressor(n_estimators=5, random_state=0).fit(x, y)
    backend, why, files = choose_backend("auto", _files(forest, features), _inputs(x, features))
    assert backend == "python" and "float32" in why and ONNX_FILE not in files, why
    with pytest.raises(RolloutFailed, match=r"config\.backend is onnx"):
        choose_backend("onnx", _files(forest, features), _inputs(x, features))
    ridge = _files(Ridge().fit(x, y), features)
    assert choose_backend("python", ridge, _inputs(x, features))[0] == "python"


def test_a_model_with_a_preprocessing_chain_keeps_the_python_backend() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0, None, 4.0], "target": [1.0, 2.0, 3.0, 4.0]})
    chain = artifacts.Preprocess(recipes=[], target="target", target_dtype="Float64")
    blob = artifacts.pack(
        Ridge().fit(np.array([[1.0], [2.0], [3.0], [4.0]]), frame["target"].to_numpy()),
        artifacts.Signature(["a"], "target", "regression", "ridge"),
        chain,
    )
    backend, why, _ = choose_backend(
        "auto", artifacts.unpack_files(artifacts.seal(blob, SIGNER), SIGNER.trusted()), {"a": [1.0, 2.0]}
    )
    assert backend == "python" and "preprocessing chain" in why


def test_float32_models_get_a_relative_smoke_tolerance(diabetes: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    x, y, _ = diabetes
    assert smoke_tolerance(Ridge().fit(x, y)) == (SMOKE_TOLERANCE, 0.0)
    mlp = train_mlp(x, y, "regression", MLPParams(hidden_layers=[16], epochs=3, seed=0, device="cpu"))
    atol, rtol = smoke_tolerance(mlp)
    assert (atol, rtol) == (SMOKE_TOLERANCE, FLOAT32_RTOL)
    want = mlp.predict(x[:64])
    # An H200 answered 1.8e-05 away from the CPU for a diabetes MLP (docs/serving.md): that passes,
    # and a wrong answer still fails.
    assert np.allclose(want + 1.8e-5, want, rtol=rtol, atol=atol)
    assert not np.allclose(want + 0.5, want, rtol=rtol, atol=atol)
