"""Lepton's Triton Python-backend model: a scikit-learn estimator saved with skops.

Triton copies this file into each deployed model's version folder next to
``model.skops`` and ``signature.json``, and runs it in the Python backend's stub
process. A plain model needs only numpy, skops, nats-py, the generated Lepton protos,
the standard library and ``triton_python_backend_utils``. A model trained on a
recipe-made dataset version also ships ``preprocess.json`` and takes raw rows: it
replays the recipes with ``lepton_core.artifacts`` (polars), the one implementation
the data service and the SDK use too, so serving transforms exactly as training did.

Tensors: input ``features`` FP64 ``[batch, n]`` (the model's features, or its raw
numeric inputs when it has a recipe chain; NaN means missing), ``text_features``
BYTES ``[batch, m]`` for raw text inputs, output ``prediction`` FP64 ``[batch, 1]``.
Requests arrive dynamically batched; each ``execute`` call predicts all valid rows
with one ``model.predict`` call, then splits the result back per request. A malformed
request gets its own error response and never fails the others.

Prediction logging: when the model config's ``nats_url`` parameter is set, a sample
of requests (``log_sample_rate``) is published as ``PredictionLogged`` CloudEvents to
JetStream on ``lepton.pred.<tenant>.<deployment>``. Inference must never wait on
NATS, so ``execute`` only does a non-blocking ``put_nowait`` on a bounded queue
(dropping, and counting, when it is full); a daemon thread with its own asyncio loop
owns the NATS connection and publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import skops.io as sio
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found, unused-ignore]

log = logging.getLogger("lepton.triton_model")
if not log.handlers:
    # The stub's stderr ends up in Triton's log; the stub configures no logging itself.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)

#: Type-name prefixes a skops file may contain. Anything else (arbitrary classes or
#: functions) could run code on load, so such a file is refused.
TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "builtins.", "collections.", "scipy.sparse.")

INPUT_NAME = "features"
TEXT_INPUT_NAME = "text_features"
OUTPUT_NAME = "prediction"
CE_TYPE = "ai.lepton.prediction.logged.v1"
CONTENT_TYPE = "application/protobuf; proto=lepton.events.v1.PredictionLogged"
SUBJECT_ROOT = "lepton.pred"
QUEUE_SIZE = 1000
FLUSH_TIMEOUT_S = 2.0
PUBLISH_TIMEOUT_S = 2.0
#: Request parameters copied into the event headers (W3C trace context).
TRACE_HEADERS: tuple[str, ...] = ("traceparent", "tracestate")


def load_estimator(data: bytes) -> Any:
    """Loads a skops file, refusing any type outside :data:`TRUSTED_PREFIXES`.

    skops lists the types it does not trust by default; we trust exactly those that
    are scikit-learn, numpy, scipy.sparse or builtin types, and raise on the rest
    rather than run code from an uploaded file. Pickle is never used.
    """
    untrusted = sio.get_untrusted_types(data=data)
    try:
        # The same list the trainer used: built-ins plus custom models installed here.
        from lepton_core.artifacts import trusted_prefixes

        allowed = trusted_prefixes()
    except ImportError:  # a serving host without lepton-core serves the built-in models
        allowed = TRUSTED_PREFIXES
    refused = [t for t in untrusted if not t.startswith(allowed)]
    if refused:
        raise ValueError(f"model.skops contains types that are not trusted: {', '.join(sorted(refused))}")
    return sio.loads(data, trusted=untrusted)


@dataclass(frozen=True)
class LogItem:
    """One sampled prediction, queued by ``execute`` for the publisher thread."""

    log_id: str
    time_ns: int
    batch_rows: int
    latency_us: int
    first_row_inputs: list[float]
    first_row_outputs: list[float]
    error: str
    trace: dict[str, str]


class PredictionLogger:
    """Publishes sampled prediction logs to JetStream from a background thread.

    ``submit`` never blocks: the queue is bounded and a full queue drops the item
    (counted in :attr:`dropped`). Publish errors are logged and the item dropped:
    prediction logs are telemetry, and serving must not depend on NATS being up.
    """

    def __init__(
        self,
        *,
        url: str,
        subject: str,
        source: str,
        tenant: str,
        deployment: str,
        model_name: str,
        model_version: int,
    ) -> None:
        self.url = url
        self.subject = subject
        self.source = source
        self.tenant = tenant
        self.deployment = deployment
        self.model_name = model_name
        self.model_version = model_version
        self.queue: queue.Queue[LogItem] = queue.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.published = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._thread_main, name="lepton-prediction-log", daemon=True)
        self._thread.start()

    def submit(self, item: LogItem) -> None:
        """Queues ``item`` without blocking; drops it when the queue is full."""
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("prediction log queue full: %d logs dropped so far", self.dropped)

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Publishes what is queued, waiting at most ``timeout`` seconds, then disconnects."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Still connecting or publishing: give up on the rest rather than hold unload.
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
            self._thread.join(0.5)
            log.warning("prediction log flush timed out; %d logs not published", self.queue.qsize())

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._run())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("prediction log publisher stopped")
        finally:
            with contextlib.suppress(Exception):
                loop.close()

    async def _run(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.warning("NATS connection error: %s", exc)

        nc = await nats.connect(
            self.url,
            name=self.source,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=on_error,
        )
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        try:
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    # Wait in a worker thread so the loop keeps serving the connection.
                    try:
                        item = await asyncio.to_thread(self.queue.get, True, 0.1)
                    except queue.Empty:
                        continue
                await self._publish(js, item)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 1.0)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _publish(self, js: Any, item: LogItem) -> None:
        try:
            payload, headers = self.encode(item)
            await js.publish(self.subject, payload, headers=headers)
            self.published += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("prediction log %s not published: %s", item.log_id, exc)

    def encode(self, item: LogItem) -> tuple[bytes, dict[str, str]]:
        """The protobuf payload and CloudEvents binary-mode headers for ``item``."""
        from lepton.common.v1 import common_pb2
        from lepton.events.v1 import events_pb2

        msg = events_pb2.PredictionLogged(
            tenant=self.tenant,
            lineage=common_pb2.Lineage(
                model_name=self.model_name,
                model_version=self.model_version,
                deployment=self.deployment,
            ),
            log_id=item.log_id,
            batch_rows=item.batch_rows,
            latency_us=item.latency_us,
            first_row_inputs=item.first_row_inputs,
            first_row_outputs=item.first_row_outputs,
            error=item.error,
        )
        msg.time.FromNanoseconds(item.time_ns)
        when = datetime.fromtimestamp(item.time_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")
        headers = {
            "ce-specversion": "1.0",
            "ce-id": item.log_id,
            "ce-type": CE_TYPE,
            "ce-source": self.source,
            "ce-time": when,
            "ce-subject": self.deployment,
            "content-type": CONTENT_TYPE,
            "Nats-Msg-Id": item.log_id,
            **item.trace,
        }
        return msg.SerializeToString(), headers


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


def _trace_context(request: Any) -> dict[str, str]:
    """``traceparent``/``tracestate`` from the request's parameters, if the client sent them."""
    try:
        params = json.loads(request.parameters() or "{}")
    except (ValueError, TypeError, AttributeError):
        return {}
    if not isinstance(params, dict):
        return {}
    return {k: str(params[k]) for k in TRACE_HEADERS if params.get(k)}


class TritonPythonModel:
    """Serves one skops-saved estimator; see the module docstring."""

    def initialize(self, args: dict[str, str]) -> None:
        """Loads the estimator and signature from the version folder; starts logging if configured."""
        self.model_name = args["model_name"]
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(version_dir, "signature.json"), encoding="utf-8") as f:
            self.signature: dict[str, Any] = json.load(f)
        self.features: list[str] = list(self.signature["features"])
        self.n_features = len(self.features)
        self.input_dtype = np.dtype(self.signature.get("input_dtype") or "float64")
        skops_path = os.path.join(version_dir, "model.skops")
        if os.path.exists(skops_path):
            with open(skops_path, "rb") as f:
                self.model = load_estimator(f.read())
        else:
            # A torch MLP: weights (safetensors) and architecture (JSON), never pickle.
            from lepton_core.mlp import MLPModel

            files = {}
            for name in ("model.safetensors", "architecture.json"):
                with open(os.path.join(version_dir, name), "rb") as f:
                    files[name] = f.read()
            self.model = MLPModel.from_files(files)
        expected = getattr(self.model, "n_features_in_", self.n_features)
        if expected != self.n_features:
            raise ValueError(f"signature.json names {self.n_features} features but the model expects {expected}")
        # A model trained on a recipe-made dataset takes raw rows and replays the recipes
        # (fitted parameters included) from preprocess.json before predicting.
        self.bundle: Any = None
        self.raw_dtypes: dict[str, str] = {c["name"]: c["dtype"] for c in self.signature.get("inputs") or []}
        self.numeric_inputs: list[str] = list(self.features)
        self.text_inputs: list[str] = []
        preprocess_path = os.path.join(version_dir, "preprocess.json")
        if os.path.exists(preprocess_path):
            from lepton_core import artifacts

            with open(preprocess_path, encoding="utf-8") as f:
                preprocess = artifacts.Preprocess(**json.load(f))
            signature = artifacts.Signature(**self.signature)
            self.bundle = artifacts.Bundle(self.model, signature, preprocess)
            self.numeric_inputs = signature.numeric_inputs()
            self.text_inputs = signature.text_inputs()

        params = _parameters(json.loads(args["model_config"]))
        try:
            rate = float(params.get("log_sample_rate") or 1.0)
        except ValueError:
            rate = 1.0
        self.sample_rate = min(max(rate, 0.0), 1.0)
        self.logger: PredictionLogger | None = None
        nats_url = params.get("nats_url", "")
        if nats_url:
            tenant = params.get("tenant", "") or "default"
            deployment = params.get("deployment", "") or self.model_name
            try:
                model_version = int(params.get("model_version") or 0)
            except ValueError:
                model_version = 0
            self.logger = PredictionLogger(
                url=nats_url,
                subject=f"{SUBJECT_ROOT}.{tenant}.{deployment}",
                source=f"/lepton/triton/{self.model_name}",
                tenant=tenant,
                deployment=deployment,
                model_name=params.get("model_name", "") or self.model_name,
                model_version=model_version,
            )
        log.info(
            "model %s ready: %s, %d features, prediction logging %s",
            self.model_name,
            self.signature.get("algorithm", type(self.model).__name__),
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
                x = self._matrix(request)
            except ValueError as exc:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
                continue
            inputs.append(x)
            valid.append(i)

        outputs: list[np.ndarray[Any, Any]] = []
        batch_error = ""
        if inputs:
            try:
                rows = np.concatenate(inputs, axis=0).astype(self.input_dtype, copy=False)
                predicted = np.asarray(self.model.predict(rows), dtype=np.float64).reshape(len(rows), -1)[:, :1]
                bounds = np.cumsum([len(x) for x in inputs])[:-1]
                outputs = list(np.split(predicted, bounds))
            except Exception as exc:
                batch_error = f"prediction failed: {exc}"
        latency_us = (time.perf_counter_ns() - start) // 1000

        for k, i in enumerate(valid):
            if batch_error:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(batch_error))
            else:
                out = np.ascontiguousarray(outputs[k], dtype=np.float64)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, out)])

        if self.logger is not None:
            for i, request in enumerate(requests):
                if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
                    continue
                self.logger.submit(self._log_item(request, responses[i], latency_us))
        return responses

    def _matrix(self, request: Any) -> np.ndarray[Any, Any]:
        """The estimator's input rows for one request; ValueError says what is wrong with it."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        x = tensor.as_numpy() if tensor is not None else None
        width = len(self.numeric_inputs)
        if x is None or x.ndim != 2 or x.shape[1] != width:
            shape = None if x is None else list(x.shape)
            raise ValueError(f"{INPUT_NAME} must have shape [batch, {width}], got {shape}")
        if self.bundle is None:
            return x
        text = None
        if self.text_inputs:
            t_tensor = pb_utils.get_input_tensor_by_name(request, TEXT_INPUT_NAME)
            text = t_tensor.as_numpy() if t_tensor is not None else None
            if text is None or text.ndim != 2 or text.shape != (len(x), len(self.text_inputs)):
                shape = None if text is None else list(text.shape)
                raise ValueError(f"{TEXT_INPUT_NAME} must have shape [{len(x)}, {len(self.text_inputs)}], got {shape}")
        try:
            return self.bundle.features(raw_frame(self.numeric_inputs, x, self.text_inputs, text, self.raw_dtypes))
        except Exception as exc:
            raise ValueError(f"preprocessing failed: {exc}") from exc

    def _log_item(self, request: Any, response: Any, latency_us: int) -> LogItem:
        """What to log about one request (first row only, to keep logs small)."""
        tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
        x = tensor.as_numpy() if tensor is not None else np.empty((0, 0))
        x2 = x.reshape(len(x), -1) if x.ndim >= 1 and len(x) else np.empty((0, 0))
        error = response.error().message() if response.has_error() else ""
        first_out: list[float] = []
        if not error:
            y = pb_utils.get_output_tensor_by_name(response, OUTPUT_NAME)
            if y is not None and len(y.as_numpy()):
                first_out = [float(v) for v in y.as_numpy()[0]]
        return LogItem(
            log_id=uuid.uuid4().hex,
            time_ns=time.time_ns(),
            batch_rows=len(x2),
            latency_us=int(latency_us),
            first_row_inputs=[float(v) for v in x2[0]] if len(x2) else [],
            first_row_outputs=first_out,
            error=error,
            trace=_trace_context(request),
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
