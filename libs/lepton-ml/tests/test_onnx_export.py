"""ONNX export: exact conversions, folded preprocessing, refusals, edge bundles.

Real scikit-learn datasets and fits, the real torch MLP, real onnxruntime; the
exactness numbers are also recomputed here, independently of the module's own check.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import polars as pl
import pytest
import torch
from google.protobuf import text_format
from onnx import numpy_helper
from sklearn import cluster, ensemble, linear_model, naive_bayes, neighbors, svm, tree
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import train_test_split
from tritonclient.grpc import model_config_pb2

from lepton_ml import artifacts, recipes
from lepton_ml.mlp import MLPParams, train_mlp
from lepton_ml.onnx_export import (
    DOUBLE_TOLERANCE,
    FLOAT_TOLERANCE,
    RUNNER_SOURCE,
    Conversion,
    ConversionRefused,
    Tolerance,
    check,
    convert,
    edge_runner,
    export_edge_bundle,
)
from lepton_ml.signing import Signer

Data = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny networks on a shared 2-core machine train far faster on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _split(loader: Callable[..., Any], **kw: Any) -> Data:
    x, y = loader(return_X_y=True, **kw)
    x_train, x_test, y_train, y_test = train_test_split(x, y.astype(np.float64), test_size=0.3, random_state=0)
    return x_train, x_test, y_train, y_test


DATA: dict[str, Callable[[], Data]] = {
    "diabetes": lambda: _split(load_diabetes, scaled=False),
    "iris": lambda: _split(load_iris),
    "cancer": lambda: _split(load_breast_cancer),
}


def _columns(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


SIGNER = Signer.generate()


def _signed(bundle_zip: bytes) -> artifacts.Bundle:
    """The bundle as a loader gets it: signed as the trainer signs it, verified, loaded."""
    return artifacts.load_bundle(SIGNER.sign(bundle_zip), SIGNER.trusted())


def _pack(model: Any, data: Data, task: str) -> tuple[artifacts.Bundle, pl.DataFrame]:
    """Fits ``model`` on the training rows; the loaded artifact and the held-out rows as a frame."""
    x_train, x_test, y_train, _ = data
    if task == "clustering":
        model.fit(x_train)
    elif not hasattr(model, "to_files"):
        model.fit(x_train, y_train)
    names = _columns(x_train.shape[1])
    signature = artifacts.Signature(features=names, target="y", task=task, algorithm=type(model).__name__)
    return _signed(artifacts.pack(model, signature)), pl.DataFrame(x_test, schema=names)


def _run(onnx_bytes: bytes, x: npt.NDArray[Any], dtype: str) -> dict[str, npt.NDArray[Any]]:
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"features": x.astype(dtype)}), strict=True))


def _assert_matches(conversion: Conversion, bundle: artifacts.Bundle, raw: pl.DataFrame) -> None:
    """Recomputes the comparison the module's check makes, from scratch."""
    x = raw.select(pl.col(c).cast(pl.Float64) for c in conversion.input_columns).to_numpy()
    got = _run(conversion.onnx, x, conversion.input_dtype)
    want = bundle.predict(raw)
    assert got["prediction"].shape == (len(raw), 1)
    tol = conversion.tolerance
    assert tol is not None
    if conversion.task == "regression":
        np.testing.assert_allclose(got["prediction"][:, 0], want, rtol=tol.rtol, atol=tol.atol)
    else:
        np.testing.assert_array_equal(got["prediction"][:, 0], want.astype(np.float64))
    if "probabilities" in got:
        proba = bundle.model.predict_proba(bundle.features(raw))
        np.testing.assert_allclose(got["probabilities"], proba, rtol=0, atol=tol.probability_atol)


# ---------------------------------------------------------------------------------------
# Estimators

ESTIMATORS = [
    ("linear_regression", linear_model.LinearRegression, "diabetes", "regression", "float64"),
    ("ridge", linear_model.Ridge, "diabetes", "regression", "float64"),
    ("lasso", lambda: linear_model.Lasso(alpha=0.1, max_iter=5000), "diabetes", "regression", "float64"),
    (
        "logistic_regression",
        lambda: linear_model.LogisticRegression(max_iter=5000),
        "iris",
        "classification",
        "float64",
    ),
    (
        "decision_tree_regressor",
        lambda: tree.DecisionTreeRegressor(random_state=0),
        "diabetes",
        "regression",
        "float32",
    ),
    (
        "random_forest_regressor",
        lambda: ensemble.RandomForestRegressor(n_estimators=20, random_state=0),
        "diabetes",
        "regression",
        "float32",
    ),
    (
        "random_forest_classifier",
        lambda: ensemble.RandomForestClassifier(n_estimators=20, random_state=0),
        "cancer",
        "classification",
        "float32",
    ),
    (
        "gradient_boosting_classifier",
        lambda: ensemble.HistGradientBoostingClassifier(max_iter=20, random_state=0),
        "iris",
        "classification",
        "float32",
    ),
    (
        "gradient_boosting_regressor",
        lambda: ensemble.HistGradientBoostingRegressor(max_iter=20, random_state=0),
        "diabetes",
        "regression",
        "float32",
    ),
    ("svc", svm.SVC, "cancer", "classification", "float64"),
    ("svr", svm.SVR, "diabetes", "regression", "float32"),
    ("knn_classifier", neighbors.KNeighborsClassifier, "cancer", "classification", "float64"),
    ("knn_regressor", neighbors.KNeighborsRegressor, "diabetes", "regression", "float64"),
    ("gaussian_nb", naive_bayes.GaussianNB, "iris", "classification", "float64"),
    ("kmeans", lambda: cluster.KMeans(n_clusters=3, n_init=2, random_state=0), "iris", "clustering", "float64"),
]


@pytest.mark.parametrize(("name", "make", "dataset", "task", "dtype"), ESTIMATORS, ids=[e[0] for e in ESTIMATORS])
def test_scikit_learn_estimators_convert_exactly(
    name: str, make: Callable[[], Any], dataset: str, task: str, dtype: str
) -> None:
    artifact, held_out = _pack(make(), DATA[dataset](), task)
    conversion = convert(artifact, held_out)
    assert conversion.ok, conversion.reason
    assert conversion.sample == "given" and conversion.rows_checked == held_out.height
    assert (conversion.model_dtype, conversion.input_dtype) == (dtype, dtype)
    assert conversion.tolerance == (DOUBLE_TOLERANCE if dtype == "float64" else FLOAT_TOLERANCE)
    assert conversion.input_name == "features" and conversion.input_shape == (-1, held_out.width)
    assert conversion.input_columns == held_out.columns
    assert conversion.opset[""] == 17 and onnx.load_from_string(conversion.onnx).ir_version == 8
    bundle = artifact
    has_proba = task == "classification" and hasattr(bundle.model, "predict_proba")
    assert conversion.output_names == (["prediction", "probabilities"] if has_proba else ["prediction"])
    if task == "classification":
        assert conversion.mismatched_labels == 0
        assert conversion.classes == bundle.model.classes_.tolist()
    _assert_matches(conversion, bundle, held_out)


def test_without_a_sample_rows_are_synthesized_from_the_signature() -> None:
    for model, dataset, task in [
        (linear_model.Ridge(), "diabetes", "regression"),
        # Far from the data, half the trees vote each way: ties must break as scikit-learn's do.
        (ensemble.RandomForestClassifier(n_estimators=20, random_state=0), "cancer", "classification"),
    ]:
        artifact, _ = _pack(model, DATA[dataset](), task)
        conversion = convert(artifact)
        assert conversion.ok, conversion.reason
        assert (conversion.sample, conversion.rows_checked) == ("synthesized", 200)


def test_mlp_converts_through_its_own_onnx_export() -> None:
    params = MLPParams(hidden_layers=[16], epochs=20, device="cpu")
    x_train, x_test, y_train, y_test = DATA["diabetes"]()
    regressor = train_mlp(x_train, y_train, "regression", params)
    artifact, held_out = _pack(regressor, (x_train, x_test, y_train, y_test), "regression")
    conversion = convert(artifact, held_out)
    assert conversion.ok, conversion.reason
    assert (conversion.input_dtype, conversion.model_dtype, conversion.tolerance) == (
        "float64",
        "float32",
        FLOAT_TOLERANCE,
    )
    _assert_matches(conversion, artifact, held_out)

    iris = DATA["iris"]()
    classifier = train_mlp(iris[0], iris[2], "classification", params)
    artifact, held_out = _pack(classifier, iris, "classification")
    conversion = convert(artifact, held_out)
    assert conversion.ok, conversion.reason
    assert conversion.output_names == ["prediction", "probabilities"] and conversion.classes == [0.0, 1.0, 2.0]
    _assert_matches(conversion, artifact, held_out)


# ---------------------------------------------------------------------------------------
# Preprocessing chains

RAW_NAMES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
NUMERIC_STEPS: list[dict[str, Any]] = [
    {"op": "drop_nulls", "columns": ["target"]},
    {"op": "fill_nulls", "column": "bmi", "strategy": "mean"},
    {"op": "fill_nulls", "column": "bp", "strategy": "median"},
    {"op": "fill_nulls", "column": "age", "strategy": "mean"},
    {"op": "fill_nulls", "column": "s4", "strategy": "constant", "value": 3},
    {"op": "clip", "column": "s1", "lower_quantile": 0.05, "upper_quantile": 0.95},
    {"op": "clip", "column": "s2", "lower": 50.0},
    {"op": "derive", "name": "log_s5", "left": "s5", "operator": "log"},
    {"op": "derive", "name": "bmi_per_bp", "left": "bmi", "operator": "/", "right": "bp"},
    {"op": "derive", "name": "age_sq", "left": "age", "operator": "pow", "right": 2},
    {"op": "derive", "name": "s3_third", "left": "s3", "operator": "/", "right": 3},
    {"op": "cast", "column": "sex", "dtype": "float"},
    {"op": "bucketize", "column": "s6", "quantiles": 4},
    {"op": "standardize", "columns": ["bmi", "bp", "s1", "s2"]},
    {"op": "rename", "mapping": {"s3": "hdl"}},
    {"op": "filter", "column": "target", "operator": ">", "value": 0},
]


@pytest.fixture(scope="module")
def raw_diabetes() -> pl.DataFrame:
    """Diabetes as a raw upload: Int64 age and sex, nulls in four columns, the target."""
    x, y = load_diabetes(return_X_y=True, scaled=False)
    frame = pl.DataFrame({n: x[:, i] for i, n in enumerate(RAW_NAMES)}).with_columns(
        pl.col("age").cast(pl.Int64), pl.col("sex").cast(pl.Int64), pl.Series("target", y)
    )
    rng = np.random.default_rng(1)
    for name in ("bmi", "bp", "age", "s4"):
        holes = pl.Series(rng.random(frame.height) < 0.15)
        frame = frame.with_columns(pl.when(holes).then(None).otherwise(pl.col(name)).alias(name))
    return frame


def _chain_bundle(
    model: Any, raw: pl.DataFrame, steps: list[dict[str, Any]], task: str = "regression"
) -> artifacts.Bundle:
    """Packs a bundle the way the trainer does: recipe fitted on the raw upload, features
    every numeric column but the target, a Preprocess with the raw columns as inputs."""
    recipe = recipes.parse_recipe(json.dumps({"steps": steps}))
    frame, fitted = recipes.fit_transform(raw, recipe)
    features = [c for c, t in frame.schema.items() if c != "target" and t.is_numeric()]
    x = frame.select(features).to_numpy().astype(np.float64)
    model.fit(x, frame["target"].to_numpy().astype(np.float64))
    signature = artifacts.Signature(
        features=features,
        target="target",
        task=task,
        algorithm=type(model).__name__,
        inputs=[{"name": n, "dtype": str(t)} for n, t in raw.schema.items() if n != "target"],
    )
    chain = [{"recipe": recipe.model_dump(mode="json"), "fitted": fitted}]
    return _signed(artifacts.pack(model, signature, artifacts.Preprocess(chain, "target", str(raw.schema["target"]))))


@pytest.mark.parametrize(
    ("model", "dtype"),
    [(linear_model.Ridge(), "float64"), (ensemble.RandomForestRegressor(n_estimators=20, random_state=0), "float32")],
    ids=["ridge", "random_forest"],
)
def test_numeric_chain_is_folded_and_matches_on_raw_rows_with_nulls(
    raw_diabetes: pl.DataFrame, model: Any, dtype: str
) -> None:
    artifact = _chain_bundle(model, raw_diabetes, NUMERIC_STEPS)
    raw = raw_diabetes.drop("target")
    assert raw.null_count().sum_horizontal().item() > 100
    conversion = convert(artifact, raw)
    assert conversion.ok, conversion.reason
    # The graph takes the raw numeric columns, in the signature's raw order, as FP64.
    assert conversion.input_columns == RAW_NAMES and conversion.input_dtype == "float64"
    assert conversion.model_dtype == dtype
    assert {"fill_nulls(bmi)", "clip(s1)", "standardize(bp)", "bucketize(s6)"} <= set(conversion.folded_steps)
    bundle = artifact
    _assert_matches(conversion, bundle, raw)
    if dtype == "float64":
        # Every folded step but log is bit for bit polars' own arithmetic.
        x = raw.select(pl.col(c).cast(pl.Float64) for c in RAW_NAMES).to_numpy()
        got = _run(conversion.onnx, x, "float64")["prediction"][:, 0]
        np.testing.assert_allclose(got, bundle.predict(raw), rtol=1e-12)
    assert convert(artifact).ok  # and on rows synthesized from the signature


@pytest.fixture(scope="module")
def raw_with_city(raw_diabetes: pl.DataFrame) -> pl.DataFrame:
    cities = np.random.default_rng(2).choice(["oslo", "lima", "pune"], raw_diabetes.height)
    return raw_diabetes.with_columns(pl.Series("city", cities))


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        (
            [{"op": "fill_nulls", "column": c, "strategy": "mean"} for c in ("bmi", "bp", "age", "s4")]
            + [{"op": "one_hot", "column": "city"}],
            "step 'one_hot' on column 'city' has no ONNX form",
        ),
        (
            # Leading nulls stay null after a forward fill; the mean fill after it catches them.
            [{"op": "fill_nulls", "column": "bmi", "strategy": "forward"}]
            + [{"op": "fill_nulls", "column": c, "strategy": "mean"} for c in ("bmi", "bp", "age", "s4")]
            + [{"op": "select", "columns": [*RAW_NAMES, "target"]}],
            "step 'fill_nulls' (strategy 'forward') on column 'bmi' has no ONNX form",
        ),
    ],
    ids=["one_hot", "forward_fill"],
)
def test_a_feature_from_a_step_without_onnx_form_is_refused_by_name(
    raw_with_city: pl.DataFrame, steps: list[dict[str, Any]], reason: str
) -> None:
    artifact = _chain_bundle(linear_model.Ridge(), raw_with_city, steps)
    conversion = convert(artifact, raw_with_city.drop("target"))
    assert not conversion.ok and conversion.onnx == b""
    assert reason in conversion.reason
    with pytest.raises(ValueError, match=r"one_hot|forward") as info:
        export_edge_bundle(artifact, raw_with_city.drop("target"))
    assert isinstance(info.value, ConversionRefused) and reason in str(info.value)


def test_a_step_without_onnx_form_that_no_feature_needs_does_not_refuse(raw_with_city: pl.DataFrame) -> None:
    steps: list[dict[str, Any]] = [
        *[{"op": "fill_nulls", "column": c, "strategy": "mean"} for c in ("bmi", "bp", "age", "s4")],
        {"op": "one_hot", "column": "city"},
        {"op": "select", "columns": [*RAW_NAMES, "target"]},
    ]
    artifact = _chain_bundle(linear_model.Ridge(), raw_with_city, steps)
    conversion = convert(artifact, raw_with_city.drop("target"))
    assert conversion.ok, conversion.reason
    assert conversion.input_columns == RAW_NAMES  # the text column is not in the tensor


# ---------------------------------------------------------------------------------------
# Refusals


def test_an_estimator_skl2onnx_cannot_convert_is_refused_with_the_reason() -> None:
    artifact, held_out = _pack(KernelRidge(), DATA["diabetes"](), "regression")
    conversion = convert(artifact, held_out)
    assert not conversion.ok
    assert "skl2onnx cannot convert KernelRidge" in conversion.reason


def test_a_tolerance_nothing_meets_refuses_with_the_numbers() -> None:
    artifact, held_out = _pack(
        ensemble.RandomForestRegressor(n_estimators=5, random_state=0), DATA["diabetes"](), "regression"
    )
    conversion = convert(artifact, held_out, tolerance=Tolerance(rtol=0.0, atol=0.0))
    assert not conversion.ok and conversion.onnx  # the graph is kept to inspect
    assert conversion.max_abs_diff is not None and conversion.max_abs_diff > 0
    assert f"on {held_out.height} rows > tolerance (atol 0 + rtol 0 * |y|)" in conversion.reason


def _perturbed(onnx_bytes: bytes, size: int, delta: float) -> bytes:
    """The model with ``delta`` added to the first weight of the first initializer of ``size`` values."""
    model = onnx.load_from_string(onnx_bytes)
    for index, init in enumerate(model.graph.initializer):
        values = numpy_helper.to_array(init)
        if values.size == size:
            changed = values.copy().reshape(-1)
            changed[0] += delta
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(changed.reshape(values.shape), init.name))
            return model.SerializeToString()
    raise AssertionError(f"no initializer with {size} values")


def test_a_corrupted_graph_is_refused_by_the_exactness_check() -> None:
    artifact, held_out = _pack(linear_model.LinearRegression(), DATA["diabetes"](), "regression")
    good = convert(artifact, held_out)
    assert good.ok and check(artifact, good.onnx, held_out).ok
    corrupted = check(artifact, _perturbed(good.onnx, 10, 1e-3), held_out)
    assert not corrupted.ok
    assert corrupted.reason.startswith("max abs diff") and f"on {held_out.height} rows > tolerance" in corrupted.reason

    artifact, held_out = _pack(linear_model.LogisticRegression(max_iter=5000), DATA["iris"](), "classification")
    good = convert(artifact, held_out)
    corrupted = check(artifact, _perturbed(good.onnx, 12, 0.5), held_out)
    assert not corrupted.ok and "max probability diff" in corrupted.reason


# ---------------------------------------------------------------------------------------
# Edge bundles


def _unzip(data: bytes, into: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(into)
        return {name: zf.read(name) for name in zf.namelist()}


def _runner_lines(model_dir: Path, csv_path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(model_dir / "runner.py"), str(model_dir), str(csv_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def _config(files: dict[str, bytes], name: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(files[f"triton/{name}/config.pbtxt"].decode(), config)
    return config


def test_edge_bundle_runs_standalone_and_loads_as_a_triton_repository(
    raw_diabetes: pl.DataFrame, tmp_path: Path
) -> None:
    artifact = _chain_bundle(linear_model.Ridge(), raw_diabetes, NUMERIC_STEPS)
    raw = raw_diabetes.drop("target")
    files = _unzip(export_edge_bundle(artifact, raw, name="diabetes-ridge"), tmp_path)
    assert sorted(files) == [
        "check.json",
        "model.onnx",
        "runner.py",
        "signature.json",
        "triton/diabetes-ridge/1/model.onnx",
        "triton/diabetes-ridge/config.pbtxt",
    ]
    assert files["triton/diabetes-ridge/1/model.onnx"] == files["model.onnx"]
    assert files["runner.py"] == Path(edge_runner.__file__).read_bytes()  # the checked module, as is
    report = json.loads(files["check.json"])
    assert report["ok"] and report["rows_checked"] == raw.height and report["max_abs_diff"] < 1e-9
    signature = json.loads(files["signature.json"])
    assert signature["input"] == {
        "name": "features",
        "dtype": "float64",
        "shape": [-1, 10],
        "columns": RAW_NAMES,
        "missing": "NaN",
    }

    # runner.py as a script on a CSV with empty cells for the nulls.
    raw.write_csv(tmp_path / "input.csv")
    lines = _runner_lines(tmp_path, tmp_path / "input.csv")
    expected = artifact.predict(raw)
    np.testing.assert_allclose([line["prediction"] for line in lines], expected, rtol=1e-12)

    config = _config(files, "diabetes-ridge")
    assert (config.name, config.platform, config.max_batch_size) == ("diabetes-ridge", "onnxruntime_onnx", 64)
    assert config.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("features", model_config_pb2.TYPE_FP64, [10])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("prediction", model_config_pb2.TYPE_FP64, [1])
    ]


def test_edge_bundle_of_a_classifier_and_of_an_fp32_model(tmp_path: Path) -> None:
    artifact, held_out = _pack(linear_model.LogisticRegression(max_iter=5000), DATA["iris"](), "classification")
    files = _unzip(export_edge_bundle(artifact, held_out), tmp_path / "logreg")
    bundle = artifact

    # runner.py as a module, on a list of dicts.
    spec = importlib.util.spec_from_file_location("edge_runner", tmp_path / "logreg" / "runner.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    results = runner.EdgeModel(tmp_path / "logreg").predict(held_out.to_dicts())
    np.testing.assert_array_equal([r["prediction"] for r in results], bundle.predict(held_out))
    proba = bundle.model.predict_proba(held_out.to_numpy())
    np.testing.assert_allclose([r["probabilities"] for r in results], proba, atol=1e-12)
    with pytest.raises(ValueError, match="lacks columns"):
        runner.EdgeModel(tmp_path / "logreg").predict([{"x0": 1.0}])

    config = _config(files, "LogisticRegression-y")
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("prediction", model_config_pb2.TYPE_FP64, [1]),
        ("probabilities", model_config_pb2.TYPE_FP64, [3]),
    ]

    forest, held_out = _pack(
        ensemble.RandomForestRegressor(n_estimators=10, random_state=0), DATA["diabetes"](), "regression"
    )
    files = _unzip(export_edge_bundle(forest, held_out, name="forest"), tmp_path / "forest")
    config = _config(files, "forest")
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("features", model_config_pb2.TYPE_FP32, [10])
    ]
    held_out.write_csv(tmp_path / "forest.csv")
    lines = _runner_lines(tmp_path / "forest", tmp_path / "forest.csv")
    expected = forest.predict(held_out)
    np.testing.assert_allclose([line["prediction"] for line in lines], expected, rtol=1e-4, atol=1e-4)


def test_runner_needs_only_numpy_onnxruntime_and_the_standard_library() -> None:
    imported = set()
    # JetPack 5 ships Python 3.8: the runner's syntax must parse there.
    for node in ast.walk(ast.parse(RUNNER_SOURCE, feature_version=(3, 8))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"numpy", "onnxruntime"}
