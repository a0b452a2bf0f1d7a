"""``client.monitor``: serving metrics, drift, ground truth, rules, alerts, retraining and logs."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc

from lepton_ai._transport import Transport, message


class Monitor:
    """The monitor service; reached as ``client.monitor``. Returns the platform's messages."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _stub(self) -> monitor_pb2_grpc.MonitorServiceStub:
        return monitor_pb2_grpc.MonitorServiceStub(self._t.channel("monitor"))

    def _call(self, method: str, request: Any) -> Any:
        return self._t.call("monitor", getattr(self._stub(), method), request)

    def metrics(
        self, deployment: str, *, version: int = 0, last_seconds: float = 0, history: bool = False, triton: bool = False
    ) -> monitor_pb2.ServingMetrics:
        """Requests, errors, latency percentiles and prediction statistics (the current window,
        or the last N seconds), optionally every stored window and Triton's own counters."""
        request = monitor_pb2.GetServingMetricsRequest(
            deployment=deployment, version=version, last_seconds=last_seconds, history=history, triton=triton
        )
        result: monitor_pb2.ServingMetrics = self._call("GetServingMetrics", request)
        return result

    def drift(
        self,
        deployment: str,
        *,
        version: int = 0,
        last_seconds: float = 0,
        features: Sequence[str] = (),
        png: bool = False,
    ) -> monitor_pb2.DriftReport:
        """Per-feature drift (PSI, KS / chi-square, verdict) against the training data; with a PNG if asked."""
        request = monitor_pb2.GetDriftReportRequest(
            deployment=deployment, version=version, last_seconds=last_seconds, features=list(features), png=png
        )
        result: monitor_pb2.DriftReport = self._call("GetDriftReport", request)
        return result

    def send_labels(
        self, deployment: str, labels: Mapping[str, float] | Sequence[tuple[str, int, float]]
    ) -> monitor_pb2.SendLabelsResponse:
        """Ground truth for earlier predictions: ``{request_id: value}`` (row 0), or
        ``[(request_id, row, value), ...]``. Idempotent."""
        if isinstance(labels, Mapping):
            items = [monitor_pb2.Label(request_id=k, row=0, value=float(v)) for k, v in labels.items()]
        else:
            items = [monitor_pb2.Label(request_id=r, row=int(i), value=float(v)) for r, i, v in labels]
        result: monitor_pb2.SendLabelsResponse = self._call(
            "SendLabels", monitor_pb2.SendLabelsRequest(deployment=deployment, labels=items)
        )
        return result

    def performance(self, /, deployment: str, **fields: Any) -> monitor_pb2.LivePerformance:
        """Live accuracy or RMSE/MAE from the labels sent, per window, and its trend."""
        result: monitor_pb2.LivePerformance = self._call(
            "GetLivePerformance", message(monitor_pb2.GetLivePerformanceRequest, deployment=deployment, **fields)
        )
        return result

    def set_rules(self, deployment: str, rules: Sequence[Mapping[str, Any]]) -> builtins.list[monitor_pb2.RuleStatus]:
        """Replaces a deployment's alert rules; each a dict of ``Rule`` fields
        (``name``, ``metric``, ``comparison``, ``threshold``, ``window_seconds``, ``severity``, ...).
        Returns each rule (with the platform's defaults filled in) and its status."""
        built = [message(monitor_pb2.Rule, f"rules[{i}].", **r) for i, r in enumerate(rules)]
        request = monitor_pb2.SetRulesRequest(deployment=deployment, rules=built)
        return builtins.list(self._call("SetRules", request).rules)

    def rules(self, deployment: str) -> builtins.list[monitor_pb2.RuleStatus]:
        """A deployment's alert rules and their status (firing, streak, last value)."""
        return builtins.list(self._call("ListRules", monitor_pb2.ListRulesRequest(deployment=deployment)).rules)

    def alerts(
        self, deployment: str = "", *, firing_only: bool = False, limit: int = 0
    ) -> builtins.list[monitor_pb2.Alert]:
        """Alert and drift incidents, newest first (every deployment when none is named)."""
        request = monitor_pb2.ListAlertsRequest(deployment=deployment, firing_only=firing_only, limit=limit)
        return builtins.list(self._call("ListAlerts", request).alerts)

    def set_retraining_policy(self, /, deployment: str, **fields: Any) -> monitor_pb2.RetrainingPolicy:
        """When incidents request retraining: ``on_drift``, ``on_alert``, ``alert_rules``,
        ``min_interval_seconds``, ``allow_same_dataset_version``."""
        policy = message(monitor_pb2.RetrainingPolicy, deployment=deployment, **fields)
        result: monitor_pb2.RetrainingPolicy = self._call(
            "SetRetrainingPolicy", monitor_pb2.SetRetrainingPolicyRequest(policy=policy)
        )
        return result

    def logs(self, /, deployment: str = "", **fields: Any) -> Iterator[monitor_pb2.PredictionLog]:
        """Prediction logs matching the filters (``version``, ``errors_only``, ``trace_id``,
        ``request_id``, ``feature_ranges``, ``start_time``/``end_time``), page after page."""
        request = message(monitor_pb2.QueryPredictionLogsRequest, deployment=deployment, **fields)
        while True:
            page = self._call("QueryPredictionLogs", request)
            yield from page.logs
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def summary(self, /, deployment: str = "", **fields: Any) -> monitor_pb2.LogSummary:
        """Counts, error rate, latency percentiles, top errors and the slowest requests."""
        result: monitor_pb2.LogSummary = self._call(
            "SummarizeLogs", message(monitor_pb2.SummarizeLogsRequest, deployment=deployment, **fields)
        )
        return result
