"""The monitor's Prometheus metrics, computed from memory at scrape time.

:class:`MonitorMetrics` turns the live windows and what the last evaluations saw (:class:`Observations`)
into metric families; :mod:`lepton_monitor.prometheus` renders and serves them. docs/monitoring.md lists
the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lepton_monitor.drift import DRIFT, DriftReport
from lepton_monitor.live import LiveData
from lepton_monitor.ports import Clock
from lepton_monitor.prometheus import MetricFamily
from lepton_monitor.records import AlertRecord
from lepton_monitor.triton import TritonSnapshot


@dataclass
class Observations:
    """What the evaluation loop saw last, per (tenant, deployment), kept for the metrics.

    Attributes:
        last_drift: The served version and its drift report at the last drift check.
        last_triton: Triton's statistics of the served version at the last evaluation.
        firing: The incidents firing as of the last evaluation.
    """

    last_drift: dict[tuple[str, str], tuple[int, DriftReport]] = field(default_factory=dict)
    last_triton: dict[tuple[str, str], TritonSnapshot] = field(default_factory=dict)
    firing: dict[tuple[str, str], list[AlertRecord]] = field(default_factory=dict)


class MonitorMetrics:
    """Everything the Prometheus endpoint shows.

    Args:
        live: The in-memory logs (counters since start and the recent windows).
        observations: What the last evaluations saw.
        window_s: The width of one window; the gauges span the current and previous windows.
        clock: Seconds since the epoch.
    """

    def __init__(self, live: LiveData, observations: Observations, window_s: int, clock: Clock) -> None:
        self._live = live
        self._observations = observations
        self._window_s = window_s
        self._clock = clock

    def families(self) -> list[MetricFamily]:
        """Every metric family, computed now from memory."""
        at = self._clock()
        return [*self._counters(), *self._serving_gauges(at), *self._drift(), self._firing(), *self._triton()]

    def _counters(self) -> list[MetricFamily]:
        requests = MetricFamily("lepton_monitor_requests_total", "Prediction logs counted since start.", "counter")
        errors = MetricFamily("lepton_monitor_errors_total", "Failed requests among them.", "counter")
        rows = MetricFamily("lepton_monitor_rows_total", "Rows predicted by the logged requests.", "counter")
        latency_sum = MetricFamily(
            "lepton_monitor_latency_ms_sum_total", "Sum of the logged latencies in milliseconds.", "counter"
        )
        for (tenant, deployment, version), c in sorted(self._live.counters.items()):
            labels = {"tenant": tenant, "deployment": deployment, "version": str(version)}
            requests.add(labels, c.requests)
            errors.add(labels, c.errors)
            rows.add(labels, c.rows)
            latency_sum.add(labels, c.latency_ms_sum)
        return [requests, errors, rows, latency_sum]

    def _serving_gauges(self, at: float) -> list[MetricFamily]:
        window = MetricFamily(
            "lepton_monitor_window_seconds", "Span of the gauges below (the current and previous windows).", "gauge"
        )
        window.add({}, 2 * self._window_s)
        rate = MetricFamily("lepton_monitor_error_rate", "Errors / requests over the recent span.", "gauge")
        latency = MetricFamily(
            "lepton_monitor_latency_ms", "Latency percentiles of the logged requests over the recent span.", "gauge"
        )
        for tenant, windows in self._live.serving_windows():
            for deployment, version in windows.keys():  # noqa: SIM118 (a method, not a dict)
                stats = windows.last(deployment, version, seconds=self._window_s, at=at)
                labels = {"tenant": tenant, "deployment": deployment, "version": str(version)}
                if stats.error_rate is not None:
                    rate.add(labels, stats.error_rate)
                for q, value in (
                    ("0.5", stats.latency_p50_ms),
                    ("0.95", stats.latency_p95_ms),
                    ("0.99", stats.latency_p99_ms),
                ):
                    if value is not None:
                        latency.add({**labels, "quantile": q}, value)
        return [window, rate, latency]

    def _drift(self) -> list[MetricFamily]:
        psi = MetricFamily("lepton_monitor_drift_psi", "PSI of each feature at the last drift check.", "gauge")
        drifted = MetricFamily(
            "lepton_monitor_drift_detected", "1 when the feature's drift verdict is drift at the last check.", "gauge"
        )
        for (tenant, deployment), (version, report) in sorted(self._observations.last_drift.items()):
            results = [*report.features, *([report.prediction] if report.prediction else [])]
            for f in results:
                if f.psi is None:
                    continue
                labels = {"tenant": tenant, "deployment": deployment, "version": str(version), "feature": f.name}
                psi.add(labels, f.psi)
                drifted.add(labels, 1.0 if f.verdict == DRIFT else 0.0)
        return [psi, drifted]

    def _firing(self) -> MetricFamily:
        firing = MetricFamily("lepton_monitor_alerts_firing", "1 for each incident firing now.", "gauge")
        for (tenant, deployment), alerts in sorted(self._observations.firing.items()):
            for a in alerts:
                firing.add(
                    {
                        "tenant": tenant,
                        "deployment": deployment,
                        "rule": a.rule,
                        "kind": a.kind,
                        "severity": a.severity,
                    },
                    1.0,
                )
        return firing

    def _triton(self) -> list[MetricFamily]:
        triton_requests = MetricFamily(
            "lepton_triton_requests_total", "Triton's requests of the serving version, by outcome.", "counter"
        )
        triton_seconds = MetricFamily(
            "lepton_triton_duration_seconds_total", "Triton's cumulative request durations, by phase.", "counter"
        )
        for (tenant, deployment), snap in sorted(self._observations.last_triton.items()):
            if not snap.reachable:
                continue
            labels = {"tenant": tenant, "deployment": deployment, "version": snap.version}
            triton_requests.add({**labels, "outcome": "success"}, snap.success_count)
            triton_requests.add({**labels, "outcome": "failure"}, snap.failure_count)
            for phase, ns in (
                ("request", snap.success_ns),
                ("queue", snap.queue_ns),
                ("compute_infer", snap.compute_infer_ns),
            ):
                triton_seconds.add({**labels, "phase": phase}, ns / 1e9)
        return [triton_requests, triton_seconds]


__all__ = ["MonitorMetrics", "Observations"]
