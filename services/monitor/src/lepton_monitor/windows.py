"""Serving statistics per (deployment, version) in fixed-width time windows.

A window covers ``[start, start + width)`` seconds since the epoch, with ``start`` a multiple of the width
(60 s by default), so every replica of the monitor cuts time the same way. Each (deployment, version)
keeps at most ``retention`` windows, counted back from its newest one; an observation older than that is
refused (``add`` returns False) rather than reopening a dropped window.

Per window it keeps exact counts (requests, errors, rows), exact latency count/sum/max and exact running
moments of the prediction values (count, mean, variance, min, max, merged with Chan et al.'s formulas), plus
the latency and prediction values themselves up to ``max_samples`` per window. Under that bound the
percentiles are exact, equal to ``numpy.percentile`` (linear interpolation) over every latency in the queried
windows. Above it a window keeps a uniform reservoir sample (Vitter's algorithm R, seeded from the
deployment, version and window start, so the same observations give the same sample), and the percentiles
of a query become estimates that weigh each kept value by the number of values it stands for;
:attr:`WindowStats.latency_exact` then says False.

Nothing here reads the clock except the defaults of the query methods' ``at`` argument: every timestamp is
passed in. Idempotency (counting a prediction log once) is the caller's job.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

#: The metrics :meth:`WindowStats.metric` knows, with what they measure; alert rules name these.
METRICS: dict[str, str] = {
    "requests": "logged requests",
    "errors": "logged requests that failed",
    "error_rate": "errors / requests (no value without requests)",
    "rows": "rows predicted",
    "latency_p50_ms": "median latency in milliseconds",
    "latency_p95_ms": "95th percentile latency in milliseconds",
    "latency_p99_ms": "99th percentile latency in milliseconds",
    "latency_mean_ms": "mean latency in milliseconds",
    "latency_max_ms": "greatest latency in milliseconds",
    "prediction_mean": "mean predicted value",
    "prediction_std": "sample standard deviation of the predicted values",
}

PERCENTILES = (50.0, 95.0, 99.0)


class WindowStats(BaseModel):
    """Statistics of one window, or of several merged.

    Attributes:
        deployment: The deployment.
        version: The model version, or None when every version of the deployment is merged.
        start: Start of the first window covered, seconds since the epoch.
        end: End of the last window covered (exclusive).
        windows: How many stored windows were merged (0 when there was no data).
        requests: Logged requests.
        errors: Logged requests that failed.
        error_rate: ``errors / requests``, None without requests.
        rows: Rows predicted.
        latency_count: Requests that reported a latency.
        latency_p50_ms: Median latency (None without latencies).
        latency_p95_ms: 95th percentile latency.
        latency_p99_ms: 99th percentile latency.
        latency_mean_ms: Mean latency (always exact).
        latency_max_ms: Greatest latency (always exact).
        latency_exact: Whether the percentiles are exact (every latency was kept).
        prediction_count: Finite predicted values.
        prediction_dropped: Predicted values dropped as not finite.
        prediction_mean: Mean predicted value (exact).
        prediction_std: Sample standard deviation (ddof=1, exact), None under two values.
        prediction_min: Least predicted value.
        prediction_max: Greatest predicted value.
    """

    deployment: str
    version: int | None
    start: float
    end: float
    windows: int = 0
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    rows: int = 0
    latency_count: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_max_ms: float | None = None
    latency_exact: bool = True
    prediction_count: int = 0
    prediction_dropped: int = 0
    prediction_mean: float | None = None
    prediction_std: float | None = None
    prediction_min: float | None = None
    prediction_max: float | None = None

    def metric(self, name: str) -> float | None:
        """The value of a metric in :data:`METRICS`, None when there is no data for it.

        Args:
            name: The metric.

        Returns:
            The value.

        Raises:
            ValueError: For a name outside :data:`METRICS`.
        """
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; expected one of {sorted(METRICS)}")
        value = getattr(self, name)
        return None if value is None else float(value)


class _Sample:
    """Values up to ``bound``, then a uniform reservoir of ``bound`` of them (algorithm R)."""

    __slots__ = ("_rng", "bound", "seen", "values")

    def __init__(self, bound: int, seed: int) -> None:
        self.bound = bound
        self.seen = 0
        self.values: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.bound:
            self.values.append(value)
            return
        j = self._rng.randrange(self.seen)
        if j < self.bound:
            self.values[j] = value

    @property
    def exact(self) -> bool:
        return self.seen == len(self.values)


@dataclass
class _Moments:
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def merge(self, other: _Moments) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2, self.low, self.high = (
                other.count,
                other.mean,
                other.m2,
                other.low,
                other.high,
            )
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean += delta * other.count / n
        self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @classmethod
    def of(cls, values: list[float]) -> _Moments:
        if not values:
            return cls()
        mean = math.fsum(values) / len(values)
        return cls(
            count=len(values),
            mean=mean,
            m2=math.fsum((v - mean) ** 2 for v in values),
            low=min(values),
            high=max(values),
        )


@dataclass
class _Window:
    start: int
    latencies: _Sample
    predictions: _Sample
    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_sum: float = 0.0
    latency_max: float = -math.inf
    prediction_moments: _Moments = field(default_factory=_Moments)
    prediction_dropped: int = 0


def _seed(deployment: str, version: int, start: int, what: str) -> int:
    # crc32, not hash(): str hashes change from one process to the next.
    return zlib.crc32(f"{deployment}\x00{version}\x00{start}\x00{what}".encode())


def _weighted_percentiles(values: list[float], weights: list[float], qs: Iterable[float]) -> list[float]:
    """Percentiles of values that each stand for ``weight`` observations (inverted weighted CDF)."""
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=np.float64)[order]
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    out = []
    for q in qs:
        k = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
        out.append(float(v[min(k, v.size - 1)]))
    return out


class ServingWindows:
    """Windowed serving statistics of every (deployment, version), in memory.

    Args:
        width_seconds: Width of a window; windows start at multiples of it since the epoch.
        retention: Windows kept per (deployment, version), counted back from its newest.
        max_samples: Latency (and prediction) values kept per window; percentiles are exact up to it.

    Raises:
        ValueError: For a width, retention or bound below 1.
    """

    def __init__(self, width_seconds: int = 60, retention: int = 60, max_samples: int = 10_000) -> None:
        for name, value in (("width_seconds", width_seconds), ("retention", retention), ("max_samples", max_samples)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        self.width_seconds = int(width_seconds)
        self.retention = int(retention)
        self.max_samples = int(max_samples)
        self._windows: dict[tuple[str, int], dict[int, _Window]] = {}
        self.late_dropped = 0
        """Observations refused because their window was older than the retention."""

    def window_start(self, at: float) -> int:
        """Start of the window that holds ``at``.

        Args:
            at: Seconds since the epoch.

        Returns:
            The greatest multiple of the width not after ``at``.
        """
        return math.floor(at / self.width_seconds) * self.width_seconds

    def add(
        self,
        deployment: str,
        version: int,
        *,
        at: float,
        latency_ms: float | None = None,
        rows: int = 1,
        error: bool = False,
        predictions: Iterable[float] | npt.NDArray[np.float64] = (),
    ) -> bool:
        """Counts one logged request.

        Args:
            deployment: The deployment.
            version: The model version that served it.
            at: When it was served, seconds since the epoch.
            latency_ms: Its latency in milliseconds, if known.
            rows: Rows it predicted.
            error: Whether it failed.
            predictions: The predicted values (non-finite ones are dropped and counted).

        Returns:
            True if counted; False if its window is older than the retention (counted in ``late_dropped``).

        Raises:
            ValueError: For a non-finite ``at``, a negative or non-finite ``latency_ms``, or negative ``rows``.
        """
        if not math.isfinite(at):
            raise ValueError(f"at must be a finite timestamp, got {at!r}")
        if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise ValueError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows!r}")
        key = (deployment, int(version))
        start = self.window_start(at)
        windows = self._windows.setdefault(key, {})
        newest = max(windows, default=start)
        oldest_kept = max(newest, start) - (self.retention - 1) * self.width_seconds
        if start < oldest_kept:
            self.late_dropped += 1
            return False
        window = windows.get(start)
        if window is None:
            window = windows[start] = _Window(
                start=start,
                latencies=_Sample(self.max_samples, _seed(deployment, key[1], start, "latency")),
                predictions=_Sample(self.max_samples, _seed(deployment, key[1], start, "prediction")),
            )
            for old in [s for s in windows if s < oldest_kept]:
                del windows[old]
        window.requests += 1
        window.errors += int(bool(error))
        window.rows += int(rows)
        if latency_ms is not None:
            window.latency_sum += float(latency_ms)
            window.latency_max = max(window.latency_max, float(latency_ms))
            window.latencies.add(float(latency_ms))
        if isinstance(predictions, np.ndarray):
            values = predictions.astype(np.float64, copy=False).ravel().tolist()
        else:
            values = [float(v) for v in predictions]
        # Plain Python, not numpy: a log holds a handful of predictions, and numpy's per-call
        # overhead was most of the monitor's CPU per log.
        finite = [v for v in values if math.isfinite(v)]
        window.prediction_dropped += len(values) - len(finite)
        window.prediction_moments.merge(_Moments.of(finite))
        for value in finite:
            window.predictions.add(value)
        return True

    def keys(self) -> list[tuple[str, int]]:
        """Every (deployment, version) with a stored window, sorted."""
        return sorted(k for k, w in self._windows.items() if w)

    def forget(self, deployment: str, version: int | None = None) -> None:
        """Drops the windows of one version, or of every version of ``deployment`` when ``version`` is None."""
        for key in [k for k in self._windows if k[0] == deployment and (version is None or k[1] == version)]:
            del self._windows[key]

    def _select(self, deployment: str, version: int | None, lo: int, hi: int) -> dict[int, list[_Window]]:
        chosen: dict[int, list[_Window]] = {}
        for (dep, ver), windows in self._windows.items():
            if dep != deployment or (version is not None and ver != version):
                continue
            for start, window in windows.items():
                if lo <= start <= hi:
                    chosen.setdefault(start, []).append(window)
        return chosen

    def _stats(self, deployment: str, version: int | None, windows: list[_Window], lo: int, hi: int) -> WindowStats:
        out = WindowStats(
            deployment=deployment,
            version=version,
            start=float(lo),
            end=float(hi + self.width_seconds),
            windows=len({w.start for w in windows}),
        )
        if not windows:
            return out
        out.requests = sum(w.requests for w in windows)
        out.errors = sum(w.errors for w in windows)
        out.rows = sum(w.rows for w in windows)
        out.error_rate = out.errors / out.requests if out.requests else None
        out.latency_count = sum(w.latencies.seen for w in windows)
        if out.latency_count:
            out.latency_mean_ms = sum(w.latency_sum for w in windows) / out.latency_count
            out.latency_max_ms = max(w.latency_max for w in windows)
            out.latency_exact = all(w.latencies.exact for w in windows)
            if out.latency_exact:
                kept = np.concatenate([np.asarray(w.latencies.values, dtype=np.float64) for w in windows])
                p50, p95, p99 = (float(v) for v in np.percentile(kept, PERCENTILES))
            else:
                values = [v for w in windows for v in w.latencies.values]
                weights = [w.latencies.seen / len(w.latencies.values) for w in windows for _ in w.latencies.values]
                p50, p95, p99 = _weighted_percentiles(values, weights, PERCENTILES)
            out.latency_p50_ms, out.latency_p95_ms, out.latency_p99_ms = p50, p95, p99
        moments = _Moments()
        for w in windows:
            moments.merge(w.prediction_moments)
        out.prediction_dropped = sum(w.prediction_dropped for w in windows)
        out.prediction_count = moments.count
        if moments.count:
            out.prediction_mean = moments.mean
            out.prediction_min, out.prediction_max = moments.low, moments.high
            if moments.count > 1:
                out.prediction_std = math.sqrt(max(moments.m2, 0.0) / (moments.count - 1))
        return out

    def current(self, deployment: str, version: int | None = None, *, at: float | None = None) -> WindowStats:
        """Statistics of the window that holds ``at``.

        Args:
            deployment: The deployment.
            version: The model version, or None to merge every version.
            at: Seconds since the epoch; now when None.

        Returns:
            The window's statistics (zero counts when it holds nothing).
        """
        start = self.window_start(time.time() if at is None else at)
        windows = [w for ws in self._select(deployment, version, start, start).values() for w in ws]
        return self._stats(deployment, version, windows, start, start)

    def last(
        self, deployment: str, version: int | None = None, *, seconds: float, at: float | None = None
    ) -> WindowStats:
        """Statistics of the windows that overlap the ``seconds`` before ``at``, merged.

        These are the windows from the one holding ``at - seconds`` to the one holding ``at``: every
        observation in ``(at - seconds, at]`` is counted, and so may be some up to one width older.

        Args:
            deployment: The deployment.
            version: The model version, or None to merge every version.
            seconds: How far back to look; more than 0.
            at: Seconds since the epoch; now when None.

        Returns:
            The merged statistics.

        Raises:
            ValueError: When ``seconds`` is not positive.
        """
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        end = time.time() if at is None else at
        lo, hi = self.window_start(end - seconds), self.window_start(end)
        windows = [w for ws in self._select(deployment, version, lo, hi).values() for w in ws]
        return self._stats(deployment, version, windows, lo, hi)

    def history(self, deployment: str, version: int | None = None) -> list[WindowStats]:
        """Statistics of every stored window, oldest first (versions merged per window when None).

        Args:
            deployment: The deployment.
            version: The model version, or None to merge every version.

        Returns:
            One entry per stored window start.
        """
        chosen = self._select(deployment, version, -(2**62), 2**62)
        return [self._stats(deployment, version, chosen[s], s, s) for s in sorted(chosen)]

    def prediction_sample(
        self, deployment: str, version: int | None = None, *, seconds: float, at: float | None = None
    ) -> list[float]:
        """The predicted values kept in the windows :meth:`last` would merge, for prediction drift.

        Every finite value while a window holds at most ``max_samples`` of them; a uniform sample of each
        fuller window otherwise.

        Args:
            deployment: The deployment.
            version: The model version, or None for every version.
            seconds: How far back to look; more than 0.
            at: Seconds since the epoch; now when None.

        Returns:
            The values, oldest window first.

        Raises:
            ValueError: When ``seconds`` is not positive.
        """
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        end = time.time() if at is None else at
        chosen = self._select(deployment, version, self.window_start(end - seconds), self.window_start(end))
        return [v for s in sorted(chosen) for w in chosen[s] for v in w.predictions.values]


__all__ = ["METRICS", "PERCENTILES", "ServingWindows", "WindowStats"]
