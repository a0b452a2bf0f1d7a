"""Windowed serving statistics: epoch-aligned windows, exact percentiles against numpy, retention."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lepton_monitor.windows import METRICS, ServingWindows

T0 = 1_700_000_040  # a multiple of 60


def test_windows_align_to_the_epoch() -> None:
    w = ServingWindows(width_seconds=60)
    assert (w.window_start(T0), w.window_start(T0 + 59.999), w.window_start(T0 + 60)) == (T0, T0, T0 + 60)
    assert w.window_start(-1.0) == -60
    w.add("d", 1, at=T0 + 59.999)
    w.add("d", 1, at=T0 + 60)
    assert [(h.start, h.end, h.requests) for h in w.history("d", 1)] == [(T0, T0 + 60, 1), (T0 + 60, T0 + 120, 1)]


def test_counts_and_exact_percentiles_in_the_current_window() -> None:
    rng = np.random.default_rng(0)
    latencies = rng.lognormal(3.0, 0.7, 1500)
    errors = rng.random(1500) < 0.1
    rows = rng.integers(1, 20, 1500)
    w = ServingWindows(width_seconds=60, max_samples=2000)
    for k in range(1500):
        w.add("d", 3, at=T0 + k * 0.03, latency_ms=float(latencies[k]), rows=int(rows[k]), error=bool(errors[k]))
    s = w.current("d", 3, at=T0 + 30)
    assert (s.requests, s.errors, s.rows, s.windows) == (1500, int(errors.sum()), int(rows.sum()), 1)
    assert s.error_rate == int(errors.sum()) / 1500
    assert s.latency_exact and s.latency_count == 1500
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms) == (p50, p95, p99)
    assert s.latency_mean_ms == pytest.approx(latencies.mean()) and s.latency_max_ms == latencies.max()
    assert w.current("d", 3, at=T0 + 61).requests == 0  # the next window is empty
    assert w.current("other", at=T0).windows == 0


def test_last_seconds_merges_windows_and_versions_exactly() -> None:
    rng = np.random.default_rng(1)
    w = ServingWindows(width_seconds=60)
    kept: list[tuple[float, int, float, list[float]]] = []
    for _ in range(3000):
        at = T0 + float(rng.uniform(0, 600))  # ten windows
        version = int(rng.integers(1, 3))
        latency = float(rng.gamma(2.0, 10.0))
        predictions = rng.normal(100, 15, 3).tolist()
        w.add("d", version, at=at, latency_ms=latency, predictions=predictions)
        kept.append((at, version, latency, predictions))

    at = T0 + 450.0
    s = w.last("d", 2, seconds=200, at=at)
    # The windows overlapping (at - 200, at]: from the one holding at - 200 to the one holding at.
    lo, hi = w.window_start(at - 200), w.window_start(at)
    chosen = [k for k in kept if k[1] == 2 and lo <= k[0] < hi + 60]
    assert (s.start, s.end, s.windows, s.requests) == (lo, hi + 60, 4, len(chosen))
    assert all(lo <= k[0] for k in chosen) and any(k[0] <= at - 200 for k in chosen)  # up to one width older
    lat = np.array([k[2] for k in chosen])
    assert (s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms) == tuple(np.percentile(lat, [50, 95, 99]))
    preds = np.concatenate([k[3] for k in chosen])
    assert s.prediction_count == preds.size
    assert s.prediction_mean == pytest.approx(preds.mean(), rel=1e-12)
    assert s.prediction_std == pytest.approx(preds.std(ddof=1), rel=1e-9)
    assert (s.prediction_min, s.prediction_max) == (preds.min(), preds.max())
    assert sorted(w.prediction_sample("d", 2, seconds=200, at=at)) == sorted(preds.tolist())

    both = w.last("d", seconds=200, at=at)  # every version merged
    chosen_both = [k for k in kept if lo <= k[0] < hi + 60]
    assert both.version is None and both.requests == len(chosen_both)
    both_lat = np.array([k[2] for k in chosen_both])
    assert both.latency_p99_ms == np.percentile(both_lat, 99)
    assert w.keys() == [("d", 1), ("d", 2)]


def test_history_merges_versions_per_window() -> None:
    w = ServingWindows(width_seconds=10)
    w.add("d", 1, at=5, error=True)
    w.add("d", 2, at=7)
    w.add("d", 2, at=12)
    assert [(h.start, h.requests, h.errors) for h in w.history("d")] == [(0, 2, 1), (10, 1, 0)]
    assert [(h.start, h.requests) for h in w.history("d", 2)] == [(0, 1), (10, 1)]


def test_retention_drops_old_windows_and_refuses_late_ones() -> None:
    w = ServingWindows(width_seconds=60, retention=3)
    for k in range(6):
        assert w.add("d", 1, at=T0 + 60 * k + 1, latency_ms=float(k))
    assert [h.start for h in w.history("d", 1)] == [T0 + 120, T0 + 180, T0 + 240, T0 + 300][1:]
    assert not w.add("d", 1, at=T0 + 1)  # its window was dropped: not reopened
    assert w.late_dropped == 1
    assert w.add("d", 1, at=T0 + 180)  # still retained
    assert w.last("d", 1, seconds=3600, at=T0 + 301).requests == 4
    # Retention is per (deployment, version): another version keeps its own windows.
    assert w.add("d", 2, at=T0 + 1)
    w.forget("d", 1)
    assert w.keys() == [("d", 2)]


def test_above_the_bound_percentiles_are_estimates_and_deterministic() -> None:
    rng = np.random.default_rng(2)
    latencies = rng.exponential(20.0, 5000)

    def fill() -> ServingWindows:
        w = ServingWindows(width_seconds=60, max_samples=500)
        for k, value in enumerate(latencies):
            w.add("d", 1, at=T0 + (k % 120), latency_ms=float(value))  # two windows of 2500
        return w

    a, b = fill(), fill()
    s = a.last("d", 1, seconds=120, at=T0 + 119)
    assert not s.latency_exact and s.latency_count == 5000
    assert s.latency_mean_ms == pytest.approx(latencies.mean()) and s.latency_max_ms == latencies.max()
    for got, q in [(s.latency_p50_ms, 50), (s.latency_p95_ms, 95)]:
        assert got == pytest.approx(np.percentile(latencies, q), rel=0.2)
    assert s == b.last("d", 1, seconds=120, at=T0 + 119)


def test_metrics_and_json() -> None:
    w = ServingWindows()
    w.add("d", 1, at=T0, latency_ms=12.5, error=True, predictions=[1.0, float("nan"), 3.0])
    s = w.current("d", 1, at=T0)
    assert s.metric("error_rate") == 1.0 and s.metric("latency_p99_ms") == 12.5
    assert (s.prediction_count, s.prediction_dropped) == (2, 1)
    assert s.prediction_std == pytest.approx(np.std([1, 3], ddof=1))
    assert set(METRICS) <= set(s.model_dump())
    assert json.loads(s.model_dump_json())["requests"] == 1
    empty = w.current("d", 1, at=T0 + 600)
    assert empty.metric("error_rate") is None and empty.metric("latency_p95_ms") is None
    with pytest.raises(ValueError, match="unknown metric 'latency'"):
        s.metric("latency")


def test_bad_inputs() -> None:
    w = ServingWindows()
    with pytest.raises(ValueError, match="latency_ms"):
        w.add("d", 1, at=T0, latency_ms=-1.0)
    with pytest.raises(ValueError, match="latency_ms"):
        w.add("d", 1, at=T0, latency_ms=float("nan"))
    with pytest.raises(ValueError, match="rows"):
        w.add("d", 1, at=T0, rows=-2)
    with pytest.raises(ValueError, match="at must be"):
        w.add("d", 1, at=float("inf"))
    with pytest.raises(ValueError, match="seconds"):
        w.last("d", seconds=0, at=T0)
    with pytest.raises(ValueError, match="width_seconds"):
        ServingWindows(width_seconds=0)
