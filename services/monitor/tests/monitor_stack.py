"""The monitor as a process on real NATS, with the real data service and trainer beside it: what the service
tests share (test_monitor_service_incidents.py, test_monitor_service_queries.py; their fixtures are in
conftest.py).

Each test deploys its own model the way the platform does it: the training data is uploaded to the data
service (which announces ``dataset.version.created``), a scikit-learn Ridge is packed as an artifact in the
object store, and ``training.completed``, ``registry.version.created`` and ``deployment.ready`` are
published as the trainer, registry and deployer publish them. Prediction logs are ``PredictionLogged``
CloudEvents built field by field as the serving model (``triton_model/model.py``) builds them, with the
model's real predictions. Triton itself is not started here; the closed loop through Triton is an
end-to-end test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import polars as pl
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from nats.aio.client import Client as NATS
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM, ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_to_pb
from lepton_ml import artifacts
from lepton_platform.testing import artifact_keys

KEY = "monitor-test-key"
OTHER_KEY = "monitor-other-key"
TENANT = "mon" + uuid.uuid4().hex[:8]
OTHER = "oth" + uuid.uuid4().hex[:8]
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
SHIFTED = ["bmi", "bp"]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DIABETES = pl.from_pandas(load_diabetes(as_frame=True).frame)


@dataclass
class Deployed:
    name: str
    model: Ridge
    version: data_pb2.DatasetVersion
    newer: data_pb2.DatasetVersion | None
    job_id: str


async def _upload(address: str, name: str, frame: pl.DataFrame) -> data_pb2.DatasetVersion:
    raw = frame.write_csv().encode()

    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=raw)

    async with client_channel(address, KEY) as ch:
        return await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts(), timeout=30)


async def _publish(nc: NATS, message: Any, event_id: str, source: str, subject: str) -> None:
    await events.publish(nc.jetstream(), message, tenant=TENANT, event_id=event_id, source=source, ce_subject=subject)


async def deploy(nc: NATS, stack: dict[str, str], name: str, newer: pl.DataFrame | None = None) -> Deployed:
    """Uploads the training data, trains, and announces the model as trainer, registry and deployer would."""
    version = await _upload(stack["data"], name, DIABETES)
    x = DIABETES.select(FEATURES).to_numpy()
    model = Ridge(alpha=1.0).fit(x, DIABETES["target"].to_numpy())
    signature = artifacts.Signature(
        features=FEATURES, target="target", task="regression", algorithm="ridge", libraries=artifacts.library_versions()
    )
    packed = artifacts.seal(artifacts.pack(model, signature), artifact_keys().signer())
    ref = await ObjectStore(nc.jetstream()).put("artifacts", f"{TENANT}/{uuid.uuid4().hex}.zip", packed)
    job_id = "job_" + uuid.uuid4().hex[:20]
    lineage = common_pb2.Lineage(
        dataset_id=version.dataset_id, dataset_version_id=version.version_id, training_job_id=job_id, model_name=name
    )
    await _publish(
        nc,
        events_pb2.TrainingCompleted(
            tenant=TENANT,
            lineage=lineage,
            algorithm="ridge",
            params={"alpha": "1.0"},
            target="target",
            features=FEATURES,
            artifact=ref_to_pb(ref),
            dataset_object=version.object,
            split_seed=42,
            test_fraction=0.2,
            model_name=name,
            task="regression",
        ),
        f"training.completed:{job_id}",
        "/lepton/trainer",
        job_id,
    )
    lineage.model_version = 1
    await _publish(
        nc,
        events_pb2.ModelVersionCreated(
            tenant=TENANT,
            lineage=lineage,
            artifact=ref_to_pb(ref),
            metrics={"r2": 0.5},
            features=FEATURES,
            target="target",
            algorithm="ridge",
            dataset_object=version.object,
            split_seed=42,
            test_fraction=0.2,
        ),
        f"registry.version.created:{TENANT}:{name}:1",
        "/lepton/registry",
        f"{name}/1",
    )
    newer_version = await _upload(stack["data"], name, newer) if newer is not None else None
    lineage.deployment = name
    await _publish(
        nc,
        events_pb2.DeploymentReady(
            tenant=TENANT, lineage=lineage, triton_model=f"{TENANT}--{name}", triton_version="1", host="127.0.0.1:9"
        ),
        f"deployment.ready:{TENANT}:{name}:1",
        "/lepton/deployer",
        name,
    )
    async with client_channel(stack["monitor"], KEY) as ch:
        stub = monitor_pb2_grpc.MonitorServiceStub(ch)

        async def known() -> bool:
            try:
                metrics = await stub.GetServingMetrics(monitor_pb2.GetServingMetricsRequest(deployment=name))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            return metrics.serving_version == 1

        await until(known, 30, f"the monitor to learn of deployment {name}")
    return Deployed(name=name, model=model, version=version, newer=newer_version, job_id=job_id)


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def send_log(
    nc: NATS,
    deployment: str,
    rows: npt.NDArray[np.float64],
    outputs: npt.NDArray[np.float64] | None,
    *,
    latency_us: int = 1500,
    error: str = "",
    request_id: str = "",
    trace_id: str = "",
    at_ns: int | None = None,
) -> str:
    """One prediction log, as the serving model's ``PredictionLogger.encode`` builds and publishes it."""
    log_id = uuid.uuid4().hex
    kept = min(len(rows), 32)
    time_ns = at_ns or time.time_ns()
    message = events_pb2.PredictionLogged(
        tenant=TENANT,
        lineage=common_pb2.Lineage(model_name=deployment, model_version=1, deployment=deployment),
        log_id=log_id,
        batch_rows=len(rows),
        latency_us=latency_us,
        first_row_inputs=[float(v) for v in rows[0]],
        first_row_outputs=[] if error or outputs is None else [float(outputs[0])],
        error=error,
        feature_names=FEATURES,
        inputs=[float(v) for v in rows[:kept].ravel()],
        outputs=[] if error or outputs is None else [float(v) for v in outputs[:kept]],
        logged_rows=kept,
        request_id=request_id or log_id,
        trace_id=trace_id,
    )
    message.time.FromNanoseconds(time_ns)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": log_id,
        "ce-type": "ai.lepton.prediction.logged.v1",
        "ce-source": f"/lepton/triton/{TENANT}--{deployment}",
        "ce-time": datetime.fromtimestamp(time_ns / 1e9, UTC).isoformat().replace("+00:00", "Z"),
        "ce-subject": deployment,
        "content-type": "application/protobuf; proto=lepton.events.v1.PredictionLogged",
        "Nats-Msg-Id": log_id,
    }
    if trace_id:
        headers["traceparent"] = f"00-{trace_id}-b7ad6b7169203331-01"
    await nc.jetstream().publish(f"lepton.pred.{TENANT}.{deployment}", message.SerializeToString(), headers=headers)
    return log_id


async def send_batch(
    nc: NATS, deployment: str, requests: list[npt.NDArray[np.float64]], model: Any, unlogged: int = 0
) -> list[str]:
    """The logs of ``requests`` in one ``PredictionLogBatch``, as the serving model publishes them."""
    batch_id = uuid.uuid4().hex
    batch = events_pb2.PredictionLogBatch(
        tenant=TENANT,
        lineage=common_pb2.Lineage(model_name=deployment, model_version=1, deployment=deployment),
        feature_names=FEATURES,
        batch_id=batch_id,
        unlogged=unlogged,
    )
    ids = []
    for rows in requests:
        log_id = uuid.uuid4().hex
        outputs = model.predict(rows)
        entry = batch.logs.add(
            log_id=log_id,
            batch_rows=len(rows),
            latency_us=700,
            first_row_inputs=[float(v) for v in rows[0]],
            first_row_outputs=[float(outputs[0])],
            inputs=[float(v) for v in rows.ravel()],
            outputs=[float(v) for v in outputs],
            logged_rows=len(rows),
            request_id=log_id,
            trace_id=uuid.uuid4().hex,
        )
        entry.time.FromNanoseconds(time.time_ns())
        ids.append(log_id)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": batch_id,
        "ce-type": "ai.lepton.prediction.batch.logged.v1",
        "ce-source": f"/lepton/triton/{TENANT}--{deployment}",
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "ce-subject": deployment,
        "content-type": "application/protobuf; proto=lepton.events.v1.PredictionLogBatch",
        "Nats-Msg-Id": batch_id,
        "traceparent": f"00-{uuid.uuid4().hex}-b7ad6b7169203331-00",
    }
    payload = batch.SerializeToString()
    await nc.jetstream().publish(f"lepton.pred.{TENANT}.{deployment}", payload, headers=headers)
    # Published twice (a retrying publisher): the stream keeps one copy, nothing counts twice.
    await nc.jetstream().publish(f"lepton.pred.{TENANT}.{deployment}", payload, headers=headers)
    return ids


def training_rows(n: int, seed: int, shift: dict[str, float] | None = None) -> npt.NDArray[np.float64]:
    """``n`` rows drawn from the training data, with ``shift`` (in standard deviations) added to columns."""
    x = DIABETES.select(FEATURES).to_numpy()[np.random.default_rng(seed).integers(0, DIABETES.height, n)]
    for name, sds in (shift or {}).items():
        j = FEATURES.index(name)
        x[:, j] += sds * DIABETES[name].std()
    return x


async def events_of(nc: NATS, name: str, deployment: str, settle: float = 1.0) -> list[Any]:
    """Every ``monitor.<name>`` event of the tenant about ``deployment``, read from the start of EVENTS."""
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{TENANT}.monitor.{name}",
        stream=EVENTS_STREAM,
        ordered_consumer=True,
    )
    found = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=settle)
            except TimeoutError:
                return found
            event = events.decode(msg)
            if event.data.lineage.deployment == deployment:
                found.append(event.data)
    finally:
        await sub.unsubscribe()
