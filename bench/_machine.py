"""What every benchmark records about the machine it ran on, and CPU time by process group.

``machine_info`` goes into each script's JSON; ``cpu_seconds_by_group`` reads ``/proc`` to
tell how much CPU each started process group (a server and its children) used.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


def version(dist: str) -> str:
    """The installed version of ``dist``, or ``?``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def machine_info(packages: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """CPUs, load, Python, the platform, the versions of ``packages``, and ``extra``."""
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        **extra,
        "packages": {d: version(d) for d in packages},
    }


def processes() -> Iterator[tuple[int, list[str]]]:
    """Every live process: its pid and the fields of ``/proc/<pid>/stat`` after the name
    (``[0]`` state, ``[1]`` parent, ``[2]`` process group, ``[11]``/``[12]`` utime/stime ticks)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue


def cpu_seconds_by_group() -> dict[int, float]:
    """User + system CPU seconds of every live process, summed by process group id."""
    tick = os.sysconf("SC_CLK_TCK")
    ticks: dict[int, int] = {}
    for _, fields in processes():
        pgrp = int(fields[2])
        ticks[pgrp] = ticks.get(pgrp, 0) + int(fields[11]) + int(fields[12])
    return {g: t / tick for g, t in ticks.items()}


def settle(pgids: set[int], idle_cores: float, window_s: float, timeout_s: float) -> float:
    """Waits (at most ``timeout_s``) until the process groups ``pgids`` together use under ``idle_cores``
    over ``window_s``; returns the seconds waited. Each process the platform starts leads its own group,
    its children in it (Triton's stubs, a trainer's fit process), so what one step left running (the
    monitor reading prediction logs, a rollout) is done before the next is timed."""

    def cpu_s() -> float:
        return sum(s for g, s in cpu_seconds_by_group().items() if g in pgids)

    t0 = time.perf_counter()
    before = cpu_s()
    while time.perf_counter() - t0 < timeout_s:
        time.sleep(window_s)
        after = cpu_s()
        if (after - before) / window_s < idle_cores:
            break
        before = after
    return time.perf_counter() - t0


def run_and_report(
    run: Callable[[Path], None], workdir: Path | None, prefix: str, report: dict[str, Any], path: Path, started: float
) -> None:
    """Runs ``run`` in ``workdir`` (kept, for its logs) or in a temporary directory removed after, then writes
    ``report`` as JSON to ``path`` with the whole run's seconds (``elapsed_s``, from ``started``)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        run(workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            run(Path(tmp))
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
