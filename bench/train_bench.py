"""Platform training against a direct scikit-learn fit of the same rows, in the same run.

Starts one nats-server, one data service and one trainer (real processes), uploads a
seeded 100,000-row regression dataset once, then for each algorithm times, in
alternating order, ``REPS`` pairs of:

* platform: ``SubmitTraining`` over gRPC until ``WatchTrainingJob`` reports SUCCEEDED
  (the whole path: request validation against the data service, the JOBS queue, the
  dataset fetched from the object store, the fit process, packing, the artifact stored);
* direct: ``pl.read_parquet`` of the same file into numpy, ``holdout_split`` as the
  trainer does, and ``fit`` of the catalogue's identical estimator (same parameters and
  ``random_state``) on the same training rows.

The issue's target is platform <= 1.2 x direct + 1 s (median of the reps). It is
reported (PASS/MISS), never asserted: the exit code is 0 either way. The platform time
is broken down from the outside: the job record's timestamps (created, started,
finished) and the moment each stage change ("fitting", "packing") reaches the client.
One untimed platform job and one untimed small direct fit per algorithm run first;
before every timed run the benchmark waits until the trainer's pre-started fit process
has finished importing (its CPU time stops moving), so no run pays another's warm-up.

Run with ``.venv/bin/python bench/train_bench.py``; writes ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _machine
import numpy as np
import numpy.typing as npt
import polars as pl
from _table import render
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core.bus import ObjectStore, connect
from lepton_core.nats_identity import ADMIN
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_from_pb
from lepton_ml import artifacts, splits
from lepton_ml.signing import Signer, TrustedKeys
from lepton_platform.embedded import grpc_serving
from lepton_platform.nats_users import BootstrapKey, write_keys
from lepton_platform.processes import NatsServer, Process, free_port, start_service, wait_until
from lepton_platform.signing_keys import ensure_artifact_keys
from lepton_trainer.catalogue import algorithm

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
ROWS = 100_000
FEATURES = 20
DATA_SEED = 20240
SPLIT_SEED = 42
TEST_FRACTION = 0.2
MODEL_SEED = 7
TARGET = "target"
REPS = 3
#: The issue's budget: platform <= RATIO_BUDGET x direct + FIXED_BUDGET_S.
RATIO_BUDGET = 1.2
FIXED_BUDGET_S = 1.0
JOB_TIMEOUT_S = 600.0
UPLOAD_CHUNK = 1024 * 1024
ALGORITHMS: tuple[tuple[str, dict[str, str]], ...] = (
    ("linear_regression", {}),
    ("random_forest_regressor", {"n_estimators": "20"}),
    ("gradient_boosting_regressor", {"max_iter": "100"}),
)
DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
#: Segments of a platform run, in order; they add up to its wall time.
SEGMENTS = ("submit", "queue", "load", "fit", "pack_store", "notify")
SEGMENT_HELP = {
    "submit": "client call -> job record created (SubmitTraining: data-service lookup, validation)",
    "queue": "record created -> worker started it (publish, JOBS queue, pull, started transition)",
    "load": "started -> 'fitting' seen (dataset from object store, temp files, fit process reads Parquet)",
    "fit": "'fitting' seen -> 'packing' seen (estimator.fit in the fit process)",
    "pack_store": "'packing' seen -> finished (skops pack, artifact file, artifact put, record update)",
    "notify": "finished -> client sees SUCCEEDED (KV watch to WatchTrainingJob stream)",
}


# --- data ----------------------------------------------------------------------------------------------


def make_dataset(path: Path) -> int:
    """A seeded regression table: FEATURES float columns and a target with some non-linearity."""
    rng = np.random.default_rng(DATA_SEED)
    x = rng.standard_normal((ROWS, FEATURES))
    coef = rng.uniform(-3.0, 3.0, FEATURES)
    y = x @ coef + 2.0 * np.sin(x[:, 0] * 2.0) + x[:, 1] * x[:, 2] + rng.standard_normal(ROWS) * 0.5
    columns: dict[str, npt.NDArray[np.float64]] = {f"f{i:02d}": x[:, i] for i in range(FEATURES)}
    columns[TARGET] = y
    pl.DataFrame(columns).write_parquet(path)
    return path.stat().st_size


def upload_parts(data: bytes, name: str) -> AsyncIterator[data_pb2.UploadDatasetRequest]:
    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="parquet"))
        for start in range(0, len(data), UPLOAD_CHUNK):
            yield data_pb2.UploadDatasetRequest(chunk=data[start : start + UPLOAD_CHUNK])

    return parts()


# --- the direct path -------------------------------------------------------------------------------------


@dataclass
class DirectRun:
    total_s: float
    read_s: float
    fit_s: float
    model: Any = field(repr=False, default=None)


def direct_fit(path: Path, name: str, params: Mapping[str, str], rows: int | None = None) -> DirectRun:
    """What a user does without the platform: read the Parquet, split as the trainer does, fit."""
    t0 = time.perf_counter()
    frame = pl.read_parquet(path)
    if rows is not None:
        frame = frame.head(rows)
    features = [c for c in frame.columns if c != TARGET]
    x = frame.select(features).to_numpy().astype(np.float64)
    y = frame[TARGET].to_numpy().astype(np.float64)
    train, _ = splits.holdout_split(len(x), SPLIT_SEED, TEST_FRACTION)
    t1 = time.perf_counter()
    estimator, _ = algorithm(name).make(params, seed=MODEL_SEED)
    estimator.fit(x[train], y[train])
    t2 = time.perf_counter()
    return DirectRun(total_s=t2 - t0, read_s=t1 - t0, fit_s=t2 - t1, model=estimator)


# --- the platform path -----------------------------------------------------------------------------------


@dataclass
class PlatformRun:
    job_id: str
    total_s: float
    segments: dict[str, float]
    artifact: Any = field(repr=False, default=None)


def epoch_s(stamp: Timestamp) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


async def platform_fit(
    trainer: trainer_pb2_grpc.TrainingServiceStub, version_id: str, name: str, params: Mapping[str, str]
) -> PlatformRun:
    """Submits one job and follows it to the end; wall-clock marks give the breakdown."""
    t0 = time.perf_counter()
    w0 = time.time()
    job: trainer_pb2.TrainingJob = await trainer.SubmitTraining(
        trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=version_id,
            algorithm=name,
            target=TARGET,
            params=dict(params),
            model_name=f"bench-{name.replace('_', '-')}",
            split_seed=SPLIT_SEED,
            test_fraction=TEST_FRACTION,
            seed=MODEL_SEED,
        ),
        timeout=60,
    )
    seen: dict[str, float] = {}
    final: trainer_pb2.TrainingJob | None = None
    request = trainer_pb2.GetTrainingJobRequest(job_id=job.job_id)
    async for update in trainer.WatchTrainingJob(request, timeout=JOB_TIMEOUT_S):
        seen.setdefault(update.stage, time.time())
        if update.state in DONE:
            final = update
            break
    if final is None:  # the stream ended early: ask once more
        final = await trainer.GetTrainingJob(request, timeout=30)
    w_end = time.time()
    total = time.perf_counter() - t0
    if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ({name}) ended {final.state}: {final.error}")
    created, started, finished = (epoch_s(final.created_at), epoch_s(final.started_at), epoch_s(final.finished_at))
    fitting = seen.get("fitting", started)
    packing = seen.get("packing", fitting)
    marks = [w0, created, started, max(fitting, started), max(packing, fitting), finished, w_end]
    segments = {s: b - a for s, (a, b) in zip(SEGMENTS, itertools.pairwise(marks), strict=True)}
    return PlatformRun(job_id=job.job_id, total_s=total, segments=segments, artifact=final.artifact)


# --- the processes -----------------------------------------------------------------------------------------


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (every /proc entry whose parent it is; zombies left out)."""
    return [child for child, fields in _machine.processes() if int(fields[1]) == pid and fields[0] != "Z"]


def wait_fit_processes_idle(trainer_pid: int, timeout: float = 60.0) -> tuple[float, list[int]]:
    """Waits until the trainer's fit process(es) are idle: imports done, waiting on stdin.

    Whether the trainer keeps one fit process or starts a spare per job, nothing timed
    should start while one is still importing. Returns (seconds waited, the pids seen).
    """
    t0 = time.monotonic()
    last: dict[int, int] = {}
    quiet = 0
    while time.monotonic() - t0 < timeout:
        try:
            ticks = {c: _cpu_ticks(c) for c in _children(trainer_pid)}
        except OSError:
            ticks = {}
        if ticks and ticks == last:
            quiet += 1
            if quiet >= 2:
                return time.monotonic() - t0, sorted(ticks)
        else:
            quiet = 0
        last = ticks
        time.sleep(0.2)
    print(f"  (the trainer's fit processes were not idle after {timeout:.0f} s; timing anyway)", flush=True)
    return time.monotonic() - t0, sorted(last)


class Stack:
    """nats-server, one data service and one trainer (API and worker), stopped in stop()."""

    def __init__(self, workdir: Path) -> None:
        self.api_key = secrets.token_urlsafe(16)
        self.tenant = "bench" + uuid.uuid4().hex[:6]
        self.logs = workdir / "logs"
        self.processes: list[Process] = []
        self.nats: NatsServer | None = NatsServer(workdir / "nats")
        self.artifact_keys = ensure_artifact_keys(workdir / "secrets")  # the trainer signs, as under lepton up
        self.data_url = self._start("data", {"max_upload_bytes": str(1024**3)})
        self.trainer_url = self._start("trainer", {"data_url": self.data_url, "worker_id": "bench-worker"})
        self.trainer_pid = self.processes[-1].pid

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    def _start(self, service: str, extra: dict[str, str]) -> str:
        port = free_port()
        server = NatsServer.running[self.nats_url]
        write_keys(self.nats_url, server.seed_file(ADMIN), [BootstrapKey(self.api_key, self.tenant)])
        values = {
            "nats_url": self.nats_url,
            "nats_nkey_seed_file": str(server.seed_file(service)),
            "grpc_port": str(port),
            "service_keys": server.secrets.service_keys(),
            "log_level": "WARNING",
            **self.artifact_keys.settings(service),
            **extra,
        }
        process = start_service(service, values, self.logs)
        self.processes.append(process)
        address = f"127.0.0.1:{port}"
        wait_until(lambda: grpc_serving(address), 90, f"{service} service", process.proc)
        return address

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            process.stop()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None

    def tails(self) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path})\n{p.tail(20)}" for p in self.processes)


# --- results --------------------------------------------------------------------------------------------


@dataclass
class AlgoResult:
    algorithm: str
    params: dict[str, str]
    platform_s: list[float]
    direct_s: list[float]
    platform_segments: list[dict[str, float]]
    direct_read_s: list[float]
    direct_fit_s: list[float]
    #: Untimed wait before each platform run for the fit process(es) to be idle.
    ready_wait_s: list[float]
    #: The trainer's fit-process pids before each platform run (the same pid: one reused process).
    fit_process_pids: list[list[int]]
    #: 1-minute load average after each rep: the host is shared, so this shows the noise.
    loadavg_1m: list[float] = field(default_factory=list)
    predictions_match: bool | None = None
    max_abs_prediction_diff: float | None = None
    #: Size of the stored artifact, and artifacts.pack of the direct model here (untimed
    #: diagnostics: how much of pack_store is packing rather than storing).
    artifact_bytes: int = 0
    local_pack_s: float = 0.0

    @property
    def platform_median_s(self) -> float:
        return statistics.median(self.platform_s)

    @property
    def direct_median_s(self) -> float:
        return statistics.median(self.direct_s)

    @property
    def ratio(self) -> float:
        return self.platform_median_s / self.direct_median_s

    @property
    def overhead_s(self) -> float:
        return self.platform_median_s - self.direct_median_s

    @property
    def budget_s(self) -> float:
        return RATIO_BUDGET * self.direct_median_s + FIXED_BUDGET_S

    @property
    def met(self) -> bool:
        return self.platform_median_s <= self.budget_s

    @property
    def paired_ratios(self) -> list[float]:
        return [p / d for p, d in zip(self.platform_s, self.direct_s, strict=True)]

    def segment_medians(self) -> dict[str, float]:
        return {s: statistics.median(run[s] for run in self.platform_segments) for s in SEGMENTS}

    def summary(self) -> dict[str, Any]:
        paired = self.paired_ratios
        return {
            **asdict(self),
            "platform_median_s": self.platform_median_s,
            "direct_median_s": self.direct_median_s,
            "ratio": self.ratio,
            "paired_ratio_min": min(paired),
            "paired_ratio_max": max(paired),
            "overhead_s": self.overhead_s,
            "budget_s": self.budget_s,
            "target_met": self.met,
            "platform_segment_medians_s": self.segment_medians(),
            "direct_read_median_s": statistics.median(self.direct_read_s),
            "direct_fit_median_s": statistics.median(self.direct_fit_s),
        }


#: Package versions recorded with the results.
PACKAGES = ("scikit-learn", "numpy", "polars", "skops", "nats-py", "grpcio")


def machine_info() -> dict[str, Any]:
    return _machine.machine_info(PACKAGES)


def source_info() -> dict[str, Any]:
    """The commit measured and the paths around training that differ from it (a dirty tree
    measures the working copy, which is what ran)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)
            return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    paths = ("services/trainer/src", "services/data/src", "libs/lepton-core/src")
    dirty = git("status", "--porcelain", "--", *paths).splitlines()
    return {"commit": git("rev-parse", "HEAD") or "?", "uncommitted": [line[3:] for line in dirty]}


def table(results: list[AlgoResult]) -> str:
    header = ("algorithm", "platform", "direct", "ratio", "paired", "overhead", "budget", "target")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        paired = r.paired_ratios
        rows.append(
            (
                r.algorithm,
                f"{r.platform_median_s:.2f} s",
                f"{r.direct_median_s:.2f} s",
                f"{r.ratio:.2f}x",
                f"{min(paired):.2f}-{max(paired):.2f}",
                f"{r.overhead_s:+.2f} s",
                f"{r.budget_s:.2f} s",
                "PASS" if r.met else "MISS",
            )
        )
    return render(rows)


def breakdown(results: list[AlgoResult]) -> str:
    header = ("algorithm", *SEGMENTS, "direct read", "direct fit")
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        med = r.segment_medians()
        rows.append(
            (
                r.algorithm,
                *(f"{med[s]:.2f}" for s in SEGMENTS),
                f"{statistics.median(r.direct_read_s):.2f}",
                f"{statistics.median(r.direct_fit_s):.2f}",
            )
        )
    return render(rows)


# --- run -------------------------------------------------------------------------------------------------


async def compare_models(
    nats_url: str, run: PlatformRun, direct: DirectRun, path: Path, trusted: TrustedKeys
) -> tuple[bool, float]:
    """Whether the platform's artifact predicts what the direct model predicts on held-out rows."""
    nc = await connect(nats_url, "lepton-train-bench", seed_file=str(NatsServer.running[nats_url].seed_file("admin")))
    try:
        signed = await ObjectStore(nc.jetstream()).get(ref_from_pb(run.artifact))
        model, _ = artifacts.unpack(signed, trusted)
    finally:
        # Closing fires the connection's "disconnected; reconnecting" warning: not news here.
        logging.getLogger("lepton_core.bus").setLevel(logging.ERROR)
        await nc.close()
    frame = pl.read_parquet(path)
    x = frame.select([c for c in frame.columns if c != TARGET]).to_numpy().astype(np.float64)
    _, test = splits.holdout_split(len(x), SPLIT_SEED, TEST_FRACTION)
    diff = float(np.max(np.abs(model.predict(x[test]) - direct.model.predict(x[test]))))
    return diff <= 1e-9, diff


def local_pack_s(name: str, model: Any, features: list[str]) -> float:
    """Seconds artifacts.pack takes here for the direct model, signed as the trainer signs it."""
    signature = artifacts.Signature(
        features=features,
        target=TARGET,
        task=algorithm(name).task,
        algorithm=name,
        libraries=artifacts.library_versions(),
    )
    signer = Signer.generate()
    t0 = time.perf_counter()
    artifacts.seal(artifacts.pack(model, signature), signer)
    return time.perf_counter() - t0


async def bench(stack: Stack, path: Path, reps: int, algorithms: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    data = path.read_bytes()
    async with (
        client_channel(stack.data_url, stack.api_key) as dch,
        client_channel(stack.trainer_url, stack.api_key) as tch,
    ):
        data_stub = data_pb2_grpc.DataServiceStub(dch)
        trainer = trainer_pb2_grpc.TrainingServiceStub(tch)
        t0 = time.perf_counter()
        version = await data_stub.UploadDataset(upload_parts(data, "train-bench"), timeout=300)
        upload_s = time.perf_counter() - t0
        print(f"uploaded {version.row_count:,} rows ({len(data) / 1e6:.1f} MB Parquet) in {upload_s:.2f} s", flush=True)

        # Warm-up: one untimed job submitted as soon as the data is in (no wait for the
        # trainer's pre-started fit process), and a small untimed direct fit per algorithm.
        warm = await platform_fit(trainer, version.version_id, "linear_regression", {})
        print(
            f"warm-up platform job (linear_regression, untimed): {warm.total_s:.2f} s  "
            + "  ".join(f"{s}={v:.2f}" for s, v in warm.segments.items()),
            flush=True,
        )
        for name, params in algorithms:
            direct_fit(path, name, params, rows=5_000)

        results: list[AlgoResult] = []
        for name, params in algorithms:
            r = AlgoResult(name, dict(params), [], [], [], [], [], [], [])
            last_platform: PlatformRun | None = None
            last_direct: DirectRun | None = None
            for rep in range(reps):
                order = ["platform", "direct"] if rep % 2 == 0 else ["direct", "platform"]
                for which in order:
                    waited, pids = wait_fit_processes_idle(stack.trainer_pid)
                    gc.collect()
                    if which == "platform":
                        r.ready_wait_s.append(waited)
                        r.fit_process_pids.append(pids)
                        last_platform = await platform_fit(trainer, version.version_id, name, params)
                        r.platform_s.append(last_platform.total_s)
                        r.platform_segments.append(last_platform.segments)
                    else:
                        last_direct = direct_fit(path, name, params)
                        r.direct_s.append(last_direct.total_s)
                        r.direct_read_s.append(last_direct.read_s)
                        r.direct_fit_s.append(last_direct.fit_s)
                r.loadavg_1m.append(os.getloadavg()[0])
                print(
                    f"  {name} rep {rep + 1}/{reps}: platform {r.platform_s[-1]:.2f} s, "
                    f"direct {r.direct_s[-1]:.2f} s  (load {r.loadavg_1m[-1]:.2f})",
                    flush=True,
                )
            assert last_platform is not None and last_direct is not None
            r.predictions_match, r.max_abs_prediction_diff = await compare_models(
                stack.nats_url, last_platform, last_direct, path, stack.artifact_keys.trusted()
            )
            r.artifact_bytes = int(last_platform.artifact.size)
            r.local_pack_s = local_pack_s(name, last_direct.model, [f"f{i:02d}" for i in range(FEATURES)])
            results.append(r)
    return {
        "upload_s": upload_s,
        "dataset_bytes": len(data),
        "warmup_job": {"algorithm": "linear_regression", "total_s": warm.total_s, "segments_s": warm.segments},
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Platform training vs a direct scikit-learn fit, same data.")
    parser.add_argument("--reps", type=int, default=REPS, help=f"timed pairs per algorithm (default {REPS})")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="algorithm names to run (default: " + ", ".join(a for a, _ in ALGORITHMS),
    )
    args = parser.parse_args(argv)
    algorithms = [(n, p) for n, p in ALGORITHMS if args.only is None or n in args.only]
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = machine_info()
    print(
        f"Lepton train bench  {stamp}  cpus={info['cpu_count']}  python={info['python']}  "
        f"load={info['loadavg_at_start'][0]:.2f}"
    )
    print(
        f"{ROWS:,} rows x {FEATURES} float features, {args.reps} timed pairs per "
        f"algorithm, medians; target: platform <= {RATIO_BUDGET} x direct + {FIXED_BUDGET_S:.0f} s\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="lepton-train-bench-") as tmp:
        workdir = Path(tmp)
        path = workdir / "train.parquet"
        make_dataset(path)
        stack: Stack | None = None
        try:
            stack = Stack(workdir)
            outcome = asyncio.run(bench(stack, path, args.reps, algorithms))
        except BaseException:
            if stack is not None:
                print(stack.tails(), file=sys.stderr)
            raise
        finally:
            if stack is not None:
                stack.stop()
    results: list[AlgoResult] = outcome["results"]
    print("\nplatform = SubmitTraining until SUCCEEDED; direct = read Parquet + split + fit; medians")
    print(table(results))
    print("\nwhere the platform time goes (medians, s):")
    print(breakdown(results))
    for s in SEGMENTS:
        print(f"  {s}: {SEGMENT_HELP[s]}")
    for r in results:
        match = "identical" if r.predictions_match else f"DIFFER (max |diff| {r.max_abs_prediction_diff:.3g})"
        print(
            f"  {r.algorithm}: predictions {match}; artifact {r.artifact_bytes / 1e6:.1f} MB, "
            f"artifacts.pack here {r.local_pack_s:.2f} s; untimed wait for an idle fit process "
            f"{max(r.ready_wait_s):.2f} s at most; fit-process pids {r.fit_process_pids}"
        )
    elapsed = time.perf_counter() - started
    report = {
        "timestamp": stamp,
        "elapsed_s": round(elapsed, 2),
        "rows": ROWS,
        "features": FEATURES,
        "reps": args.reps,
        "budget": {"ratio": RATIO_BUDGET, "fixed_s": FIXED_BUDGET_S},
        "machine": {**info, "loadavg_at_end": list(os.getloadavg())},
        "source": source_info(),
        "upload_s": outcome["upload_s"],
        "dataset_bytes": outcome["dataset_bytes"],
        "warmup_job": outcome["warmup_job"],
        "segments_help": SEGMENT_HELP,
        "benchmarks": [r.summary() for r in results],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{elapsed:.1f} s in all; raw numbers in {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
