"""gRPC and event adapters of the monitor service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import grpc
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from opentelemetry import trace

from lepton_core import events
from lepton_core.bounds import check_text
from lepton_core.errors import InvalidArgument
from lepton_core.events import Retry
from lepton_core.names import is_id, is_name, shown
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.telemetry import extract_context
from lepton_core.wire import lineage, ref_from_pb
from lepton_monitor.converters import (
    _query,
    _ts,
    alert_to_pb,
    drift_to_pb,
    log_to_pb,
    performance_to_pb,
    policy_to_pb,
    rule_to_pb,
    serving_to_pb,
)
from lepton_monitor.core import Monitor
from lepton_monitor.incidents import MAX_RULES, parse_rule
from lepton_monitor.live import LabelIn
from lepton_monitor.log_search import FeatureRange
from lepton_monitor.lookups import check_duration, check_name
from lepton_monitor.records import (
    AlertRecord,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    RetrainingRequest,
    VersionInfo,
)
from lepton_monitor.streams import StreamLogs, log_entries

#: The most incidents ListAlerts returns.
MAX_ALERTS = 1000
#: The most consecutive evaluations a rule may wait before it fires or resolves.
MAX_FOR_EVALUATIONS = 1000
#: The longest metric or severity name a rule may give (both are closed sets, checked later).
MAX_RULE_TEXT = 64


# ------------------------------------------------------------------------------------------ servicer


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def GetPredictionStats(
        self, request: monitor_pb2.GetPredictionStatsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.PredictionStats:
        s = await self._monitor.stats(current_tenant(), request.deployment)
        return monitor_pb2.PredictionStats(
            deployment=s.deployment,
            logged_requests=s.logged_requests,
            logged_rows=s.logged_rows,
            errors=s.errors,
            requests_by_version=s.requests_by_version,
            unlogged_requests=s.unlogged_requests,
        )

    async def GetServingMetrics(
        self, request: monitor_pb2.GetServingMetricsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.ServingMetrics:
        out = await self._monitor.serving(
            current_tenant(), request.deployment, request.version, request.last_seconds, request.history, request.triton
        )
        return serving_to_pb(out)

    async def GetDriftReport(
        self, request: monitor_pb2.GetDriftReportRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.DriftReport:
        out = await self._monitor.drift(
            current_tenant(),
            request.deployment,
            request.version,
            request.last_seconds,
            list(request.features),
            request.png,
        )
        return drift_to_pb(out)

    async def SendLabels(
        self, request: monitor_pb2.SendLabelsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.SendLabelsResponse:
        labels = [LabelIn(request_id=x.request_id, row=x.row, value=x.value) for x in request.labels]
        accepted, matched = await self._monitor.send_labels(current_tenant(), request.deployment, labels)
        return monitor_pb2.SendLabelsResponse(accepted=accepted, matched=matched)

    async def GetLivePerformance(
        self, request: monitor_pb2.GetLivePerformanceRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.LivePerformance:
        out = await self._monitor.performance(current_tenant(), request.deployment, request.version, request.task)
        return performance_to_pb(out)

    async def SetRules(
        self, request: monitor_pb2.SetRulesRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.RuleList:
        tenant = current_tenant()
        check_name(request.deployment, "deployment")
        if len(request.rules) > MAX_RULES:
            raise InvalidArgument(f"{len(request.rules)} rules; at most {MAX_RULES} are allowed", field="rules")
        rules = []
        for i, r in enumerate(request.rules):
            values: dict[str, object] = {
                "name": r.name,
                "metric": r.metric,
                "comparison": r.comparison,
                "threshold": r.threshold,
                "window_seconds": r.window_seconds or 300.0,
                "severity": r.severity or "warning",
                "for_evaluations": r.for_evaluations or 3,
                "resolve_margin": r.resolve_margin,
            }
            if r.HasField("cooldown_seconds"):
                values["cooldown_seconds"] = check_duration(r.cooldown_seconds, f"rules[{i}].cooldown_seconds")
            check_name(r.name, f"rules[{i}].name")
            if r.comparison not in (">", "<"):
                raise InvalidArgument(f"must be '>' or '<', got {shown(r.comparison)}", field=f"rules[{i}].comparison")
            check_text(r.metric, f"rules[{i}].metric", limit=MAX_RULE_TEXT)
            check_text(r.severity, f"rules[{i}].severity", limit=MAX_RULE_TEXT)
            check_duration(r.window_seconds, f"rules[{i}].window_seconds")
            if not 0 <= r.for_evaluations <= MAX_FOR_EVALUATIONS:
                raise InvalidArgument(
                    f"must be between 1 and {MAX_FOR_EVALUATIONS} (0: 3), got {r.for_evaluations}",
                    field=f"rules[{i}].for_evaluations",
                )
            rules.append(parse_rule(values, i))
        statuses = await self._monitor.set_rules(tenant, request.deployment, rules)
        return monitor_pb2.RuleList(deployment=request.deployment, rules=[rule_to_pb(s) for s in statuses])

    async def ListRules(
        self, request: monitor_pb2.ListRulesRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.RuleList:
        statuses = await self._monitor.list_rules(current_tenant(), request.deployment)
        return monitor_pb2.RuleList(deployment=request.deployment, rules=[rule_to_pb(s) for s in statuses])

    async def ListAlerts(
        self, request: monitor_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.ListAlertsResponse:
        if request.limit > MAX_ALERTS:
            raise InvalidArgument(f"must be between 0 and {MAX_ALERTS}, got {request.limit}", field="limit")
        found = await self._monitor.alerts(current_tenant(), request.deployment, request.firing_only, request.limit)
        return monitor_pb2.ListAlertsResponse(alerts=[alert_to_pb(a) for a in found])

    async def SetRetrainingPolicy(
        self, request: monitor_pb2.SetRetrainingPolicyRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.RetrainingPolicy:
        if not request.HasField("policy"):
            raise InvalidArgument("is required", field="policy")
        p = request.policy
        check_name(p.deployment, "policy.deployment")
        check_duration(p.min_interval_seconds, "policy.min_interval_seconds")
        if len(p.alert_rules) > MAX_RULES:
            raise InvalidArgument(
                f"{len(p.alert_rules)} rules; at most {MAX_RULES} are allowed", field="policy.alert_rules"
            )
        for i, name in enumerate(p.alert_rules):
            check_name(name, f"policy.alert_rules[{i}]")
        stored = await self._monitor.set_policy(
            PolicyRecord(
                tenant=current_tenant(),
                deployment=p.deployment,
                on_drift=p.on_drift,
                on_alert=p.on_alert,
                alert_rules=list(p.alert_rules),
                min_interval_seconds=p.min_interval_seconds,
                allow_same_dataset_version=p.allow_same_dataset_version,
            )
        )
        return policy_to_pb(stored)

    async def GetRetrainingPolicy(
        self, request: monitor_pb2.GetRetrainingPolicyRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.RetrainingPolicy:
        return policy_to_pb(await self._monitor.policy(current_tenant(), request.deployment))

    async def QueryPredictionLogs(
        self, request: monitor_pb2.QueryPredictionLogsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.QueryPredictionLogsResponse:
        q = _query(
            request.deployment,
            request.version,
            request.start_time,
            request.HasField("start_time"),
            request.end_time,
            request.HasField("end_time"),
        )
        q.errors_only = request.errors_only
        q.trace_id = request.trace_id
        q.request_id = request.request_id
        q.ranges = [
            FeatureRange(
                feature=r.feature,
                low=r.min if r.HasField("min") else None,
                high=r.max if r.HasField("max") else None,
            )
            for r in request.feature_ranges
        ]
        page = await self._monitor.query_logs(current_tenant(), q, request.page_size, request.page_token)
        return monitor_pb2.QueryPredictionLogsResponse(
            logs=[log_to_pb(e) for e in page.logs], next_page_token=page.next_token, scanned=page.scanned
        )

    async def SummarizeLogs(
        self, request: monitor_pb2.SummarizeLogsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.LogSummary:
        q = _query(
            request.deployment,
            request.version,
            request.start_time,
            request.HasField("start_time"),
            request.end_time,
            request.HasField("end_time"),
        )
        s = await self._monitor.summarize_logs(current_tenant(), q, request.top)
        out = monitor_pb2.LogSummary(
            logs=s.logs,
            errors=s.errors,
            rows=s.rows,
            logs_by_version=s.by_version,
            top_errors=[monitor_pb2.ErrorCount(error=e, count=c) for e, c in s.top_errors],
            slowest=[log_to_pb(e) for e in s.slowest],
            truncated=s.truncated,
        )
        if s.logs:
            out.error_rate = s.errors / s.logs
        for q_, name in ((50.0, "latency_p50_ms"), (95.0, "latency_p95_ms"), (99.0, "latency_p99_ms")):
            value = s.percentile(q_)
            if value is not None:
                setattr(out, name, value)
        return out


# ------------------------------------------------------------------------------------------ events in


class PredictionLoggedHandler:
    """Counts the logs of a PREDICTIONS message (a ``PredictionLogBatch`` or one ``PredictionLogged``).

    A log whose request carried a trace context gets a span in that trace, so a traced prediction shows the
    monitor recording it; untraced traffic costs no spans.
    """

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def __call__(
        self, event: events.Event[events_pb2.PredictionLogBatch] | events.Event[events_pb2.PredictionLogged]
    ) -> None:
        entries = log_entries(event.data, event_id=event.id)
        batch = event.data if isinstance(event.data, events_pb2.PredictionLogBatch) else None
        # A log names KV keys (its tenant's and deployment's stats): one that names neither properly is
        # dropped here, and the rest of its batch still counts.
        entries = [e for e in entries if is_name(e.tenant) and is_name(e.deployment)]
        unlogged = int(batch.unlogged) if batch is not None else 0
        if batch is not None and not (is_name(batch.tenant) and is_name(batch.lineage.deployment)):
            unlogged = 0
        if not entries and not unlogged:
            return
        tracer = trace.get_tracer("lepton.monitor")
        for entry in entries:
            if entry.traceparent:
                with tracer.start_as_current_span(
                    "prediction.logged record",
                    context=extract_context({"traceparent": entry.traceparent}),
                    attributes={"lepton.deployment": entry.deployment, "lepton.request_id": entry.request_id},
                ):
                    pass
        await self._monitor.record_logs(
            entries,
            message_id=event.id,
            unlogged=unlogged,
            tenant=batch.tenant if batch is not None else "",
            deployment=batch.lineage.deployment if batch is not None else "",
        )


class PlatformEventsHandler:
    """What each deployment serves, how it was trained and on which data: from the platform's events.

    ``logs`` erases a deleted version's prediction logs from the stream (none: they stay).
    """

    def __init__(self, monitor: Monitor, logs: StreamLogs | None = None) -> None:
        self._monitor = monitor
        self._logs = logs

    async def dataset_version(self, event: events.Event[events_pb2.DatasetVersionCreated]) -> None:
        ev = event.data
        _check_event(
            ev.tenant,
            ids={
                "lineage.dataset_id": (ev.lineage.dataset_id, "ds"),
                "lineage.dataset_version_id": (ev.lineage.dataset_version_id, "dv"),
            },
            optional={"parent_version_id": (ev.parent_version_id, "dv")},
        )
        await self._monitor.on_dataset_version(
            DatasetVersionInfo(
                tenant=ev.tenant,
                dataset_id=ev.lineage.dataset_id,
                dataset_name=ev.dataset_name,
                version_id=ev.lineage.dataset_version_id,
                object=ref_from_pb(ev.object),
                origin=ev.origin or "upload",
                parent_version_id=ev.parent_version_id,
                columns={c.name: c.dtype for c in ev.columns},
                row_count=ev.row_count,
            )
        )

    async def training_completed(self, event: events.Event[events_pb2.TrainingCompleted]) -> None:
        ev = event.data
        _check_event(
            ev.tenant,
            ids={"lineage.training_job_id": (ev.lineage.training_job_id, "job")},
            optional={"lineage.dataset_version_id": (ev.lineage.dataset_version_id, "dv")},
        )
        await self._monitor.on_training_completed(
            JobInfo(
                tenant=ev.tenant,
                job_id=ev.lineage.training_job_id,
                algorithm=ev.algorithm,
                params=dict(ev.params),
                target=ev.target,
                model_name=ev.model_name or ev.lineage.model_name,
                split_seed=ev.split_seed,
                test_fraction=ev.test_fraction,
                task=ev.task,
                dataset_id=ev.lineage.dataset_id,
                dataset_version_id=ev.lineage.dataset_version_id,
            )
        )

    async def dataset_deleted(self, event: events.Event[events_pb2.DatasetDeleted]) -> None:
        ev = event.data
        versions = {f"version_ids[{i}]": (v, "dv") for i, v in enumerate(ev.version_ids)}
        _check_event(ev.tenant, ids={"lineage.dataset_id": (ev.lineage.dataset_id, "ds"), **versions})
        await self._monitor.on_dataset_deleted(ev.tenant, ev.lineage.dataset_id, list(ev.version_ids))

    async def version_deleted(self, event: events.Event[events_pb2.ModelVersionDeleted]) -> None:
        ev = event.data
        _check_event(
            ev.tenant,
            names={"lineage.model_name": ev.lineage.model_name},
            optional={"lineage.training_job_id": (ev.lineage.training_job_id, "job")},
        )
        if ev.lineage.model_version < 1:
            raise InvalidArgument(f"must be from 1, got {ev.lineage.model_version}", field="lineage.model_version")
        await self._monitor.on_version_deleted(
            ev.tenant, ev.lineage.model_name, ev.lineage.model_version, ev.lineage.training_job_id
        )
        if self._logs is not None:
            await self._logs.erase_version(ev.tenant, ev.lineage.model_name, ev.lineage.model_version)

    async def version_created(self, event: events.Event[events_pb2.ModelVersionCreated]) -> None:
        ev = event.data
        _check_event(
            ev.tenant,
            names={"lineage.model_name": ev.lineage.model_name},
            optional={
                "lineage.training_job_id": (ev.lineage.training_job_id, "job"),
                "lineage.dataset_version_id": (ev.lineage.dataset_version_id, "dv"),
            },
        )
        if ev.lineage.model_version < 1:
            raise InvalidArgument(f"must be from 1, got {ev.lineage.model_version}", field="lineage.model_version")
        await self._monitor.on_version_created(
            VersionInfo(
                tenant=ev.tenant,
                model_name=ev.lineage.model_name,
                version=ev.lineage.model_version,
                features=list(ev.features),
                target=ev.target,
                algorithm=ev.algorithm,
                artifact=ref_from_pb(ev.artifact),
                dataset_object=ref_from_pb(ev.dataset_object),
                dataset_id=ev.lineage.dataset_id,
                dataset_version_id=ev.lineage.dataset_version_id,
                training_job_id=ev.lineage.training_job_id,
                metrics=dict(ev.metrics),
            )
        )

    async def deployment_ready(self, event: events.Event[events_pb2.DeploymentReady]) -> None:
        ev = event.data
        lin = ev.lineage
        if not lin.deployment or not lin.model_name:
            raise Retry("deployment.ready without a deployment or model name", delay=5.0)
        _check_event(
            ev.tenant,
            names={"lineage.deployment": lin.deployment, "lineage.model_name": lin.model_name},
            optional={
                "lineage.training_job_id": (lin.training_job_id, "job"),
                "lineage.dataset_version_id": (lin.dataset_version_id, "dv"),
            },
        )
        if lin.model_version < 0:
            raise InvalidArgument(f"must be 0 or more, got {lin.model_version}", field="lineage.model_version")
        await self._monitor.on_deployment_ready(
            DeploymentInfo(
                tenant=ev.tenant,
                name=lin.deployment,
                model_name=lin.model_name,
                model_version=lin.model_version,
                triton_model=ev.triton_model,
                triton_version=ev.triton_version,
                triton_url=ev.host,
                dataset_id=lin.dataset_id,
                dataset_version_id=lin.dataset_version_id,
                training_job_id=lin.training_job_id,
                ready_at=event_time(event),
            )
        )


_Ids = dict[str, tuple[str, str]]


def _check_event(
    tenant: str, *, names: dict[str, str] | None = None, ids: _Ids | None = None, optional: _Ids | None = None
) -> None:
    """An event's tenant, names and ids (``field: (value, kind)``; ``optional`` ones may be empty), before
    they name a KV key.

    A refusal is permanent: the consumer dead-letters the event and nothing is stored.
    """
    if not is_name(tenant):
        raise InvalidArgument(f"expected a tenant name, got {shown(tenant)}", field="tenant")
    for field, value in (names or {}).items():
        if not is_name(value):
            raise InvalidArgument(f"expected a name, got {shown(value)}", field=field)
    present = {field: pair for field, pair in (optional or {}).items() if pair[0]}
    for field, (value, kind) in {**(ids or {}), **present}.items():
        if not is_id(value, kind):
            raise InvalidArgument(f"expected a {kind}_… id, got {shown(value)}", field=field)


def event_time(event: events.Event[Any]) -> float:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# ------------------------------------------------------------------------------------------ events out


class EventAnnouncer:
    """The monitor's :class:`~lepton_monitor.ports.Announcer`: CloudEvents on EVENTS, ids from natural keys."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    @staticmethod
    def _lineage(a: AlertRecord) -> common_pb2.Lineage:
        return lineage(deployment=a.deployment, model_name=a.model_name, model_version=a.model_version)

    async def incident(self, alert: AlertRecord, transition: Literal["fired", "resolved"]) -> None:
        a = alert
        message: events_pb2.AlertFired | events_pb2.AlertResolved | events_pb2.DriftDetected | events_pb2.DriftResolved
        if a.kind == "drift" and transition == "fired":
            message = events_pb2.DriftDetected(
                tenant=a.tenant,
                lineage=self._lineage(a),
                incident_id=a.incident_id,
                features=a.drifted,
                prediction_drifted=a.prediction_drifted,
                psi=a.psi,
                live_rows=a.live_rows,
                window_seconds=a.window_seconds,
                detected_at=_ts(a.fired_at),
                reference_dataset_version_id=a.reference_dataset_version_id,
            )
            name = "monitor.drift.detected"
        elif a.kind == "drift":
            message = events_pb2.DriftResolved(
                tenant=a.tenant,
                lineage=self._lineage(a),
                incident_id=a.incident_id,
                detected_at=_ts(a.fired_at),
                resolved_at=_ts(a.resolved_at),
            )
            name = "monitor.drift.resolved"
        elif transition == "fired":
            message = events_pb2.AlertFired(
                tenant=a.tenant,
                lineage=self._lineage(a),
                incident_id=a.incident_id,
                rule=a.rule,
                metric=a.metric,
                comparison=a.comparison,
                threshold=a.threshold,
                value=a.value,
                severity=a.severity,
                window_seconds=a.window_seconds,
                fired_at=_ts(a.fired_at),
            )
            name = "monitor.alert.fired"
        else:
            message = events_pb2.AlertResolved(
                tenant=a.tenant,
                lineage=self._lineage(a),
                incident_id=a.incident_id,
                rule=a.rule,
                metric=a.metric,
                threshold=a.threshold,
                value=a.resolved_value or 0.0,
                severity=a.severity,
                fired_at=_ts(a.fired_at),
                resolved_at=_ts(a.resolved_at),
            )
            name = "monitor.alert.resolved"
        await self._rt.publish(message, tenant=a.tenant, event_id=f"{name}:{a.incident_id}", ce_subject=a.deployment)

    async def retraining(self, request: RetrainingRequest) -> None:
        r = request
        await self._rt.publish(
            events_pb2.RetrainingRequested(
                tenant=r.tenant,
                lineage=lineage(
                    dataset_id=r.dataset_id,
                    dataset_version_id=r.trained_dataset_version_id,
                    training_job_id=r.training_job_id,
                    model_name=r.model_name,
                    model_version=r.model_version,
                    deployment=r.deployment,
                ),
                incident_id=r.incident_id,
                reason=r.reason,
                detail=r.detail,
                algorithm=r.algorithm,
                params=r.params,
                target=r.target,
                model_name=r.model_name,
                split_seed=r.split_seed,
                test_fraction=r.test_fraction,
                dataset_id=r.dataset_id,
                dataset_name=r.dataset_name,
                dataset_version_id=r.dataset_version_id,
                job_id=r.job_id,
            ),
            tenant=r.tenant,
            event_id=f"monitor.retraining.requested:{r.incident_id}",
            ce_subject=r.deployment,
        )

    async def labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        digest = hashlib.sha256(
            "\x00".join(f"{x.request_id}\x01{x.row}\x01{x.value!r}" for x in labels).encode()
        ).hexdigest()[:24]
        await self._rt.publish(
            events_pb2.LabelsReceived(
                tenant=tenant,
                lineage=lineage(deployment=deployment),
                request_ids=[x.request_id for x in labels],
                rows=[x.row for x in labels],
                values=[x.value for x in labels],
                received_at=_ts(at),
            ),
            tenant=tenant,
            event_id=f"monitor.labels.received:{tenant}:{deployment}:{digest}",
            ce_subject=deployment,
        )


__all__ = ["EventAnnouncer", "MonitorServicer", "PlatformEventsHandler", "PredictionLoggedHandler"]
