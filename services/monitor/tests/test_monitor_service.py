"""The monitor as a process on real NATS, with the real data service and trainer beside it.

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
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.client import Client as NATS
from scipy import stats
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM, ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_to_pb
from lepton_ml import artifacts
from lepton_ml.profiling import profile
from lepton_platform.processes import free_port
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(120)

KEY = "monitor-test-key"
OTHER_KEY = "monitor-other-key"
TENANT = "mon" + uuid.uuid4().hex[:8]
OTHER = "oth" + uuid.uuid4().hex[:8]
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
SHIFTED = ["bmi", "bp"]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
DIABETES = pl.from_pandas(load_diabetes(as_frame=True).frame)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(service: StartService, metrics_port: int) -> dict[str, str]:
    keys = {KEY: TENANT, OTHER_KEY: OTHER}
    data = service("data", keys)
    trainer = service("trainer", keys, data_url=data, job_ack_wait_s="5")
    monitor = service(
        "monitor",
        keys,
        window_s="1",
        retention_windows="600",
        drift_window_s="300",
        drift_for_evaluations="1",
        drift_cooldown_s="0",
        evaluation_interval_s="0.3",
        metrics_port=str(metrics_port),
    )
    return {"data": data, "trainer": trainer, "monitor": monitor}


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
    packed = artifacts.pack(model, signature)
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


@pytest.fixture
async def monitor(stack: dict[str, str]) -> AsyncIterator[monitor_pb2_grpc.MonitorServiceStub]:
    async with client_channel(stack["monitor"], KEY) as ch:
        yield monitor_pb2_grpc.MonitorServiceStub(ch)


# ---------------------------------------------------------------------------------------------- drift


async def test_rows_from_the_training_distribution_show_no_drift(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub, metrics_port: int
) -> None:
    d = await deploy(nc, stack, "calm")
    x = training_rows(600, seed=1)
    for k in range(0, 600, 10):
        await send_log(nc, d.name, x[k : k + 10], d.model.predict(x[k : k + 10]))
    report = await until(
        lambda: _report_with(monitor, d.name, 600), 20, "600 logged rows in the calm deployment's drift report"
    )
    assert [f.name for f in report.features] == FEATURES
    assert list(report.drifted) == [] and report.has_prediction
    assert all(f.verdict == "no_drift" for f in [*report.features, report.prediction])
    assert report.reference_dataset_version_id == d.version.version_id
    # The monitor's last evaluations agree: no drift incident, no event.
    await until(lambda: _evaluated(d.name, metrics_port), 10, "an evaluation of the calm deployment")
    alerts = await monitor.ListAlerts(monitor_pb2.ListAlertsRequest(deployment=d.name))
    assert list(alerts.alerts) == []
    assert await events_of(nc, "drift.detected", d.name, settle=0.3) == []


async def _report_with(
    monitor: monitor_pb2_grpc.MonitorServiceStub, name: str, rows: int
) -> monitor_pb2.DriftReport | None:
    report = await monitor.GetDriftReport(monitor_pb2.GetDriftReportRequest(deployment=name))
    return report if report.features and report.features[0].n_live >= rows else None


async def _evaluated(name: str, metrics_port: int) -> bool:
    # An evaluation has run once the Prometheus drift gauges show this deployment.
    return f'lepton_monitor_drift_psi{{tenant="{TENANT}",deployment="{name}"' in (
        await asyncio.to_thread(_scrape, metrics_port)
    )


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


async def test_shifted_rows_drift_on_exactly_the_shifted_features_and_retrain_once(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    # The newer dataset version (the world after the shift) is what the retraining must learn from.
    newer = DIABETES.with_columns(*(pl.col(c) + 2 * DIABETES[c].std() for c in SHIFTED))
    d = await deploy(nc, stack, "shifted", newer=newer)
    assert d.newer is not None and d.newer.dataset_id == d.version.dataset_id
    policy = await monitor.SetRetrainingPolicy(
        monitor_pb2.SetRetrainingPolicyRequest(policy=monitor_pb2.RetrainingPolicy(deployment=d.name, on_drift=True))
    )
    assert policy.on_drift and policy.min_interval_seconds == 3600
    x = training_rows(600, seed=2, shift=dict.fromkeys(SHIFTED, 2.0))
    predictions = d.model.predict(x)
    for k in range(0, 600, 10):
        await send_log(nc, d.name, x[k : k + 10], predictions[k : k + 10])

    detected = await until(
        lambda: _first(events_of(nc, "drift.detected", d.name, settle=0.3)), 30, "monitor.drift.detected"
    )
    assert list(detected.features) == SHIFTED and detected.prediction_drifted
    assert detected.lineage.model_version == 1 and detected.reference_dataset_version_id == d.version.version_id

    # The report as data: PSI and KS equal a direct numpy/scipy computation on the logged rows.
    report = await monitor.GetDriftReport(monitor_pb2.GetDriftReportRequest(deployment=d.name, png=True))
    assert list(report.drifted) == [*SHIFTED, "prediction"]
    reference = {c.name: c for c in profile(DIABETES).columns}
    for f in report.features:
        hist = reference[f.name].histogram
        assert hist is not None and list(f.edges) == hist.edges and list(f.reference_counts) == hist.counts
        column = x[:, FEATURES.index(f.name)]
        live, _ = np.histogram(np.clip(column, hist.edges[0], hist.edges[-1]), bins=hist.edges)
        assert list(f.live_counts) == live.tolist()
        e = np.maximum(np.asarray(hist.counts) / sum(hist.counts), 1e-4)
        a = np.maximum(live / live.sum(), 1e-4)
        assert f.psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)
        assert (f.verdict == "drift") == (f.name in SHIFTED), f.name
    bmi = next(f for f in report.features if f.name == "bmi")
    assert bmi.ks_method == "histogram" and bmi.ks_pvalue < 1e-6 and bmi.ks_statistic > 0.5
    assert report.png.startswith(b"\x89PNG\r\n\x1a\n")
    # And the two-sample KS of the logged bmi against the training bmi is the same kind of certain.
    assert stats.ks_2samp(DIABETES["bmi"].to_numpy(), x[:, FEATURES.index("bmi")]).pvalue < 1e-6

    # One incident asks for one retraining, on the newest dataset version, with the same algorithm and params.
    requested = await until(
        lambda: _first(events_of(nc, "retraining.requested", d.name, settle=0.3)), 15, "retraining.requested"
    )
    assert requested.incident_id == detected.incident_id and requested.reason == "drift"
    assert (requested.algorithm, dict(requested.params), requested.target) == ("ridge", {"alpha": "1.0"}, "target")
    assert requested.dataset_version_id == d.newer.version_id
    assert (
        requested.lineage.training_job_id == d.job_id and requested.lineage.dataset_version_id == d.version.version_id
    )
    async with client_channel(stack["trainer"], KEY) as ch:
        trainer = trainer_pb2_grpc.TrainingServiceStub(ch)

        async def job() -> trainer_pb2.TrainingJob | None:
            try:
                return await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=requested.job_id))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
                return None

        created = await until(job, 20, f"the trainer's job {requested.job_id}")
    assert created.lineage.dataset_version_id == d.newer.version_id
    assert (created.algorithm, dict(created.params), created.model_name) == ("ridge", {"alpha": "1.0"}, d.name)

    # Drift goes on; the incident stays one incident with one retraining.
    for k in range(0, 200, 10):
        await send_log(nc, d.name, x[k : k + 10], predictions[k : k + 10])
    await asyncio.sleep(1.5)  # about five evaluations; we assert that nothing new happens in them
    assert len(await events_of(nc, "drift.detected", d.name, settle=0.3)) == 1
    assert len(await events_of(nc, "retraining.requested", d.name, settle=0.3)) == 1
    alerts = (await monitor.ListAlerts(monitor_pb2.ListAlertsRequest(deployment=d.name, firing_only=True))).alerts
    assert [(a.kind, a.state, a.retraining, a.retraining_job_id) for a in alerts] == [
        ("drift", "firing", "requested", requested.job_id)
    ]
    assert list(alerts[0].drifted) == SHIFTED


async def _first(found: Any) -> Any:
    items = await found
    return items[0] if items else None


# ---------------------------------------------------------------------------------------------- alerts


async def test_an_alert_fires_once_and_resolves(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "flaky")
    rules = await monitor.SetRules(
        monitor_pb2.SetRulesRequest(
            deployment=d.name,
            rules=[
                monitor_pb2.Rule(
                    name="errors",
                    metric="error_rate",
                    comparison=">",
                    threshold=0.5,
                    window_seconds=2,
                    severity="critical",
                    for_evaluations=2,
                    resolve_margin=0.1,
                    cooldown_seconds=600,
                )
            ],
        )
    )
    assert [r.rule.name for r in rules.rules] == ["errors"] and not rules.rules[0].firing
    x = training_rows(4, seed=3)

    async def failing() -> bool:
        await send_log(nc, d.name, x, None, error="prediction failed: boom")
        listed = await monitor.ListAlerts(monitor_pb2.ListAlertsRequest(deployment=d.name, firing_only=True))
        return bool(listed.alerts)

    await until(failing, 20, "the errors alert to fire")

    async def healthy() -> bool:
        await send_log(nc, d.name, x, d.model.predict(x))
        listed = await monitor.ListAlerts(monitor_pb2.ListAlertsRequest(deployment=d.name))
        return bool(listed.alerts) and listed.alerts[0].state == "resolved"

    await until(healthy, 30, "the errors alert to resolve")
    alert = (await monitor.ListAlerts(monitor_pb2.ListAlertsRequest(deployment=d.name))).alerts
    assert len(alert) == 1 and (alert[0].rule, alert[0].severity, alert[0].kind) == ("errors", "critical", "alert")
    assert alert[0].value > 0.5 and alert[0].resolved_value <= 0.4 and alert[0].retraining == ""
    fired = await events_of(nc, "alert.fired", d.name)
    resolved = await events_of(nc, "alert.resolved", d.name)
    assert [e.incident_id for e in fired] == [e.incident_id for e in resolved] == [alert[0].incident_id]
    assert (fired[0].rule, fired[0].metric, fired[0].threshold, fired[0].severity) == (
        "errors",
        "error_rate",
        0.5,
        "critical",
    )
    listed = await monitor.ListRules(monitor_pb2.ListRulesRequest(deployment=d.name))
    assert not listed.rules[0].firing


# ---------------------------------------------------------------------------------------------- labels


async def test_labels_give_live_rmse_per_window(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "labelled")
    rng = np.random.default_rng(4)
    index = rng.integers(0, DIABETES.height, 90)
    x = DIABETES.select(FEATURES).to_numpy()[index]
    truth = DIABETES["target"].to_numpy()[index]
    predicted = d.model.predict(x)
    for i in range(30):
        await send_log(nc, d.name, x[3 * i : 3 * i + 3], predicted[3 * i : 3 * i + 3], request_id=f"req-{i}")

    async def logged() -> bool:
        m = await monitor.GetServingMetrics(monitor_pb2.GetServingMetricsRequest(deployment=d.name, last_seconds=300))
        return m.window.requests == 30

    await until(logged, 20, "30 logged requests")
    labels = [monitor_pb2.Label(request_id=f"req-{k // 3}", row=k % 3, value=float(truth[k])) for k in range(90)]
    sent = await monitor.SendLabels(monitor_pb2.SendLabelsRequest(deployment=d.name, labels=labels))
    assert (sent.accepted, sent.matched) == (90, 90)
    again = await monitor.SendLabels(monitor_pb2.SendLabelsRequest(deployment=d.name, labels=labels[:10]))
    assert (again.accepted, again.matched) == (10, 10)  # the same labels again change nothing
    perf = await monitor.GetLivePerformance(monitor_pb2.GetLivePerformanceRequest(deployment=d.name))
    assert (perf.task, perf.metric, perf.overall.labelled) == ("regression", "rmse", 90)
    assert perf.overall.rmse == pytest.approx(float(np.sqrt(np.mean((predicted - truth) ** 2))), rel=1e-9)
    assert perf.overall.mae == pytest.approx(float(np.mean(np.abs(predicted - truth))), rel=1e-9)
    assert sum(w.labelled for w in perf.windows) == 90 and perf.trend in ("steady", "improving", "degrading", "unknown")
    # A label for a prediction the monitor does not hold is kept but matches nothing (yet).
    late = await monitor.SendLabels(
        monitor_pb2.SendLabelsRequest(deployment=d.name, labels=[monitor_pb2.Label(request_id="nope", value=1)])
    )
    assert (late.accepted, late.matched) == (1, 0)


# ---------------------------------------------------------------------------------------------- logs


async def test_log_queries_filter_page_and_summarize(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "queried")
    start = time.time()
    x = training_rows(60, seed=5)
    y = d.model.predict(x)
    latencies = [1000 * (k + 1) for k in range(12)]
    ids = []
    for k in range(12):
        rows = x[5 * k : 5 * k + 5]
        ids.append(await send_log(nc, d.name, rows, y[5 * k : 5 * k + 5], latency_us=latencies[k]))
    for _ in range(5):
        await send_log(nc, d.name, x[:2], None, error="prediction failed: boom", latency_us=200)
    for _ in range(2):
        await send_log(nc, d.name, x[:2], None, error="features must have shape [batch, 10]", latency_us=100)
    traced = await send_log(nc, d.name, x[:1], y[:1], trace_id=TRACE_ID, latency_us=50)

    def window(**kw: Any) -> monitor_pb2.QueryPredictionLogsRequest:
        begin = Timestamp()
        begin.FromNanoseconds(int((start - 1) * 1e9))
        return monitor_pb2.QueryPredictionLogsRequest(deployment=d.name, start_time=begin, **kw)

    async def everything() -> list[monitor_pb2.PredictionLog]:
        logs: list[monitor_pb2.PredictionLog] = []
        token = ""
        while True:
            page = await monitor.QueryPredictionLogs(window(page_size=4, page_token=token))
            assert len(page.logs) <= 4
            logs.extend(page.logs)
            token = page.next_page_token
            if not token:
                return logs

    every = await until(lambda: _when(everything(), lambda logs: len(logs) == 20), 20, "20 queryable logs")
    assert len({log.log_id for log in every}) == 20 and every[0].log_id == ids[0]
    assert every[0].feature_names == FEATURES and len(every[0].rows) == 5
    assert list(every[0].rows[2].values) == x[2].tolist() and list(every[0].outputs) == y[:5].tolist()
    errors = await monitor.QueryPredictionLogs(window(errors_only=True))
    assert len(errors.logs) == 7 and all(log.error for log in errors.logs)
    by_trace = await monitor.QueryPredictionLogs(window(trace_id=TRACE_ID))
    assert [log.log_id for log in by_trace.logs] == [traced]
    by_request = await monitor.QueryPredictionLogs(window(request_id=ids[3]))
    assert [log.log_id for log in by_request.logs] == [ids[3]]
    # Logs with a row whose bmi is at least the 90th percentile of the logged bmi values (each row checked).
    j = FEATURES.index("bmi")
    low = float(np.quantile(x[:, j], 0.9))
    expected = [ids[k] for k in range(12) if (x[5 * k : 5 * k + 5, j] >= low).any()]
    expected += [traced] if x[0, j] >= low else []
    expected_errors = 7 if (x[:2, j] >= low).any() else 0
    ranged = await monitor.QueryPredictionLogs(
        window(feature_ranges=[monitor_pb2.FeatureRange(feature="bmi", min=low)], page_size=100)
    )
    assert len(ranged.logs) == len(expected) + expected_errors
    assert [log.log_id for log in ranged.logs if not log.error] == expected

    summary = await monitor.SummarizeLogs(
        monitor_pb2.SummarizeLogsRequest(deployment=d.name, start_time=window().start_time, top=3)
    )
    assert (summary.logs, summary.errors, summary.rows) == (20, 7, 60 + 14 + 1)
    assert summary.error_rate == pytest.approx(7 / 20)
    assert [(e.error, e.count) for e in summary.top_errors] == [
        ("prediction failed: boom", 5),
        ("features must have shape [batch, 10]", 2),
    ]
    assert [log.log_id for log in summary.slowest] == [ids[11], ids[10], ids[9]]
    all_latencies = [v / 1000 for v in [*latencies, *[200] * 5, *[100] * 2, 50]]
    assert summary.latency_p95_ms == pytest.approx(float(np.percentile(all_latencies, 95)))
    assert dict(summary.logs_by_version) == {1: 20}

    # The serving metrics of the same logs, from the monitor's windows.
    metrics = await monitor.GetServingMetrics(
        monitor_pb2.GetServingMetricsRequest(deployment=d.name, last_seconds=300, history=True, triton=True)
    )
    assert (metrics.window.requests, metrics.window.errors, metrics.window.rows) == (20, 7, 75)
    assert metrics.window.latency_p50_ms == pytest.approx(float(np.percentile(all_latencies, 50)))
    assert metrics.window.latency_p99_ms == pytest.approx(float(np.percentile(all_latencies, 99)))
    assert sum(w.requests for w in metrics.history) == 20 and list(metrics.versions) == [1]
    # No Triton serves this deployment: the answer says so instead of failing.
    assert not metrics.triton.reachable and metrics.triton.error and metrics.triton.model == f"{TENANT}--{d.name}"


async def _when(found: Any, ok: Callable[[Any], bool]) -> Any:
    value = await found
    return value if ok(value) else None


# ---------------------------------------------------------------------------------------------- prometheus


async def test_prometheus_endpoint_serves_the_metrics(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub, metrics_port: int
) -> None:
    d = await deploy(nc, stack, "scraped")
    x = training_rows(600, seed=6)
    for k in range(0, 600, 10):
        await send_log(nc, d.name, x[k : k + 10], d.model.predict(x[k : k + 10]), latency_us=2000)
    labels = f'tenant="{TENANT}",deployment="{d.name}",version="1"'

    def scraped() -> str | None:
        text = _scrape(metrics_port)
        return text if f'lepton_monitor_drift_psi{{{labels},feature="bmi"}}' in text else None

    text = await until(lambda: asyncio.to_thread(scraped), 20, "drift gauges of the scraped deployment")
    assert "# TYPE lepton_monitor_requests_total counter" in text
    assert f"lepton_monitor_requests_total{{{labels}}} 60\n" in text
    assert f"lepton_monitor_rows_total{{{labels}}} 600\n" in text
    assert "# TYPE lepton_monitor_drift_psi gauge" in text and "# TYPE lepton_monitor_alerts_firing gauge" in text
    report = await monitor.GetDriftReport(monitor_pb2.GetDriftReportRequest(deployment=d.name))
    line = next(t for t in text.splitlines() if t.startswith(f'lepton_monitor_drift_psi{{{labels},feature="bmi"}}'))
    bmi = next(f for f in report.features if f.name == "bmi")
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(bmi.psi)
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{metrics_port}/other", None, 5)
    assert err.value.code == 404


# ---------------------------------------------------------------------------------------------- bad input


async def test_bad_requests_name_the_field_and_other_tenants_see_nothing(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "guarded")
    await send_log(nc, d.name, training_rows(2, seed=7), None, error="boom")
    m = monitor_pb2
    bad: list[tuple[Any, Any, str]] = [
        (monitor.GetDriftReport, m.GetDriftReportRequest(), "deployment: is required"),
        (monitor.GetDriftReport, m.GetDriftReportRequest(deployment="Not Valid"), "deployment: "),
        (monitor.GetDriftReport, m.GetDriftReportRequest(deployment=d.name, features=["nope"]), "features: "),
        (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name, last_seconds=-1), "last_seconds: "),
        (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name, version=-2), "version: "),
        (monitor.SendLabels, m.SendLabelsRequest(deployment=d.name), "labels: "),
        (
            monitor.SendLabels,
            m.SendLabelsRequest(deployment=d.name, labels=[m.Label(request_id="r", value=float("nan"))]),
            "labels[0].value: ",
        ),
        (
            monitor.SendLabels,
            m.SendLabelsRequest(deployment=d.name, labels=[m.Label(value=1.0)]),
            "labels[0].request_id: ",
        ),
        (monitor.GetLivePerformance, m.GetLivePerformanceRequest(deployment=d.name, task="ranking"), "task: "),
        (
            monitor.SetRules,
            m.SetRulesRequest(deployment=d.name, rules=[m.Rule(name="r", metric="nope", comparison=">")]),
            "rules[0].metric: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(deployment=d.name, rules=[m.Rule(name="r", metric="errors", comparison="=")]),
            "rules[0].comparison: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(
                deployment=d.name, rules=[m.Rule(name="r", metric="errors", comparison=">", severity="panic")]
            ),
            "rules[0].severity: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(
                deployment=d.name,
                rules=[
                    m.Rule(name="r", metric="errors", comparison=">"),
                    m.Rule(name="r", metric="rows", comparison="<"),
                ],
            ),
            "rules[1].name: ",
        ),
        (monitor.SetRetrainingPolicy, m.SetRetrainingPolicyRequest(), "policy: is required"),
        (
            monitor.SetRetrainingPolicy,
            m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment=d.name, min_interval_seconds=-1)),
            "policy.min_interval_seconds: ",
        ),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(deployment=d.name, page_size=1000), "page_size: "),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(page_token="x"), "page_token: "),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(trace_id="xyz"), "trace_id: "),
        (
            monitor.QueryPredictionLogs,
            m.QueryPredictionLogsRequest(feature_ranges=[m.FeatureRange(feature="bmi", min=2, max=1)]),
            "feature_ranges[0].max: ",
        ),
        (monitor.SummarizeLogs, m.SummarizeLogsRequest(top=1000), "top: "),
        (monitor.ListAlerts, m.ListAlertsRequest(limit=-1), "limit: "),
    ]
    for call, request, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, err.value.details())
        assert (err.value.details() or "").startswith(message), (request, err.value.details())

    async with client_channel(stack["monitor"], OTHER_KEY) as ch:
        other = monitor_pb2_grpc.MonitorServiceStub(ch)
        for call, request in [
            (other.GetPredictionStats, m.GetPredictionStatsRequest(deployment=d.name)),
            (other.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name)),
            (other.GetDriftReport, m.GetDriftReportRequest(deployment=d.name)),
            (other.SendLabels, m.SendLabelsRequest(deployment=d.name, labels=[m.Label(request_id="r", value=1)])),
            (other.GetLivePerformance, m.GetLivePerformanceRequest(deployment=d.name)),
            (other.SetRules, m.SetRulesRequest(deployment=d.name)),
            (other.ListRules, m.ListRulesRequest(deployment=d.name)),
            (other.ListAlerts, m.ListAlertsRequest(deployment=d.name)),
            (other.SetRetrainingPolicy, m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment=d.name))),
            (other.GetRetrainingPolicy, m.GetRetrainingPolicyRequest(deployment=d.name)),
            (other.QueryPredictionLogs, m.QueryPredictionLogsRequest(deployment=d.name)),
            (other.SummarizeLogs, m.SummarizeLogsRequest(deployment=d.name)),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, (request, err.value.details())
        # Without a deployment, another tenant's query reads its own logs only: none.
        assert list((await other.QueryPredictionLogs(m.QueryPredictionLogsRequest())).logs) == []
        assert list((await other.ListAlerts(m.ListAlertsRequest())).alerts) == []


async def test_batched_logs_count_once_and_page_through_batch_boundaries(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "batched")
    start = Timestamp()
    start.FromNanoseconds(time.time_ns() - 10**9)
    x = training_rows(45, seed=11)
    ids = []
    for b in range(3):  # three batches of five requests of three rows
        ids += await send_batch(
            nc, d.name, [x[15 * b + 3 * k : 15 * b + 3 * k + 3] for k in range(5)], d.model, unlogged=b
        )
    await send_batch(nc, d.name, [], d.model, unlogged=10)  # a rate-capped interval: nothing logged, 10 counted

    async def pages() -> list[monitor_pb2.PredictionLog]:
        logs: list[monitor_pb2.PredictionLog] = []
        token = ""
        while True:
            page = await monitor.QueryPredictionLogs(
                monitor_pb2.QueryPredictionLogsRequest(
                    deployment=d.name, start_time=start, page_size=4, page_token=token
                )
            )
            logs.extend(page.logs)
            token = page.next_page_token
            if not token:
                return logs

    every = await until(lambda: _when(pages(), lambda logs: len(logs) >= 15), 20, "15 queryable logs")
    # Pages of 4 cut batches of 5 in the middle: every log once, in order.
    assert [log.log_id for log in every] == ids
    assert list(every[7].rows[1].values) == x[22].tolist()
    assert list(every[7].outputs) == pytest.approx(d.model.predict(x[21:24]).tolist())
    stats = await until(
        lambda: _when(
            monitor.GetPredictionStats(monitor_pb2.GetPredictionStatsRequest(deployment=d.name)),
            lambda s: s.logged_requests >= 15,
        ),
        20,
        "15 counted logs",
    )
    assert (stats.logged_requests, stats.logged_rows) == (15, 45)
    # Requests served but not logged (sample rate, rate cap), each batch counted once: 0 + 1 + 2 + 10.
    await until(
        lambda: _when(
            monitor.GetPredictionStats(monitor_pb2.GetPredictionStatsRequest(deployment=d.name)),
            lambda s: s.unlogged_requests == 13,
        ),
        20,
        "13 unlogged requests",
    )
