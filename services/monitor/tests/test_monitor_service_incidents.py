"""The monitor as a process (see monitor_stack.py): drift and alert incidents, the events and retraining they
lead to, and the Prometheus endpoint that shows them."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any

import grpc
import numpy as np
import polars as pl
import pytest
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.client import Client as NATS
from scipy import stats

from lepton_core.rpc import client_channel
from lepton_ml.profiling import profile

from .monitor_stack import (
    DIABETES,
    FEATURES,
    KEY,
    SHIFTED,
    TENANT,
    deploy,
    events_of,
    send_log,
    training_rows,
    until,
)

pytestmark = pytest.mark.timeout(120)


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


# ---------------------------------------------------------------------------------------------- prometheus


async def test_prometheus_endpoint_serves_the_metrics(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub, metrics_port: int
) -> None:
    d = await deploy(nc, stack, "scraped")
    x = training_rows(600, seed=6)
    for k in range(0, 600, 10):
        await send_log(nc, d.name, x[k : k + 10], d.model.predict(x[k : k + 10]), latency_us=2000)
    labels = f'tenant="{TENANT}",deployment="{d.name}",version="1"'

    psi_line = f'lepton_monitor_drift_psi{{{labels},feature="bmi"}}'

    async def caught_up() -> str | None:
        """The scrape, once it counts all 60 logs and its bmi gauge is the drift report's (both move)."""
        text = await asyncio.to_thread(_scrape, metrics_port)
        if psi_line not in text or f"lepton_monitor_requests_total{{{labels}}} 60\n" not in text:
            return None
        report = await monitor.GetDriftReport(monitor_pb2.GetDriftReportRequest(deployment=d.name))
        scraped_psi = float(next(t for t in text.splitlines() if t.startswith(psi_line)).rsplit(" ", 1)[1])
        bmi = next(f for f in report.features if f.name == "bmi")
        return text if scraped_psi == pytest.approx(bmi.psi) else None

    text = await until(caught_up, 20, "drift gauges of the scraped deployment, equal to its drift report")
    assert "# TYPE lepton_monitor_requests_total counter" in text
    assert f"lepton_monitor_rows_total{{{labels}}} 600\n" in text
    assert "# TYPE lepton_monitor_drift_psi gauge" in text and "# TYPE lepton_monitor_alerts_firing gauge" in text
    with pytest.raises(urllib.error.HTTPError) as err:
        await asyncio.to_thread(urllib.request.urlopen, f"http://127.0.0.1:{metrics_port}/other", None, 5)
    assert err.value.code == 404
