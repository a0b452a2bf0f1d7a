"""What the monitor's windows hold per deployment version, at a given log rate (issue 19).

Feeds ``LiveData`` (the monitor's in-memory windows, :mod:`lepton_monitor.live`) ``--rates`` logs a minute
(60,000 and 300,000: 1,000 and 5,000 a second) shaped as the serving model makes them (one row of 10
features, one prediction, a log id of the instance's prefix and counter, a request id of its own) for
``--minutes`` one-minute windows, and measures the Python heap it holds (``tracemalloc``) per window.
Beside it, in the same run, the same logs into windows that keep every log id in a set (the monitor
before it kept runs of ids): the baseline. Settings are the monitor's defaults (``max_samples`` 10,000,
``drift_rows_per_window`` 2,000).

``.venv/bin/python bench/load/monitor_memory.py`` (about two minutes). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import tracemalloc
import uuid

from lepton_monitor import live as monitor_live
from lepton_monitor.settings import MonitorSettings

FEATURES = [f"f{i}" for i in range(10)]
#: What every log shares: a deployment version, one row of 10 features and its prediction.
BASE = dict(
    tenant="t",
    deployment="d",
    model_name="m",
    version=1,
    trace_id="",
    batch_rows=1,
    latency_ms=1.0,
    error="",
    feature_names=FEATURES,
    rows=[[0.1 * j for j in range(10)]],
    outputs=[1.5],
)


@dataclasses.dataclass
class _SetWindow:
    """The window as it was: every counted log id in a set."""

    start: int
    sample: object
    log_ids: set[str] = dataclasses.field(default_factory=set)
    requests: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def per_window_mib(rate: int, minutes: int, *, baseline: bool) -> float:
    """MiB of heap the windows hold after ``minutes`` full windows, divided by ``minutes``."""
    settings = MonitorSettings()
    original = monitor_live._LiveWindow
    if baseline:
        monitor_live._LiveWindow = _SetWindow  # type: ignore[misc,assignment]
    try:
        data = monitor_live.LiveData(
            width_seconds=60,
            retention=minutes,
            max_samples=settings.max_samples,
            rows_per_window=settings.drift_rows_per_window,
        )
        prefix = uuid.uuid4().hex[:16]
        tracemalloc.start()
        n = 0
        for minute in range(minutes):
            for k in range(rate):
                log_id = f"{prefix}{n:016x}"
                n += 1
                data.add(
                    monitor_live.LogEntry(
                        **BASE, log_id=log_id, request_id=uuid.uuid4().hex, time=minute * 60 + 60 * k / rate
                    )
                )
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return held / 2**20 / minutes
    finally:
        monitor_live._LiveWindow = original  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="60000,300000", help="logs a minute, comma-separated")
    parser.add_argument("--minutes", type=int, default=2)
    args = parser.parse_args()
    print("| logs a minute | runs of ids: MiB a window | set of ids (baseline): MiB a window | ratio |")
    print("|---|---|---|---|")
    for rate in (int(r) for r in args.rates.split(",")):
        ours = per_window_mib(rate, args.minutes, baseline=False)
        base = per_window_mib(rate, args.minutes, baseline=True)
        print(f"| {rate:,} | {ours:.1f} | {base:.1f} | {ours / base:.2f}x |")


if __name__ == "__main__":
    main()
