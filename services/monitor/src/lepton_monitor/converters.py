"""Protobuf to domain types and back for the monitor's gRPC servicer: one place for every conversion."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp
from lepton.monitor.v1 import monitor_pb2

from lepton_core.errors import InvalidArgument
from lepton_monitor.drift import FeatureDrift
from lepton_monitor.drift_check import DriftOut
from lepton_monitor.incidents import RuleStatus
from lepton_monitor.live import LogEntry, PerformancePoint
from lepton_monitor.log_search import LogQuery, check_query
from lepton_monitor.lookups import check_name
from lepton_monitor.queries import PerformanceOut, ServingOut
from lepton_monitor.records import (
    AlertRecord,
    PolicyRecord,
)
from lepton_monitor.triton import TritonSnapshot
from lepton_monitor.windows import WindowStats


def _ts(seconds: float | None) -> Timestamp:
    out = Timestamp()
    if seconds is not None and math.isfinite(seconds):
        out.FromNanoseconds(round(seconds * 1e9))
    return out


def _seconds(ts: Timestamp, present: bool) -> float | None:
    # Plain arithmetic, not ToNanoseconds/ToDatetime: those raise on a timestamp outside years 1-9999,
    # and the range check (check_query) must see the value to refuse it.
    return ts.seconds + ts.nanos / 1e9 if present else None


def window_to_pb(w: WindowStats) -> monitor_pb2.ServingWindow:
    out = monitor_pb2.ServingWindow(
        start=_ts(w.start),
        end=_ts(w.end),
        windows=w.windows,
        requests=w.requests,
        errors=w.errors,
        rows=w.rows,
        latency_count=w.latency_count,
        latency_exact=w.latency_exact,
        prediction_count=w.prediction_count,
    )
    for name in (
        "error_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_mean_ms",
        "latency_max_ms",
        "prediction_mean",
        "prediction_std",
        "prediction_min",
        "prediction_max",
    ):
        value = getattr(w, name)
        if value is not None:
            setattr(out, name, value)
    return out


def triton_to_pb(t: TritonSnapshot) -> monitor_pb2.TritonStats:
    return monitor_pb2.TritonStats(
        reachable=t.reachable,
        error=t.error,
        url=t.url,
        model=t.model,
        version=t.version,
        inference_count=t.inference_count,
        execution_count=t.execution_count,
        success_count=t.success_count,
        failure_count=t.failure_count,
        success_mean_ms=t.mean_ms(t.success_ns),
        queue_mean_ms=t.mean_ms(t.queue_ns),
        compute_infer_mean_ms=t.mean_ms(t.compute_infer_ns),
    )


def serving_to_pb(s: ServingOut) -> monitor_pb2.ServingMetrics:
    out = monitor_pb2.ServingMetrics(
        deployment=s.deployment,
        version=s.version,
        serving_version=s.serving_version,
        versions=s.versions,
        window_seconds=s.window_seconds,
        window=window_to_pb(s.window),
        history=[window_to_pb(w) for w in s.history],
    )
    if s.triton is not None:
        out.triton.CopyFrom(triton_to_pb(s.triton))
    return out


def feature_to_pb(f: FeatureDrift) -> monitor_pb2.FeatureDrift:
    out = monitor_pb2.FeatureDrift(
        name=f.name,
        kind=f.kind,
        verdict=f.verdict,
        reason=f.reason,
        n_live=f.n_live,
        n_dropped=f.n_dropped,
        n_reference=f.n_reference,
        ks_method=f.ks_method or "",
        edges=f.edges or [],
        categories=f.categories or [],
        reference_counts=f.reference_counts,
        live_counts=f.live_counts,
    )
    for src, dst in (
        ("psi", "psi"),
        ("ks_stat", "ks_statistic"),
        ("ks_p", "ks_pvalue"),
        ("chi2", "chi2"),
        ("chi2_p", "chi2_pvalue"),
    ):
        value = getattr(f, src)
        if value is not None:
            setattr(out, dst, value)
    return out


def drift_to_pb(d: DriftOut) -> monitor_pb2.DriftReport:
    t = d.report.thresholds
    out = monitor_pb2.DriftReport(
        deployment=d.deployment,
        version=d.version,
        start=_ts(d.start),
        end=_ts(d.end),
        features=[feature_to_pb(f) for f in d.report.features],
        has_prediction=d.report.prediction is not None,
        drifted=d.report.drifted,
        thresholds=monitor_pb2.DriftThresholds(
            psi=t.psi,
            ks_alpha=t.ks_alpha,
            ks_min_statistic=t.ks_min_statistic,
            chi2_alpha=t.chi2_alpha,
            min_samples=t.min_samples,
        ),
        reference_dataset_version_id=d.reference_dataset_version_id,
        png=d.png,
    )
    if d.report.prediction is not None:
        out.prediction.CopyFrom(feature_to_pb(d.report.prediction))
    return out


def point_to_pb(p: PerformancePoint) -> monitor_pb2.PerformanceWindow:
    out = monitor_pb2.PerformanceWindow(start=_ts(p.start), end=_ts(p.end), labelled=p.labelled)
    for name in ("accuracy", "rmse", "mae"):
        value = getattr(p, name)
        if value is not None:
            setattr(out, name, value)
    return out


def performance_to_pb(p: PerformanceOut) -> monitor_pb2.LivePerformance:
    out = monitor_pb2.LivePerformance(
        deployment=p.deployment,
        version=p.version,
        task=p.task,
        metric=p.metric,
        overall=point_to_pb(p.overall),
        windows=[point_to_pb(w) for w in p.windows],
        trend=p.trend,
    )
    if p.slope_per_hour is not None:
        out.slope_per_hour = p.slope_per_hour
    return out


def rule_to_pb(status: RuleStatus) -> monitor_pb2.RuleStatus:
    r, s = status.rule, status.state
    out = monitor_pb2.RuleStatus(
        rule=monitor_pb2.Rule(
            name=r.name,
            metric=r.metric,
            comparison=r.comparison,
            threshold=r.threshold,
            window_seconds=r.window_seconds,
            severity=r.severity,
            for_evaluations=r.for_evaluations,
            resolve_margin=r.resolve_margin,
            cooldown_seconds=r.cooldown_seconds,
        ),
        firing=s.firing,
        streak=s.streak,
        last_evaluated_at=_ts(s.last_evaluated_at),
    )
    if s.last_value is not None:
        out.last_value = s.last_value
    return out


def alert_to_pb(a: AlertRecord) -> monitor_pb2.Alert:
    return monitor_pb2.Alert(
        incident_id=a.incident_id,
        deployment=a.deployment,
        model_version=a.model_version,
        kind=a.kind,
        rule=a.rule,
        metric=a.metric,
        comparison=a.comparison,
        threshold=a.threshold,
        severity=a.severity,
        state=a.state,
        value=a.value,
        fired_at=_ts(a.fired_at),
        resolved_at=_ts(a.resolved_at),
        resolved_value=a.resolved_value or 0.0,
        drifted=a.drifted,
        retraining=a.retraining,
        retraining_job_id=a.retraining_job_id,
    )


def policy_to_pb(p: PolicyRecord) -> monitor_pb2.RetrainingPolicy:
    return monitor_pb2.RetrainingPolicy(
        deployment=p.deployment,
        on_drift=p.on_drift,
        on_alert=p.on_alert,
        alert_rules=p.alert_rules,
        min_interval_seconds=p.min_interval_seconds,
        allow_same_dataset_version=p.allow_same_dataset_version,
    )


def log_to_pb(e: LogEntry) -> monitor_pb2.PredictionLog:
    return monitor_pb2.PredictionLog(
        log_id=e.log_id,
        request_id=e.request_id,
        trace_id=e.trace_id,
        deployment=e.deployment,
        model_name=e.model_name,
        model_version=e.version,
        time=_ts(e.time),
        latency_ms=e.latency_ms or 0.0,
        batch_rows=e.batch_rows,
        error=e.error,
        feature_names=e.feature_names,
        rows=[monitor_pb2.LoggedRow(values=row) for row in e.rows],
        outputs=e.outputs,
    )


def _query(
    deployment: str,
    version: int,
    start: Timestamp,
    has_start: bool,
    end: Timestamp,
    has_end: bool,
) -> LogQuery:
    if deployment:
        check_name(deployment, "deployment")
    for ts, present, field in ((start, has_start, "start_time"), (end, has_end, "end_time")):
        if present and not 0 <= ts.nanos < 1_000_000_000:
            raise InvalidArgument(f"has nanos {ts.nanos}, outside 0..999999999", field=field)
    q = LogQuery(
        deployment=deployment or None,
        version=version,
        start=_seconds(start, has_start),
        end=_seconds(end, has_end),
    )
    check_query(q)  # before any conversion of its times
    return q
