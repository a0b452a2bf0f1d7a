"""What the monitor holds in memory about recent predictions, per tenant, deployment and version.

Beside :class:`~lepton_monitor.windows.ServingWindows` (counts, latencies, prediction moments) each window
keeps:

* the ids of the logs it counted, so a redelivered log is counted once (as runs of each model
  instance's counter, :class:`~lepton_monitor.seen.SeenIds`: not one entry per log);
* a uniform sample (Vitter's algorithm R, seeded per window) of the logged input rows with their
  predictions, up to ``rows_per_window``, for drift;
* the logged predictions of each request by request id (up to ``max_samples`` requests), so that ground
  truth sent later (:meth:`LiveData.add_labels`) finds its prediction.

Windows are cut and retained exactly as :class:`ServingWindows` cuts and retains them. Nothing here reads
the clock except the defaults of ``at`` arguments; the service rebuilds this state after a restart by
reading the PREDICTIONS stream back (see :mod:`lepton_monitor.core`).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lepton_monitor.records import drop_tenant
from lepton_monitor.seen import SeenIds
from lepton_monitor.windows import ServingWindows

REGRESSION = "regression"
CLASSIFICATION = "classification"
#: Two class labels closer than this are the same class (labels and predictions travel as doubles).
CLASS_TOLERANCE = 1e-9


@dataclass
class LogEntry:
    """One prediction log, as the monitor uses it (decoded from ``PredictionLogged`` at the edge, or from
    one entry of a ``PredictionLogBatch``).

    Attributes:
        tenant: The tenant.
        deployment: The deployment that served it.
        model_name: The model.
        version: The model version.
        log_id: Unique id of the log.
        request_id: The caller's request id, or the log id.
        trace_id: The W3C trace id, when the request carried one.
        time: When it was served, seconds since the epoch.
        batch_rows: Rows in the request.
        latency_ms: Time in the model's execute, milliseconds.
        error: The error message of a failed request; empty on success.
        feature_names: Names of the logged input columns.
        rows: The logged input rows (the first ones of the request).
        outputs: One prediction per logged row (empty on error).
        sequence: The stream sequence the log was read at (0 when unknown).
        index: Its position in that stream message (a batch holds many logs).
        traceparent: The caller's W3C traceparent, when the request carried one.
    """

    tenant: str
    deployment: str
    model_name: str
    version: int
    log_id: str
    request_id: str
    trace_id: str
    time: float
    batch_rows: int
    latency_ms: float | None
    error: str
    feature_names: list[str] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    outputs: list[float] = field(default_factory=list)
    sequence: int = 0
    index: int = 0
    traceparent: str = ""


@dataclass(frozen=True)
class LabelIn:
    """Ground truth for one row of an earlier request."""

    request_id: str
    row: int
    value: float


@dataclass
class Counters:
    """Totals since this process started (the Prometheus counters)."""

    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_ms_sum: float = 0.0


@dataclass
class DriftSample:
    """Logged rows of a span, by column, for drift.

    Attributes:
        feature_names: The columns.
        columns: Values per column.
        predictions: The prediction of each row (NaN when the request had none).
        rows: Rows in the sample.
        start: Start of the first window covered.
        end: End of the last window covered.
    """

    feature_names: list[str]
    columns: dict[str, npt.NDArray[np.float64]]
    predictions: npt.NDArray[np.float64]
    rows: int
    start: float
    end: float


@dataclass
class PerformancePoint:
    """Accuracy or error of the labelled predictions of one window (or several merged)."""

    start: float
    end: float
    labelled: int
    accuracy: float | None = None
    rmse: float | None = None
    mae: float | None = None


class _RowSample:
    """Rows (with their predictions) up to ``bound``, then a uniform reservoir (algorithm R)."""

    __slots__ = ("_rng", "bound", "names", "outputs", "rows", "seen")

    def __init__(self, bound: int, seed: int) -> None:
        self.bound = bound
        self.seen = 0
        self.names: list[str] = []
        self.rows: list[list[float]] = []
        self.outputs: list[float] = []
        self._rng = random.Random(seed)

    def add(self, row: list[float], output: float) -> None:
        self.seen += 1
        if len(self.rows) < self.bound:
            self.rows.append(row)
            self.outputs.append(output)
            return
        j = self._rng.randrange(self.seen)
        if j < self.bound:
            self.rows[j] = row
            self.outputs[j] = output


@dataclass
class _LiveWindow:
    start: int
    sample: _RowSample
    log_ids: SeenIds = field(default_factory=SeenIds)
    requests: dict[str, list[float]] = field(default_factory=dict)


def _seed(*parts: object) -> int:
    return zlib.crc32("\x00".join(str(p) for p in parts).encode())


class LiveData:
    """Recent prediction logs of every deployment, in windows; see the module docstring.

    Args:
        width_seconds: Width of a window.
        retention: Windows kept per (deployment, version).
        max_samples: Latencies and predictions kept per window (percentiles exact up to it); also the most
            requests per window whose predictions are kept for labels.
        rows_per_window: Input rows kept per window for drift.
    """

    def __init__(self, width_seconds: int, retention: int, max_samples: int, rows_per_window: int) -> None:
        self.width_seconds = width_seconds
        self.retention = retention
        self.max_samples = max_samples
        self.rows_per_window = rows_per_window
        self._serving: dict[str, ServingWindows] = {}
        self._live: dict[tuple[str, str, int], dict[int, _LiveWindow]] = {}
        self._labels: dict[tuple[str, str], dict[tuple[str, int], tuple[float, float]]] = {}
        self.counters: dict[tuple[str, str, int], Counters] = {}
        self.duplicates = 0
        """Logs not counted because their id was counted before."""

    def forget_tenant(self, tenant: str) -> None:
        """Drops every log, window and counter of a deleted tenant."""
        drop_tenant(tenant, self._serving, self._live, self._labels, self.counters)

    def serving(self, tenant: str) -> ServingWindows:
        """The serving windows of one tenant (created empty when it has none)."""
        found = self._serving.get(tenant)
        if found is None:
            found = self._serving[tenant] = ServingWindows(self.width_seconds, self.retention, self.max_samples)
        return found

    def serving_windows(self) -> list[tuple[str, ServingWindows]]:
        """Every tenant's serving windows, by tenant."""
        return sorted(self._serving.items())

    def window_start(self, at: float) -> int:
        return math.floor(at / self.width_seconds) * self.width_seconds

    def add(self, entry: LogEntry) -> bool:
        """Counts one log, once per log id.

        Returns:
            True when counted; False for a log counted before or one older than the retention.
        """
        key = (entry.tenant, entry.deployment, int(entry.version))
        start = self.window_start(entry.time)
        windows = self._live.setdefault(key, {})
        window = windows.get(start)
        if window is not None and entry.log_id in window.log_ids:
            self.duplicates += 1
            return False
        counted = self.serving(entry.tenant).add(
            entry.deployment,
            int(entry.version),
            at=entry.time,
            latency_ms=entry.latency_ms,
            rows=entry.batch_rows,
            error=bool(entry.error),
            predictions=entry.outputs,
        )
        if not counted:
            if not windows:
                del self._live[key]
            return False
        if window is None:
            window = windows[start] = _LiveWindow(
                start=start, sample=_RowSample(self.rows_per_window, _seed(*key, start))
            )
            oldest_kept = max(windows) - (self.retention - 1) * self.width_seconds
            for old in [s for s in windows if s < oldest_kept]:
                del windows[old]
        window.log_ids.add(entry.log_id)
        if entry.request_id and len(window.requests) < self.max_samples:
            window.requests[entry.request_id] = list(entry.outputs)
        width = len(entry.feature_names)
        if width and entry.rows:
            if not window.sample.names:
                window.sample.names = list(entry.feature_names)
            if window.sample.names == entry.feature_names:
                for k, row in enumerate(entry.rows):
                    if len(row) == width:
                        output = entry.outputs[k] if k < len(entry.outputs) else math.nan
                        window.sample.add(list(row), float(output))
        counters = self.counters.setdefault(key, Counters())
        counters.requests += 1
        counters.errors += int(bool(entry.error))
        counters.rows += int(entry.batch_rows)
        counters.latency_ms_sum += float(entry.latency_ms or 0.0)
        return True

    def deployments(self, tenant: str) -> list[str]:
        """Deployments of ``tenant`` with stored windows."""
        return sorted({d for t, d, _ in self._live if t == tenant})

    def versions(self, tenant: str, deployment: str) -> list[int]:
        """Versions of a deployment with stored windows, ascending."""
        return sorted(v for t, d, v in self._live if t == tenant and d == deployment and self._live[(t, d, v)])

    def _windows(self, tenant: str, deployment: str, version: int | None) -> list[_LiveWindow]:
        out: list[_LiveWindow] = []
        for (t, d, v), windows in self._live.items():
            if t == tenant and d == deployment and (version is None or v == version):
                out.extend(windows.values())
        return out

    def drift_sample(
        self, tenant: str, deployment: str, version: int, *, seconds: float, at: float | None = None
    ) -> DriftSample:
        """The sampled input rows of the windows overlapping the ``seconds`` before ``at``.

        Args:
            tenant: The tenant.
            deployment: The deployment.
            version: The model version.
            seconds: How far back; more than 0.
            at: Seconds since the epoch; now when None.

        Returns:
            The rows by column (only rows logged under the newest window's column names).
        """
        end = time.time() if at is None else at
        lo, hi = self.window_start(end - seconds), self.window_start(end)
        chosen = sorted(
            (w for w in self._windows(tenant, deployment, version) if lo <= w.start <= hi), key=lambda w: w.start
        )
        names = next((w.sample.names for w in reversed(chosen) if w.sample.names), [])
        rows: list[list[float]] = []
        outputs: list[float] = []
        for w in chosen:
            if w.sample.names == names:
                rows.extend(w.sample.rows)
                outputs.extend(w.sample.outputs)
        matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
        return DriftSample(
            feature_names=list(names),
            columns={name: matrix[:, j] for j, name in enumerate(names)},
            predictions=np.asarray(outputs, dtype=np.float64),
            rows=len(rows),
            start=float(lo),
            end=float(hi + self.width_seconds),
        )

    def add_labels(self, tenant: str, deployment: str, labels: Iterable[LabelIn], at: float) -> int:
        """Stores ground truth; the same (request id, row) again replaces its value.

        Returns:
            How many of the labels name a prediction held now.
        """
        table = self._labels.setdefault((tenant, deployment), {})
        known: dict[str, list[float]] = {}
        for w in self._windows(tenant, deployment, None):
            known.update(w.requests)
        matched = 0
        for label in labels:
            table[(label.request_id, label.row)] = (float(label.value), at)
            outputs = known.get(label.request_id)
            if outputs is not None and label.row < len(outputs):
                matched += 1
        return matched

    def forget_labels(self, before: float) -> None:
        """Drops labels received before ``before`` (their predictions have left the windows)."""
        for key in list(self._labels):
            table = self._labels[key]
            for label_key in [k for k, (_, at) in table.items() if at < before]:
                del table[label_key]
            if not table:
                del self._labels[key]

    def _pairs(
        self, tenant: str, deployment: str, version: int | None, seconds: float | None, at: float | None
    ) -> dict[int, tuple[list[float], list[float]]]:
        table = self._labels.get((tenant, deployment), {})
        lo = -math.inf
        if seconds is not None:
            lo = self.window_start((time.time() if at is None else at) - seconds)
        by_start: dict[int, tuple[list[float], list[float]]] = {}
        for w in self._windows(tenant, deployment, version):
            if w.start < lo:
                continue
            predicted, truth = by_start.setdefault(w.start, ([], []))
            for request_id, outputs in w.requests.items():
                for row, value in enumerate(outputs):
                    label = table.get((request_id, row))
                    if label is not None and math.isfinite(value):
                        predicted.append(value)
                        truth.append(label[0])
        return by_start

    def performance(
        self,
        tenant: str,
        deployment: str,
        version: int | None,
        task: str,
        *,
        seconds: float | None = None,
        at: float | None = None,
    ) -> tuple[PerformancePoint, list[PerformancePoint]]:
        """Accuracy (classification) or RMSE and MAE (regression) of labelled predictions, overall and per window.

        Args:
            tenant: The tenant.
            deployment: The deployment.
            version: The model version, or None for every version.
            task: ``classification`` or ``regression``.
            seconds: Only the windows overlapping the last ``seconds`` before ``at``; every window when None.
            at: Seconds since the epoch; now when None.

        Returns:
            The score of every labelled prediction together, and one point per window with at least one stored
            request, oldest first (``labelled`` may be 0).
        """
        by_start = self._pairs(tenant, deployment, version, seconds, at)
        points = [
            score(predicted, truth, task, float(start), float(start + self.width_seconds))
            for start, (predicted, truth) in sorted(by_start.items())
        ]
        starts = sorted(by_start)
        every_p = [v for s in starts for v in by_start[s][0]]
        every_y = [v for s in starts for v in by_start[s][1]]
        lo = float(starts[0]) if starts else 0.0
        hi = float(starts[-1] + self.width_seconds) if starts else 0.0
        return score(every_p, every_y, task, lo, hi), points


def score(predicted: Sequence[float], truth: Sequence[float], task: str, start: float, end: float) -> PerformancePoint:
    """Accuracy (classification) or RMSE and MAE (regression) of paired predictions and labels."""
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    point = PerformancePoint(start=start, end=end, labelled=int(p.size))
    if p.size == 0:
        return point
    if task == CLASSIFICATION:
        point.accuracy = float(np.mean(np.abs(p - y) <= CLASS_TOLERANCE))
    else:
        point.rmse = float(np.sqrt(np.mean((p - y) ** 2)))
        point.mae = float(np.mean(np.abs(p - y)))
    return point


def trend(points: Sequence[PerformancePoint], metric: str) -> tuple[float | None, str]:
    """The least-squares slope of ``metric`` per hour over the labelled windows, and its direction.

    Args:
        points: Windows, oldest first.
        metric: ``accuracy`` (higher is better) or ``rmse`` (lower is better).

    Returns:
        The slope (None under two labelled windows) and ``improving``, ``degrading``, ``steady`` (the fitted
        change over the span is under 1% of the mean) or ``unknown``.
    """
    xs: list[float] = []
    ys: list[float] = []
    for p in points:
        value = getattr(p, metric)
        if p.labelled and value is not None:
            xs.append(p.start / 3600.0)
            ys.append(float(value))
    if len(xs) < 2:
        return None, "unknown"
    slope = float(np.polyfit(np.asarray(xs) - xs[0], np.asarray(ys), 1)[0])
    change = slope * (xs[-1] - xs[0])
    if abs(change) < 0.01 * max(abs(float(np.mean(ys))), 1e-12):
        return slope, "steady"
    better = slope > 0 if metric == "accuracy" else slope < 0
    return slope, "improving" if better else "degrading"


__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "Counters",
    "DriftSample",
    "LabelIn",
    "LiveData",
    "LogEntry",
    "PerformancePoint",
    "score",
    "trend",
]
