"""The Triton Python-backend model, served by the real embedded Triton server.

Starts ``tritonserver`` (CPU-only) and ``nats-server -js`` through the same
launchers ``make up`` uses, deploys a scikit-learn LinearRegression exactly as the
deployer does (``model.py`` + the signed ``artifact.lepton`` sent with ``load_model``,
the public key in Triton's environment) and checks predictions, per-request errors and the prediction logs
the model publishes to JetStream with the caller's trace context.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import tritonclient.grpc as triton_grpc
from lepton.events.v1 import events_pb2
from numpy.typing import NDArray
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression
from tritonclient.utils import InferenceServerException

import lepton_ml
from lepton_core.nats_identity import SERVING
from lepton_ml import artifacts
from lepton_ml.signing import PUBLIC_KEY_ENV
from lepton_ml.triton_model.prediction_log import QUEUE_SIZE
from lepton_platform.processes import NatsServer, TritonServer, free_port
from lepton_platform.testing import admin_connect, artifact_keys

pytestmark = pytest.mark.timeout(300)

MODEL_PY = Path(lepton_ml.__file__).parent / "triton_model" / "model.py"
MODEL = "diabetes"
TENANT = "acme"
DEPLOYMENT = "diabetes-prod"
SUBJECT = f"lepton.pred.{TENANT}.{DEPLOYMENT}"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Trained:
    model: LinearRegression
    X: NDArray[Any]
    files: dict[str, bytes]


@dataclass
class Served:
    triton: TritonServer
    nats: NatsServer
    client: triton_grpc.InferenceServerClient
    trained: Trained


def _train() -> Trained:
    data = load_diabetes()
    x = np.asarray(data.data, dtype=np.float64)
    model = LinearRegression().fit(x, data.target)
    signature = {
        "features": list(data.feature_names),
        "target": "progression",
        "task": "regression",
        "algorithm": "linear_regression",
        "input_dtype": "float64",
        "libraries": {"scikit-learn": "1.9.1", "skops": "0.16.0"},
    }
    bundle_zip = artifacts.pack(model, artifacts.Signature(**signature))  # type: ignore[arg-type]
    files = {
        "file:1/model.py": MODEL_PY.read_bytes(),
        f"file:1/{artifacts.ARTIFACT_FILE}": artifacts.seal(bundle_zip, artifact_keys().signer()),
    }
    return Trained(model, x, files)


def _config(n_features: int, **extra: str) -> str:
    """The deployer's config: where to log to is no part of it (Triton's environment says, see model.py)."""
    params = {
        "tenant": TENANT,
        "deployment": DEPLOYMENT,
        "model_name": MODEL,
        "model_version": "3",
        "log_sample_rate": "1.0",
        **extra,
    }
    return json.dumps(
        {
            "name": MODEL,
            "backend": "python",
            "max_batch_size": 64,
            "input": [{"name": "features", "data_type": "TYPE_FP64", "dims": [n_features]}],
            "output": [{"name": "prediction", "data_type": "TYPE_FP64", "dims": [1]}],
            "dynamic_batching": {"max_queue_delay_microseconds": 200},
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
            "parameters": {k: {"string_value": v} for k, v in params.items()},
        }
    )


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"))  # the platform's topology, identities required
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, nats_server: NatsServer) -> Iterator[Served]:
    trained = _train()
    t0 = time.monotonic()
    triton = TritonServer(
        tmp_path_factory.mktemp("triton"),
        nats_url=nats_server.url,
        nats_seed_file=nats_server.seed_file(SERVING),
        artifact_public_key_file=artifact_keys().public_key_file,
    )
    client: triton_grpc.InferenceServerClient | None = None
    try:
        t1 = time.monotonic()
        client = triton_grpc.InferenceServerClient(triton.url)
        client.load_model(
            MODEL,
            headers=triton.control.grpc_headers(),
            config=_config(trained.X.shape[1]),
            files=trained.files,
            client_timeout=120,
        )
        assert client.is_model_ready(MODEL, client_timeout=10)
        print(f"triton live in {t1 - t0:.1f}s, model loaded in {time.monotonic() - t1:.1f}s")
        INFERENCE.update(triton.inference_headers())
        yield Served(triton, nats_server, client, trained)
    except BaseException:
        print(triton.process.tail(60), file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.close()
        triton.stop()  # unloads the model: finalize() flushes prediction logs


#: The header the served model requires of inference (set by ``served``).
INFERENCE: dict[str, str] = {}


def _infer(client: triton_grpc.InferenceServerClient, x: NDArray[Any], **kwargs: Any) -> NDArray[Any]:
    inp = triton_grpc.InferInput("features", list(x.shape), "FP64")
    inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    kwargs.setdefault("headers", INFERENCE)  # what the gateway sends; without it the model refuses
    result = client.infer(
        MODEL, [inp], outputs=[triton_grpc.InferRequestedOutput("prediction")], client_timeout=30, **kwargs
    )
    out = result.as_numpy("prediction")
    assert out is not None
    return np.asarray(out, dtype=np.float64)


@pytest.mark.integration  # starts its own nats-server (and Triton)
def test_predictions_match_sklearn(served: Served) -> None:
    x = served.trained.X[:5]
    got = _infer(served.client, x)
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got[:, 0], served.trained.model.predict(x), rtol=0, atol=1e-6)


@pytest.mark.integration  # starts its own nats-server (and Triton)
def test_wrong_width_is_an_error_and_the_next_request_works(served: Served) -> None:
    with pytest.raises(InferenceServerException):
        _infer(served.client, served.trained.X[:2, :9])
    x = served.trained.X[10:13]
    np.testing.assert_allclose(_infer(served.client, x)[:, 0], served.trained.model.predict(x), atol=1e-6)


async def _find_log(
    url: str, traceparent: str, timeout: float
) -> tuple[events_pb2.PredictionLogBatch, events_pb2.PredictionLogged, dict[str, str]]:
    """The batch holding the log of the request that carried ``traceparent``, that log, the batch's headers."""
    import nats

    nc = await admin_connect(url, "test-find-log")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(SUBJECT, ordered_consumer=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            batch = events_pb2.PredictionLogBatch()
            batch.ParseFromString(msg.data)
            for logged in batch.logs:
                if logged.traceparent == traceparent:
                    return batch, logged, dict(msg.headers or {})
        raise AssertionError(f"no prediction log with traceparent {traceparent} on {SUBJECT} within {timeout}s")
    finally:
        await nc.close()


@pytest.mark.integration  # starts its own nats-server (and Triton)
def test_prediction_log_reaches_jetstream_with_trace_context(served: Served) -> None:
    x = served.trained.X[20:25]
    got = _infer(served.client, x, parameters={"traceparent": TRACEPARENT})

    batch, logged, headers = asyncio.run(_find_log(served.nats.url, TRACEPARENT, timeout=30))

    assert logged.batch_rows == 5
    assert batch.tenant == TENANT and logged.tenant == ""  # the batch's fields apply to its entries
    # The version is Triton's version directory (1), not the shared "model_version" parameter (3):
    # during a rollout one Triton model holds two versions under one configuration.
    assert (batch.lineage.model_name, batch.lineage.model_version, batch.lineage.deployment) == (
        MODEL,
        1,
        DEPLOYMENT,
    )
    assert len(batch.feature_names) == x.shape[1]
    assert logged.logged_rows == 5 and len(logged.inputs) == 5 * x.shape[1] and len(logged.outputs) == 5
    assert logged.outputs == pytest.approx(list(got.reshape(-1)))
    assert logged.trace_id == TRACEPARENT.split("-")[1] and logged.request_id == logged.log_id
    assert logged.error == ""
    np.testing.assert_allclose(list(logged.first_row_inputs), x[0])
    np.testing.assert_allclose(list(logged.first_row_outputs), got[0], atol=1e-9)
    assert logged.time.seconds > 0
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "ai.lepton.prediction.batch.logged.v1"
    assert headers["ce-source"] == f"/lepton/triton/{MODEL}"
    assert headers["ce-subject"] == DEPLOYMENT
    assert headers["ce-id"] == headers["Nats-Msg-Id"] == batch.batch_id
    assert headers["ce-time"].endswith("Z")
    assert headers["content-type"] == "application/protobuf; proto=lepton.events.v1.PredictionLogBatch"
    # The batch is no request's child: its own trace context, not the request's.
    assert headers["traceparent"].startswith("00-") and headers["traceparent"] != TRACEPARENT


# --- model.py in-process, with a stand-in for the stub's triton_python_backend_utils ---
# Triton checks the input width against the config before the model sees a request,
# so the model's own per-request error path is exercised here directly.


class _Tensor:
    def __init__(self, name: str, array: NDArray[Any]) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> NDArray[Any]:
        return self._array


class _Error:
    def __init__(self, msg: str) -> None:
        self._msg = msg

    def message(self) -> str:
        return self._msg


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: _Error | None = None) -> None:
        self.output_tensors, self._error = output_tensors, error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> _Error | None:
        return self._error


#: The inference secret of the in-process model tests (``model_module``).
FAKE_SECRET = "in-process-test-secret"


class _Request:
    def __init__(self, x: NDArray[Any], name: str = "features") -> None:
        self.tensors = [_Tensor(name, x)]

    def parameters(self) -> str:
        return json.dumps({"lepton-inference-secret": FAKE_SECRET})  # as Triton forwards the gateway's header

    def request_id(self) -> str:
        return ""


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")

    def by_name(obj: Any, name: str) -> _Tensor | None:
        tensors = obj.tensors if isinstance(obj, _Request) else obj.output_tensors
        return next((t for t in tensors if t.name() == name), None)

    mod.Tensor = _Tensor  # type: ignore[attr-defined]
    mod.TritonError = _Error  # type: ignore[attr-defined]
    mod.InferenceResponse = _Response  # type: ignore[attr-defined]
    mod.get_input_tensor_by_name = by_name  # type: ignore[attr-defined]
    mod.get_output_tensor_by_name = by_name  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def model_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    for name in ("LEPTON_SERVING_NATS_URL", "LEPTON_SERVING_NATS_SEED_FILE"):
        monkeypatch.delenv(name, raising=False)  # a test that wants prediction logs sets them
    monkeypatch.setenv(PUBLIC_KEY_ENV, str(artifact_keys().public_key_file))  # as TritonServer sets it
    secret_file = Path(tempfile.mkdtemp(prefix="lepton-test-")) / "inference-secret"
    secret_file.write_text(FAKE_SECRET)
    monkeypatch.setenv("LEPTON_TRITON_INFERENCE_SECRET_FILE", str(secret_file))  # as TritonServer sets it
    spec = importlib.util.spec_from_file_location("lepton_triton_model_under_test", MODEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_execute_splits_a_batch_and_fails_only_the_bad_request(model_module: Any, tmp_path: Path) -> None:
    trained = _train()
    version = tmp_path / "1"
    version.mkdir()
    for key, data in trained.files.items():
        (version / key.removeprefix("file:1/")).write_bytes(data)
    model = model_module.TritonPythonModel()
    model.initialize(
        {
            "model_name": MODEL,
            "model_repository": str(tmp_path),
            "model_version": "1",
            "model_config": _config(trained.X.shape[1]),  # no NATS in the environment: no prediction logs
        }
    )
    x = trained.X
    responses = model.execute([_Request(x[:3]), _Request(x[3:5, :9]), _Request(x[5:9])])
    assert [r.has_error() for r in responses] == [False, True, False]
    assert "shape" in responses[1].error().message()
    np.testing.assert_allclose(responses[0].output_tensors[0].as_numpy()[:, 0], trained.model.predict(x[:3]))
    np.testing.assert_allclose(responses[2].output_tensors[0].as_numpy()[:, 0], trained.model.predict(x[5:9]))
    assert responses[2].output_tensors[0].as_numpy().shape == (4, 1)
    model.finalize()


def _renamed_tensors(n_features: int) -> dict[str, Any]:
    """A model configuration (without logging) whose input is ``rows`` and output ``answer``."""
    config: dict[str, Any] = json.loads(_config(n_features))
    config["input"][0]["name"], config["output"][0]["name"] = "rows", "answer"
    return config


def test_tensor_names_are_those_the_model_config_declares(model_module: Any, tmp_path: Path) -> None:
    trained = _train()
    version = tmp_path / "1"
    version.mkdir()
    for key, data in trained.files.items():
        (version / key.removeprefix("file:1/")).write_bytes(data)
    config = _renamed_tensors(trained.X.shape[1])
    args = {"model_name": MODEL, "model_repository": str(tmp_path), "model_version": "1"}
    model = model_module.TritonPythonModel()
    model.initialize({**args, "model_config": json.dumps(config)})
    good, unnamed = model.execute([_Request(trained.X[:2], name="rows"), _Request(trained.X[:2])])
    assert good.output_tensors[0].name() == "answer"
    np.testing.assert_allclose(good.output_tensors[0].as_numpy()[:, 0], trained.model.predict(trained.X[:2]))
    assert unnamed.has_error() and unnamed.error().message().startswith("rows must have shape")
    model.finalize()

    del config["input"]
    with pytest.raises(ValueError, match="must declare one numeric input"):
        model_module.TritonPythonModel().initialize({**args, "model_config": json.dumps(config)})


def test_an_onnx_conversion_is_fed_by_its_own_tensor_names(model_module: Any, tmp_path: Path) -> None:
    from lepton_ml import onnx_export

    trained = _train()
    version = tmp_path / "1"
    version.mkdir()
    for key, data in trained.files.items():
        (version / key.removeprefix("file:1/")).write_bytes(data)
    bundle = artifacts.load_bundle(trained.files[f"file:1/{artifacts.ARTIFACT_FILE}"], artifact_keys().trusted())
    conversion = onnx_export.convert(artifacts.Bundle(trained.model, bundle.signature, None))
    assert conversion.ok, conversion.reason
    (version / model_module.ONNX_FILE).write_bytes(conversion.onnx)
    (version / model_module.ONNX_INFO_FILE).write_text(json.dumps({"estimator": "LinearRegression"}))
    model = model_module.TritonPythonModel()
    model.initialize(
        {
            "model_name": MODEL,
            "model_repository": str(tmp_path),
            "model_version": "1",
            "model_config": json.dumps(_renamed_tensors(trained.X.shape[1])),
        }
    )
    assert model.session is not None and model.model is None  # onnxruntime serves it
    (response,) = model.execute([_Request(trained.X[:4], name="rows")])
    assert response.output_tensors[0].name() == "answer"
    np.testing.assert_allclose(response.output_tensors[0].as_numpy()[:, 0], trained.model.predict(trained.X[:4]))
    model.finalize()


def test_untrusted_types_in_a_skops_file_are_refused(model_module: Any) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipeline = make_pipeline(FunctionTransformer(_double), LinearRegression())
    data = sio.dumps(pipeline.fit(np.ones((4, 2)), np.arange(4.0)))
    with pytest.raises(ValueError, match="not trusted"):
        model_module.load_estimator(data)
    assert isinstance(model_module.load_estimator(sio.dumps(LinearRegression())), LinearRegression)


def _double(x: NDArray[Any]) -> NDArray[Any]:
    return x * 2


def test_nats_down_never_blocks_execute_and_finalize_is_bounded(
    model_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = _train()
    version = tmp_path / "1"
    version.mkdir()
    for key, data in trained.files.items():
        (version / key.removeprefix("file:1/")).write_bytes(data)
    monkeypatch.setenv("LEPTON_SERVING_NATS_URL", f"nats://127.0.0.1:{free_port()}")  # nobody listens
    model = model_module.TritonPythonModel()
    model.initialize(
        {
            "model_name": MODEL,
            "model_repository": str(tmp_path),
            "model_version": "1",
            "model_config": _config(trained.X.shape[1]),
        }
    )
    t0 = time.monotonic()
    for _ in range(QUEUE_SIZE + 100):  # more than the queue holds
        model.execute([_Request(trained.X[:2])])
    assert time.monotonic() - t0 < 10
    assert model.logger.dropped >= 100
    t1 = time.monotonic()
    model.finalize()
    assert time.monotonic() - t1 < 4


async def _batches(url: str, timeout: float = 10.0) -> list[events_pb2.PredictionLogBatch]:
    """Every batch on the subject so far (waits until no new one came for a second)."""
    import nats

    nc = await admin_connect(url, "test-batches")
    found: list[events_pb2.PredictionLogBatch] = []
    try:
        sub = await nc.jetstream().subscribe(SUBJECT, ordered_consumer=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except nats.errors.TimeoutError:
                break
            batch = events_pb2.PredictionLogBatch()
            batch.ParseFromString(msg.data)
            found.append(batch)
    finally:
        await nc.close()
    return found


@pytest.mark.integration  # starts its own nats-server (and Triton)
def test_the_rate_cap_logs_a_second_s_worth_and_counts_the_rest(
    model_module: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = _train()
    version = tmp_path / "1"
    version.mkdir()
    for key, data in trained.files.items():
        (version / key.removeprefix("file:1/")).write_bytes(data)
    server = NatsServer(tmp_path_factory.mktemp("nats-cap"))
    try:
        monkeypatch.setenv("LEPTON_SERVING_NATS_URL", server.url)
        monkeypatch.setenv("LEPTON_SERVING_NATS_SEED_FILE", str(server.seed_file(SERVING)))
        model = model_module.TritonPythonModel()
        model.initialize(
            {
                "model_name": MODEL,
                "model_repository": str(tmp_path),
                "model_version": "1",
                "model_config": _config(trained.X.shape[1], log_max_per_s="50"),
            }
        )
        started = time.monotonic()
        for k in range(400):  # far more than 50 a second
            model.execute([_Request(trained.X[k % 100 : k % 100 + 1])])
        elapsed = time.monotonic() - started
        time.sleep(0.3)
        model.finalize()
        batches = asyncio.run(_batches(server.url))
    finally:
        server.stop()
    logged = sum(len(b.logs) for b in batches)
    unlogged = sum(b.unlogged for b in batches)
    assert logged + unlogged == 400  # every request either logged or counted
    # The bucket holds a second's worth (50) and refills at 50/s while the loop runs.
    assert 50 <= logged <= 50 + 50 * elapsed + 1, (logged, elapsed)
    assert model.logger.dropped == 0


@pytest.mark.integration  # starts its own nats-server (and Triton)
def test_inference_without_the_gateways_secret_is_refused(served: Served) -> None:
    """A client that reaches Triton's port directly gains nothing: no secret, or a guessed one, is refused."""
    for headers in (None, {"lepton-inference-secret": "a-guess-a-guess-a-guess"}):
        with pytest.raises(InferenceServerException, match="through the Lepton gateway"):
            _infer(served.client, served.trained.X[:2], headers=headers)
    np.testing.assert_allclose(
        _infer(served.client, served.trained.X[:2])[:, 0], served.trained.model.predict(served.trained.X[:2]), atol=1e-6
    )
