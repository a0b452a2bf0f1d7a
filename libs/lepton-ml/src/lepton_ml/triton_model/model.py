"""Lepton's Triton Python-backend model: a scikit-learn estimator saved with skops.

Triton copies this file into each deployed model's version folder next to
``artifact.lepton``, the signed artifact, and runs it in the Python backend's stub
process. The model verifies the artifact's Ed25519 signature against the public key
named by the Triton process's ``LEPTON_ARTIFACT_PUBLIC_KEY_FILE`` before reading a byte
of it, and reads the bundle (``model.skops``, ``signature.json``, ...) from it in memory.
A plain model needs numpy, skops, ``lepton_ml`` (and cryptography, to verify), nats-py, the
generated Lepton protos, the standard library and ``triton_python_backend_utils``. A model trained on a
recipe-made dataset version also ships ``preprocess.json`` and takes raw rows: it
replays the recipes with ``lepton_ml.artifacts`` (polars), the one implementation
the data service and the SDK use too, so serving transforms exactly as training did.

Tensors, named by the model configuration (the deployer's, from ``lepton_ml.serving``):
input ``features`` FP64 ``[batch, n]`` (the model's features, or its raw numeric inputs
when it has a recipe chain; NaN means missing), ``text_features`` BYTES ``[batch, m]``
(the ``TYPE_STRING`` input) for raw text inputs, output ``prediction`` FP64 ``[batch, 1]``.
Requests arrive dynamically batched; each ``execute`` call predicts all valid rows
with one ``model.predict`` call, then splits the result back per request. A malformed
request gets its own error response and never fails the others.

Instances: on a ``KIND_GPU`` instance the model runs on that instance's GPU when a runtime
here can (onnxruntime's CUDA provider, else torch for an MLP), else on the CPU; each
instance logs its choice. Loading refuses a backend that garbles this environment's numpy
arrays (``_check_numpy_abi``).

Prediction logging: when Triton's environment names NATS (``LEPTON_SERVING_NATS_URL``, and the
``serving`` identity's nkey seed file in ``LEPTON_SERVING_NATS_SEED_FILE``; never the model config,
which Triton clients can read), a sample of requests (``log_sample_rate`` > 0) is published to the
PREDICTIONS stream on ``lepton.pred.<tenant>.<deployment>`` by
:class:`lepton_ml.triton_model.prediction_log.PredictionLogger`, off the request's path.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import sys
import time
import uuid
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found, unused-ignore]

from lepton_ml.triton_model.prediction_log import FLUSH_TIMEOUT_S, LogItem, PredictionLogger
from lepton_ml.triton_model.request_gate import InferenceGate
from lepton_ml.triton_model.request_gate import parameters_of as _parameters_of
from lepton_ml.triton_model.request_gate import trace_id as _trace_id

log = logging.getLogger("lepton.triton_model")
if not log.handlers:
    # The stub's stderr ends up in Triton's log; the stub configures no logging itself.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

#: An exact ONNX conversion of the estimator, added by the deployer (run by onnxruntime).
ONNX_FILE = "lepton.onnx"
#: What serving the ONNX file needs to know of the estimator (``allow_nan``), so the stub
#: need not load the estimator, nor import scikit-learn, to serve it.
ONNX_INFO_FILE = "lepton-onnx.json"
#: Request parameter that marks a request as a check, not traffic: it is never logged.
CHECK_PARAMETER = "lepton_check"
#: Rows of each sampled request whose inputs and outputs go into its log (the
#: ``max_logged_rows`` parameter overrides it); the monitor's drift works on these.
DEFAULT_LOGGED_ROWS = 32
SUBJECT_ROOT = "lepton.pred"


def load_estimator(data: bytes) -> Any:
    """Loads a skops file with :func:`lepton_ml.artifacts.load_model_bytes`: refused (ValueError) when it
    holds a type outside the exact allow-list, since an arbitrary class or function could run code on
    load. Pickle is never used."""
    from lepton_ml import artifacts  # here, not at the top: an ONNX-served model never imports scikit-learn

    try:
        return artifacts.load_model_bytes(data)
    except Exception as exc:  # DataIntegrityError: Triton reports the message as the load's error
        raise ValueError(str(exc)) from None


def read_artifact(version_dir: str) -> dict[str, bytes]:
    """The bundle's files, from the signed artifact in ``version_dir``, verified and unpacked in memory.

    The public key comes from the Triton process's environment (``LEPTON_ARTIFACT_PUBLIC_KEY_FILE``),
    never from the model configuration a load request carries; without it nothing is loaded.
    """
    from lepton_ml import artifacts, signing

    key_file = os.environ.get(signing.PUBLIC_KEY_ENV, "")
    if not key_file:
        raise ValueError(f"{signing.PUBLIC_KEY_ENV} is not set on this Triton server: no artifact can be verified")
    with open(os.path.join(version_dir, artifacts.ARTIFACT_FILE), "rb") as f:
        signed = f.read()
    try:
        return artifacts.unpack_files(signed, signing.load_public_keys(key_file))
    except Exception as exc:  # DataIntegrityError, FailedPrecondition: the load fails with the reason
        raise ValueError(f"{artifacts.ARTIFACT_FILE} refused: {exc}") from None


def raw_frame(
    numeric: list[str],
    x: np.ndarray[Any, Any],
    text: list[str],
    t: np.ndarray[Any, Any] | None,
    dtypes: dict[str, str],
) -> Any:
    """A polars frame of raw input rows, each column in the dtype it had at upload."""
    import polars as pl

    columns: dict[str, Any] = {}
    for j, name in enumerate(numeric):
        series = pl.Series(name, x[:, j], dtype=pl.Float64)
        # NaN in the tensor means missing; integer columns go back to their integer type.
        series = series.fill_nan(None)
        dtype = getattr(pl, dtypes.get(name, "Float64"), pl.Float64)
        columns[name] = series.cast(dtype) if dtype != pl.Float64 else series
    for j, name in enumerate(text):
        assert t is not None
        values = [v.decode("utf-8") if isinstance(v, bytes) else (None if v is None else str(v)) for v in t[:, j]]
        columns[name] = pl.Series(name, values, dtype=pl.String)
    return pl.DataFrame(columns)


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    """The model config's ``parameters`` as plain strings."""
    out: dict[str, str] = {}
    for key, value in (config.get("parameters") or {}).items():
        out[key] = str(value.get("string_value", "")) if isinstance(value, dict) else str(value)
    return out


def _tensor_names(config: dict[str, Any]) -> tuple[str, str, str]:
    """The numeric input's, the text input's (empty when none) and the output's names in the model config."""
    inputs, outputs = config.get("input") or [], [str(o["name"]) for o in config.get("output") or []]
    numeric = [str(i["name"]) for i in inputs if i.get("data_type") != "TYPE_STRING"]
    text = [str(i["name"]) for i in inputs if i.get("data_type") == "TYPE_STRING"]
    if len(numeric) != 1 or len(text) > 1 or len(outputs) != 1:
        raise ValueError(
            "the model configuration must declare one numeric input, at most one TYPE_STRING input and one "
            f"output; it declares inputs {[i['name'] for i in inputs]} and outputs {outputs}"
        )
    return numeric[0], text[0] if text else "", outputs[0]


def _allows_nan(model: Any) -> bool:
    """Whether the estimator takes NaN (scikit-learn's input tags; anything else: no)."""
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:
        return False


def _check_numpy_abi() -> None:
    """Refuses to serve when Triton's Python backend garbles this environment's numpy arrays.

    The backend is compiled against one numpy ABI. Under another, its tensors read the
    wrong elements and its outputs arrive empty, with no error at all: seen with Triton
    2.51 (nvidia-pytriton 0.7) and numpy 2.5 in the stub's environment on a GPU host
    (docs/serving.md). The backend builds a numpy view over memory it holds the way it
    does for every request's inputs when a tensor comes from DLPack, so one array made
    into a backend tensor, passed through DLPack and read back tells.
    """
    if not hasattr(pb_utils.Tensor, "from_dlpack"):
        return  # a backend without DLPack (or a test double): nothing to probe with
    probe = np.arange(6, dtype=np.float64).reshape(2, 3) + 0.5
    try:
        source = pb_utils.Tensor("lepton_probe", probe)
        view = pb_utils.Tensor.from_dlpack("lepton_probe", source.to_dlpack())
        back = np.array(view.as_numpy())  # a copy: the view dies with the tensors
    except Exception as exc:  # the probe itself failed: that tells nothing about the layout
        log.warning("could not check the Python backend's numpy ABI: %s", exc)
        return
    if back.shape != probe.shape or not np.array_equal(back, probe):
        raise RuntimeError(
            f"Triton's Python backend garbles numpy {np.__version__} arrays (sent {probe.tolist()}, read back "
            f"{back.tolist()}): it was built against another numpy ABI. Install numpy<2 in the environment the "
            "backend's stub runs in (that of the python3 first on tritonserver's PATH)"
        )


def _gpu_runtimes(device_id: int, torch_too: bool) -> set[str]:
    """Which runtimes here can run a model on GPU ``device_id``: ``onnxruntime``, ``torch``, both or none.

    A GPU host's stub environment may have onnxruntime with its CUDA provider
    (``onnxruntime-gpu``), torch with CUDA, either or neither. An exact ONNX conversion
    runs on onnxruntime's CUDA provider when there is one; an MLP runs on torch's CUDA
    otherwise; scikit-learn itself never runs on a GPU. torch is only looked at when
    ``torch_too`` (an MLP): importing it costs a model that cannot use it seconds of start-up.
    """
    found = set()
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            found.add("onnxruntime")
    except ImportError:
        pass
    if not torch_too:
        return found
    try:
        import torch

        if torch.cuda.is_available() and device_id < torch.cuda.device_count():
            found.add("torch")
    except ImportError:
        pass
    return found


class TritonPythonModel:
    """Serves one skops-saved estimator; see the module docstring."""

    def initialize(self, args: dict[str, str]) -> None:
        """Loads the estimator and signature from the version folder; starts logging if configured."""
        _check_numpy_abi()
        self.gate = InferenceGate.from_environment()  # only requests through the gateway are served
        self.model_name = args["model_name"]
        model_config = json.loads(args["model_config"])
        self.input_name, self.text_input_name, self.output_name = _tensor_names(model_config)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        # The bundle is read only from the signed artifact, verified first: no file of it is on disk.
        bundle_files = read_artifact(version_dir)
        self.signature: dict[str, Any] = json.loads(bundle_files["signature.json"])
        self.features: list[str] = list(self.signature["features"])
        self.n_features = len(self.features)
        self.input_dtype = np.dtype(self.signature.get("input_dtype") or "float64")
        # Where Triton placed this instance: a KIND_GPU instance gets a device id, and the
        # model runs there when its runtime can (see _gpu_runtimes); scikit-learn cannot.
        gpu = args.get("model_instance_kind") == "GPU"
        device_id = int(args.get("model_instance_device_id") or 0)
        # An exact ONNX conversion the deployer shipped beside the bundle: onnxruntime runs it,
        # and the estimator is not loaded at all (the stub starts seconds sooner).
        self.session: Any = None
        self.model: Any = None
        onnx_path = os.path.join(version_dir, ONNX_FILE)
        info_path = os.path.join(version_dir, ONNX_INFO_FILE)
        has_preprocess = "preprocess.json" in bundle_files
        is_mlp = "model.safetensors" in bundle_files
        use_onnx = os.path.exists(onnx_path) and os.path.exists(info_path) and not has_preprocess
        on_gpu = _gpu_runtimes(device_id, torch_too=is_mlp) if gpu else set()
        placed_on_gpu = False
        if use_onnx and not (is_mlp and on_gpu == {"torch"}):
            import onnxruntime as ort

            with open(info_path, encoding="utf-8") as f:
                onnx_info = json.load(f)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # Triton's instances are the parallelism
            options.inter_op_num_threads = 1
            providers: list[Any] = ["CPUExecutionProvider"]
            if "onnxruntime" in on_gpu:
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
            self.session = ort.InferenceSession(onnx_path, options, providers=providers)
            # The graph's own tensor names (lepton_ml.onnx_export puts the prediction first).
            self.onnx_io = (self.session.get_inputs()[0].name, self.session.get_outputs()[0].name)
            placed_on_gpu = "CUDAExecutionProvider" in self.session.get_providers()
            self.allow_nan = bool(onnx_info.get("allow_nan", False))
            self.algorithm = str(onnx_info.get("estimator") or self.signature.get("algorithm") or "the model")
            self.runtime = f"onnxruntime ({', '.join(self.session.get_providers())})"
        else:
            if "model.skops" in bundle_files:
                self.model = load_estimator(bundle_files["model.skops"])
                self.runtime = "scikit-learn (CPU)"
            else:
                # A torch MLP: weights (safetensors) and architecture (JSON), never pickle.
                from lepton_ml.mlp import MLPModel

                self.model = MLPModel.from_files(bundle_files)
                if "torch" in on_gpu:
                    self.model.to_device(f"cuda:{device_id}")
                    placed_on_gpu = True
                self.runtime = f"torch ({self.model.device})"
            self.allow_nan = _allows_nan(self.model)
            expected = getattr(self.model, "n_features_in_", self.n_features)
            if expected != self.n_features:
                raise ValueError(f"signature.json names {self.n_features} features but the model expects {expected}")
            self.algorithm = type(self.model).__name__
        if gpu and not placed_on_gpu:
            self.runtime += f", on CPU: a GPU instance (device {device_id}), but nothing here runs this model on a GPU"
        # A model trained on a recipe-made dataset takes raw rows and replays the recipes
        # (fitted parameters included) from preprocess.json before predicting.
        self.bundle: Any = None
        self.raw_dtypes: dict[str, str] = {c["name"]: c["dtype"] for c in self.signature.get("inputs") or []}
        self.numeric_inputs: list[str] = list(self.features)
        self.text_inputs: list[str] = []
        if has_preprocess:
            from lepton_ml import artifacts

            preprocess = artifacts.Preprocess(**json.loads(bundle_files["preprocess.json"]))
            signature = artifacts.Signature(**self.signature)
            self.bundle = artifacts.Bundle(self.model, signature, preprocess)
            self.numeric_inputs = signature.numeric_inputs()
            self.text_inputs = signature.text_inputs()
        if self.text_inputs and not self.text_input_name:
            raise ValueError("the model takes text inputs but its configuration has no TYPE_STRING input for them")

        params = _parameters(model_config)
        try:
            rate = float(params.get("log_sample_rate") or 1.0)
        except ValueError:
            rate = 1.0
        self.sample_rate = min(max(rate, 0.0), 1.0)
        try:
            self.max_logged_rows = max(0, int(params.get("max_logged_rows") or DEFAULT_LOGGED_ROWS))
        except ValueError:
            self.max_logged_rows = DEFAULT_LOGGED_ROWS
        try:
            per_s = float(params.get("log_max_per_s") or 0.0)
        except ValueError:
            per_s = 0.0
        # A token bucket of a second's logs: up to log_max_per_s requests a second are
        # logged (bursts included), the rest only counted; 0 means no limit.
        self.log_max_per_s = per_s if per_s > 0 and per_s != float("inf") else 0.0
        self._tokens = self.log_max_per_s
        self._refilled = time.monotonic()
        self.feature_names = self.numeric_inputs
        # Log ids: a random prefix per model instance and a counter (cheaper than a uuid4 a request).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count()
        self.logger: PredictionLogger | None = None
        nats_url = os.environ.get("LEPTON_SERVING_NATS_URL", "")
        if nats_url and self.sample_rate > 0:
            tenant = params.get("tenant", "") or "default"
            deployment = params.get("deployment", "") or self.model_name
            try:
                # Triton's version directory is the registry version (one Triton model may
                # hold two versions during a rollout, so the shared parameter cannot say).
                model_version = int(args.get("model_version") or params.get("model_version") or 0)
            except ValueError:
                model_version = 0
            # The publisher thread shares the GIL with execute: by default a thread waits up to
            # 5 ms for it, which showed up as the p99 of requests. Switch every 0.5 ms instead.
            sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
            self.logger = PredictionLogger(
                url=nats_url,
                seed_file=os.environ.get("LEPTON_SERVING_NATS_SEED_FILE") or None,
                subject=f"{SUBJECT_ROOT}.{tenant}.{deployment}",
                source=f"/lepton/triton/{self.model_name}",
                tenant=tenant,
                deployment=deployment,
                model_name=params.get("model_name", "") or self.model_name,
                model_version=model_version,
                feature_names=self.numeric_inputs,
            )
        log.info(
            "model %s ready: %s on %s, %d features, prediction logging %s",
            self.model_name,
            self.algorithm,
            self.runtime,
            self.n_features,
            f"to {nats_url} at rate {self.sample_rate}" if self.logger else "off",
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Predicts every valid request's rows in one call and answers each request separately."""
        start = time.perf_counter_ns()
        responses: list[Any] = [None] * len(requests)
        inputs: list[np.ndarray[Any, Any]] = []
        valid: list[int] = []
        for i, request in enumerate(requests):
            try:
                self.gate.check(_parameters_of(request))
                x = self._matrix(request)
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
                continue
            inputs.append(x)
            valid.append(i)

        outputs: list[np.ndarray[Any, Any]] = []
        if inputs:
            try:
                rows = np.concatenate(inputs, axis=0).astype(self.input_dtype, copy=False)
                predicted = self._predict(rows)
                bounds = np.cumsum([len(x) for x in inputs])[:-1]
                outputs = list(np.split(predicted, bounds))
            except Exception:
                # One request's rows broke the batch: answer each on its own, so only it fails.
                outputs = []
                for k, x in enumerate(inputs):
                    try:
                        outputs.append(self._predict(x.astype(self.input_dtype, copy=False)))
                    except Exception as exc:
                        outputs.append(np.empty((0, 1)))
                        i = valid[k]
                        responses[i] = pb_utils.InferenceResponse(
                            output_tensors=[], error=pb_utils.TritonError(f"prediction failed: {exc}")
                        )
        latency_us = (time.perf_counter_ns() - start) // 1000

        for k, i in enumerate(valid):
            if responses[i] is None:
                out = np.ascontiguousarray(outputs[k], dtype=np.float64)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, out)])

        if self.logger is not None:
            self._log(requests, responses, dict(zip(valid, outputs, strict=False)), latency_us)
        return responses

    def _log(
        self, requests: list[Any], responses: list[Any], produced: dict[int, np.ndarray[Any, Any]], latency_us: int
    ) -> None:
        """Queues the logs of this execute's requests: those the sample rate and the rate cap let through."""
        assert self.logger is not None
        now_ns = time.time_ns()
        if self.log_max_per_s:
            now = time.monotonic()
            self._tokens = min(self.log_max_per_s, self._tokens + (now - self._refilled) * self.log_max_per_s)
            self._refilled = now
        for i, request in enumerate(requests):
            params = _parameters_of(request)
            if params.get(CHECK_PARAMETER) or not self.gate.passes(params):
                continue  # the deployer's smoke test is not traffic
            if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
                self.logger.unlogged += 1
                continue
            if self.log_max_per_s:
                if self._tokens < 1.0:
                    self.logger.unlogged += 1
                    continue
                self._tokens -= 1.0
            self.logger.submit(self._log_item(request, params, responses[i], produced.get(i), latency_us, now_ns))

    def _matrix(self, request: Any) -> np.ndarray[Any, Any]:
        """The estimator's input rows for one request; ValueError says what is wrong with it."""
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        x = tensor.as_numpy() if tensor is not None else None
        width = len(self.numeric_inputs)
        if x is None or x.ndim != 2 or x.shape[1] != width:
            shape = None if x is None else list(x.shape)
            raise ValueError(f"{self.input_name} must have shape [batch, {width}], got {shape}")
        if self.bundle is None:
            return self._finite(x)
        text = None
        if self.text_inputs:
            t_tensor = pb_utils.get_input_tensor_by_name(request, self.text_input_name)
            text = t_tensor.as_numpy() if t_tensor is not None else None
            if text is None or text.ndim != 2 or text.shape != (len(x), len(self.text_inputs)):
                shape = None if text is None else list(text.shape)
                raise ValueError(
                    f"{self.text_input_name} must have shape [{len(x)}, {len(self.text_inputs)}], got {shape}"
                )
        try:
            features = self.bundle.features(raw_frame(self.numeric_inputs, x, self.text_inputs, text, self.raw_dtypes))
        except Exception as exc:
            raise ValueError(f"preprocessing failed: {exc}") from exc
        return self._finite(features)

    def _predict(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self.session is not None:
            onnx_input, onnx_output = self.onnx_io
            (out,) = self.session.run([onnx_output], {onnx_input: np.ascontiguousarray(rows, dtype=np.float64)})
            return np.asarray(out, dtype=np.float64).reshape(len(rows), -1)[:, :1]
        return np.asarray(self.model.predict(rows), dtype=np.float64).reshape(len(rows), -1)[:, :1]

    def _finite(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """``x``, unless it holds NaN/inf and the estimator cannot take missing values."""
        if self.allow_nan or x.dtype.kind not in "fc" or np.isfinite(x).all():
            return x
        row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(
            f"row {row}, feature {self.features[col]!r} is {x[row, col]}: "
            f"{self.algorithm} cannot take missing or infinite values"
        )

    def _log_item(
        self,
        request: Any,
        params: dict[str, Any],
        response: Any,
        predicted: np.ndarray[Any, Any] | None,
        latency_us: int,
        time_ns: int,
    ) -> LogItem:
        """What to log about one request: its first ``max_logged_rows`` rows, inputs and outputs."""
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        x = tensor.as_numpy() if tensor is not None else np.empty((0, 0))
        x2 = x.reshape(len(x), -1) if x.ndim >= 1 and len(x) else np.empty((0, 0))
        error = response.error().message() if response.has_error() else ""
        y = predicted.reshape(len(predicted), -1)[:, 0] if predicted is not None and not error else np.empty(0)
        kept = min(len(x2), self.max_logged_rows)
        if x2.size and x2.shape[1] != len(self.feature_names):
            kept = 0  # a malformed request: its values would not line up with the names
        if len(y) < kept:
            kept = 0
        traceparent = str(params.get("traceparent") or "")
        log_id = f"{self._id_prefix}{next(self._ids):016x}"
        return LogItem(
            log_id=log_id,
            time_ns=time_ns,
            batch_rows=len(x2),
            latency_us=int(latency_us),
            error=error,
            # A request without a trace context still gets a trace id (its log id: 32 hex digits).
            trace_id=_trace_id(traceparent) or log_id,
            traceparent=traceparent,
            # Copies: Triton may reuse the tensors' memory once execute returns.
            rows=np.array(x2[:kept], dtype=np.float64),
            outputs=np.array(y[:kept], dtype=np.float64),
            first_row=np.array(x2[0], dtype=np.float64) if len(x2) else np.empty(0),
            first_output=np.array(y[:1], dtype=np.float64),
            request_id=str(request.request_id() or ""),
        )

    def finalize(self) -> None:
        """Flushes queued prediction logs (at most 2 s) and closes the NATS connection."""
        if self.logger is not None:
            self.logger.close(FLUSH_TIMEOUT_S)
            log.info(
                "model %s unloaded: %d prediction logs published, %d dropped",
                self.model_name,
                self.logger.published,
                self.logger.dropped,
            )
