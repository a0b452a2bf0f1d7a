"""The PyTorch MLP: quality, determinism, early stopping, cancellation, files and ONNX."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split

from lepton_core.errors import DataIntegrityError, InvalidArgument
from lepton_ml.mlp import EpochReport, MLPModel, MLPParams, TrainingCancelled, train_mlp

Split = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[Any], npt.NDArray[Any]]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    # These networks are tiny: with 2 OpenMP threads on a busy 2-core machine each
    # batch waits on a descheduled thread, and training runs ~10x slower than on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _split(x: npt.NDArray[np.float64], y: npt.NDArray[Any], stratify: bool) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y if stratify else None
    )
    return x_train, x_test, y_train, y_test


@pytest.fixture(scope="module")
def cancer() -> Split:
    x, y = load_breast_cancer(return_X_y=True)
    return _split(x, y, stratify=True)


@pytest.fixture(scope="module")
def diabetes() -> Split:
    x, y = load_diabetes(return_X_y=True, scaled=False)
    return _split(x, y, stratify=False)


@pytest.fixture(scope="module")
def classifier(cancer: Split) -> MLPModel:
    x_train, _, y_train, _ = cancer
    return train_mlp(x_train, y_train, "classification", MLPParams(hidden_layers=[32, 16], device="cpu"))


@pytest.fixture(scope="module")
def regressor(diabetes: Split) -> MLPModel:
    x_train, _, y_train, _ = diabetes
    return train_mlp(x_train, y_train, "regression", MLPParams(device="cpu"))


def test_breast_cancer_accuracy(cancer: Split, classifier: MLPModel) -> None:
    _, x_test, _, y_test = cancer
    assert classifier.n_features_in_ == 30
    assert classifier.classes_ is not None
    assert classifier.classes_.tolist() == [0, 1]
    assert float(np.mean(classifier.predict(x_test) == y_test)) >= 0.9
    proba = classifier.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_labels_need_not_be_class_indices(cancer: Split) -> None:
    x_train, x_test, y_train, _ = cancer
    labels = np.where(y_train == 1, 7.5, -3.0)
    model = train_mlp(x_train, labels, "classification", MLPParams(hidden_layers=[8], epochs=3, device="cpu"))
    assert model.classes_ is not None
    assert model.classes_.tolist() == [-3.0, 7.5]
    assert set(model.predict(x_test).tolist()) <= {-3.0, 7.5}


def test_diabetes_beats_predicting_the_mean(diabetes: Split, regressor: MLPModel) -> None:
    _, x_test, y_train, y_test = diabetes
    mse = float(np.mean((regressor.predict(x_test) - y_test) ** 2))
    baseline = float(np.mean((y_train.mean() - y_test) ** 2))
    # Raw (unscaled) diabetes targets are in the hundreds: predictions are un-standardised.
    assert mse < 0.8 * baseline


def test_same_seed_same_predictions_other_seed_differs(diabetes: Split) -> None:
    x_train, x_test, y_train, _ = diabetes

    def fit(seed: int) -> npt.NDArray[Any]:
        params = MLPParams(hidden_layers=[16], epochs=5, dropout=0.2, seed=seed, device="cpu")
        return train_mlp(x_train, y_train, "regression", params).predict(x_test)

    first = fit(0)
    np.testing.assert_array_equal(first, fit(0))
    assert not np.array_equal(first, fit(1))


def test_training_does_not_change_the_callers_torch_rng(diabetes: Split) -> None:
    x_train, _, y_train, _ = diabetes
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_mlp(x_train, y_train, "regression", MLPParams(hidden_layers=[4], epochs=1, seed=9, device="cpu"))
    assert torch.equal(torch.rand(3), expected)


def _noisy_line() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    return x, 3 * x[:, 0] - x[:, 1] + rng.normal(scale=0.5, size=400)


def test_early_stopping_stops_reports_and_restores_best_weights() -> None:
    x, y = _noisy_line()
    reports: list[EpochReport] = []
    params = MLPParams(hidden_layers=[16], learning_rate=0.01, epochs=500, early_stopping_patience=5, device="cpu")
    model = train_mlp(x, y, "regression", params, on_epoch=reports.append)

    assert len(reports) < params.epochs
    assert [r.epoch for r in reports] == list(range(1, len(reports) + 1))
    assert model.history == reports
    assert all(r.val_loss is not None and r.val_metric is not None and r.seconds >= 0 for r in reports)
    losses = [r.val_loss for r in reports if r.val_loss is not None]
    best = int(np.argmin(losses)) + 1
    assert model.best_epoch == best
    assert len(reports) - best == params.early_stopping_patience

    # Validation and early stopping draw no random numbers, so training just up to the
    # best epoch with early stopping off must land on exactly the restored weights.
    replay = MLPParams(hidden_layers=[16], learning_rate=0.01, epochs=best, early_stopping_patience=0, device="cpu")
    np.testing.assert_array_equal(model.predict(x), train_mlp(x, y, "regression", replay).predict(x))


def test_no_validation_means_no_early_stopping() -> None:
    x, y = _noisy_line()
    reports: list[EpochReport] = []
    params = MLPParams(hidden_layers=[4], epochs=4, validation_fraction=0.0, device="cpu")
    train_mlp(x, y, "regression", params, on_epoch=reports.append)
    assert [(r.epoch, r.val_loss, r.val_metric) for r in reports] == [(e, None, None) for e in range(1, 5)]


def test_should_stop_cancels_within_one_batch(cancer: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    x_train, _, y_train, _ = cancer
    steps = 0
    adam_step = torch.optim.Adam.step

    def counting_step(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    polls = 0

    def should_stop() -> bool:
        nonlocal polls
        polls += 1
        return polls == 3

    epochs: list[EpochReport] = []
    with pytest.raises(TrainingCancelled) as info:
        train_mlp(
            x_train, y_train, "classification", MLPParams(device="cpu"), on_epoch=epochs.append, should_stop=should_stop
        )
    assert (polls, steps, info.value.batches, info.value.epoch) == (3, 3, 3, 1)
    assert epochs == []


@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_files_round_trip(which: str, request: pytest.FixtureRequest, cancer: Split, diabetes: Split) -> None:
    model: MLPModel = request.getfixturevalue(which)
    x_test = (cancer if which == "classifier" else diabetes)[1]
    files = model.to_files()
    assert set(files) == {"model.safetensors", "architecture.json", "model.onnx"}
    arch = json.loads(files["architecture.json"])
    assert arch["task"] == model.task
    assert arch["activation"] == "relu"
    assert arch["torch_version"] == torch.__version__
    assert len(arch["input_mean"]) == len(arch["input_std"]) == model.n_features_in_

    loaded = MLPModel.from_files({k: v for k, v in files.items() if k != "model.onnx"})
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    if model.classes_ is not None:
        assert loaded.classes_ is not None
        assert loaded.classes_.dtype == model.classes_.dtype
        np.testing.assert_array_equal(loaded.predict_proba(x_test), model.predict_proba(x_test))


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA here"))],
)
def test_a_loaded_model_serves_on_another_device(device: str, regressor: MLPModel, diabetes: Split) -> None:
    """What a GPU instance of the Triton model does: float64 in and out on the host, the network on the device."""
    x_test = diabetes[1]
    loaded = MLPModel.from_files(regressor.to_files())
    assert loaded.to_device(device) is loaded and loaded.device.type == device
    got = loaded.predict(x_test)
    assert got.dtype == np.float64 and got.shape == (len(x_test),)
    # Another device sums in another order: float32's precision, not float64's (docs/serving.md).
    np.testing.assert_allclose(got, regressor.predict(x_test), rtol=1e-5, atol=1e-6)
    # Exporting still works with the network on the device.
    session = ort.InferenceSession(loaded.to_onnx(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"features": x_test})
    np.testing.assert_allclose(out[:, 0], got, rtol=1e-5, atol=1e-5)


def test_from_files_refuses_bad_files(classifier: MLPModel, regressor: MLPModel) -> None:
    files = classifier.to_files()
    with pytest.raises(DataIntegrityError, match="missing"):
        MLPModel.from_files({"architecture.json": files["architecture.json"]})
    with pytest.raises(DataIntegrityError, match="does not fit"):
        MLPModel.from_files({**files, "model.safetensors": regressor.to_files()["model.safetensors"]})
    with pytest.raises(DataIntegrityError, match="not a Lepton MLP"):
        MLPModel.from_files({**files, "architecture.json": b'{"format": "pickle"}'})


@pytest.mark.parametrize("which", ["classifier", "regressor"])
def test_onnx_matches_predict(which: str, request: pytest.FixtureRequest, cancer: Split, diabetes: Split) -> None:
    model: MLPModel = request.getfixturevalue(which)
    x_test = (cancer if which == "classifier" else diabetes)[1]
    session = ort.InferenceSession(model.to_files()["model.onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]

    for rows in (x_test, x_test[:1]):  # the batch axis is dynamic
        (out,) = session.run(None, {"features": rows.astype(np.float64)})
        if model.classes_ is not None:
            assert model.classes_ is not None
            np.testing.assert_array_equal(model.classes_[out.argmax(axis=1)], model.predict(rows))
            proba = np.exp(out - out.max(axis=1, keepdims=True))
            proba /= proba.sum(axis=1, keepdims=True)
            np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=1e-5, atol=1e-5)
        else:
            assert out.shape == (len(rows), 1)
            np.testing.assert_allclose(out[:, 0], model.predict(rows), rtol=1e-5, atol=1e-5)


def test_params_defaults_and_strings() -> None:
    default = MLPParams()
    assert (default.learning_rate, default.epochs, default.batch_size, default.optimizer) == (1e-3, 100, 32, "adam")
    parsed = MLPParams.from_strings({"hidden_layers": " 64, 32 ", "epochs": "50", "optimizer": "AdamW"})
    assert (parsed.hidden_layers, parsed.epochs, parsed.optimizer) == ([64, 32], 50, "adamw")
    assert MLPParams.from_strings({"hidden_layers": ""}).hidden_layers == []


@pytest.mark.parametrize(
    ("make", "field", "allowed"),
    [
        (lambda: MLPParams(learning_rate=-0.1), "params.learning_rate", "(0, 1]"),
        (lambda: MLPParams(dropout=0.95), "params.dropout", "[0, 0.9]"),
        (lambda: MLPParams(optimizer="rmsprop"), "params.optimizer", "adam, sgd, adamw"),  # type: ignore[arg-type]
        (lambda: MLPParams.from_strings({"hidden_layers": "a,b"}), "params.hidden_layers", "integers"),
        (lambda: MLPParams.from_strings({"dropout": "0.95"}), "params.dropout", "[0, 0.9]"),
        (lambda: MLPParams.from_strings({"epochs": "ten"}), "params.epochs", "integer"),
        (lambda: MLPParams.from_strings({"momentum": "0.9"}), "params.momentum", "unknown"),
        (lambda: MLPParams(hidden_layers=[64, 0]), "params.hidden_layers", "from 1 to"),
        (lambda: MLPParams(epochs=0), "params.epochs", "from 1 to 10000"),
        (lambda: MLPParams(validation_fraction=float("nan")), "params.validation_fraction", "[0, 0.5]"),
    ],
)
def test_bad_params_name_their_field(make: Any, field: str, allowed: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        make()
    assert info.value.field == field
    assert allowed in info.value.message


def test_bad_data_is_refused() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(InvalidArgument) as info:
        train_mlp(x, np.zeros(10), "classification", MLPParams(device="cpu"))
    assert info.value.field == "y"
    x[0, 0] = np.nan
    with pytest.raises(InvalidArgument) as info:
        train_mlp(x, np.arange(10.0), "regression", MLPParams(device="cpu"))
    assert info.value.field == "x"
