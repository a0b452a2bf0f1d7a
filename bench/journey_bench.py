"""The user journey: CSV on disk to a first served prediction, through the SDK against MLflow.

One journey is CSV on disk → dataset version → trained → evaluated → registered →
deployed → first prediction returned, for scikit-learn's ``LinearRegression`` on the
diabetes data (``examples/data/diabetes.csv``, 442 rows, target ``target``). Each stage
gets a wall clock (``time.perf_counter``):

* **ours**, through the SDK (``lepton_ai``) on the running ``EmbeddedPlatform`` (NATS,
  Triton, the six services; its start is not timed, as the journey is "on the running
  platform"): ``client.datasets.upload(csv)``; ``la.models.LinearRegression().fit(dataset,
  target="target", model_name=...)``, which returns once the version is registered (the
  platform trains, evaluates and registers by events); ``client.deployments.deploy(name,
  model, version, wait=True)``; ``client.deployments.predict(name, rows)``. ``fit`` is split
  into train / evaluate / register by the arrival of the job's ``training.completed`` and
  ``evaluation.completed`` events, which the bench watches on NATS beside the journey.
* **MLflow** 3.17.2 (``.venv-mlflow``), the same journey the MLflow way, run by
  ``bench/journey_mlflow.py`` in one long-lived process of that venv with a sqlite
  tracking store (its import and store creation are not timed either): ``read_csv`` +
  ``log_input``; ``fit``; held-out metrics; ``log_model`` with explicit pip requirements,
  ``register_model``, an alias; ``mlflow models serve --env-manager local`` until
  ``/ping`` answers; the first ``POST /invocations``.

Both fit the same rows (the platform's held-out split, seed 42, 20% held out: the MLflow
side reproduces it and the bench checks the rows' digest), and the bench checks that
both first predictions agree to 1e-6, and both held-out r2 to 1e-6. Each side runs
``--runs`` journeys with fresh names, taking turns at going first; medians, every run and
the ratio ours / MLflow per stage are printed and written to ``--json``. After each
journey (untimed) its deployment is deleted, as MLflow's server is stopped.

By default the platform's deployer runs with ``auto_deploy`` off, so the deploy stage is
the SDK's ``deploy`` call, as in the issue; ``--deploy auto`` keeps the platform's default
(the deployer deploys each new model by itself) and the stage waits for it with
``model.wait_deployed()``. Nothing is asserted: the target (ours ≤ 0.5x MLflow's total)
prints PASS/MISS. Run with ``make bench-journey`` (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import _machine
import nats
import numpy as np
import polars as pl
import tritonclient.grpc as triton_grpc
from _table import render
from lepton.deployer.v1 import deployer_pb2
from nats.aio.msg import Msg

import lepton_ai as la
from lepton_core import events
from lepton_ml import splits
from lepton_platform.embedded import EmbeddedPlatform

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MLFLOW_VENV = ROOT / ".venv-mlflow"
MLFLOW_SCRIPT = BENCH / "journey_mlflow.py"
DEFAULT_CSV = ROOT / "examples" / "data" / "diabetes.csv"
DEFAULT_JSON = BENCH / "results" / "journey-latest.json"
TARGET = "target"
TENANT = "default"  # EmbeddedPlatform's tenant for its API key
#: The trainer's defaults (SubmitTrainingRequest leaves both unset); checked on every job.
SPLIT_SEED = 42
TEST_FRACTION = 0.2
#: The rows both deployments are asked about.
PREDICT_ROWS = [0, 1, 2, 3, 4]
TOLERANCE = 1e-6
#: Wait between Deploy calls refused with NOT_FOUND (the deployer has not seen the version yet).
DEPLOY_RETRY_S = 0.02
#: Before each journey: wait (at most SETTLE_TIMEOUT_S) until the bench's processes use < SETTLE_IDLE_CORES.
SETTLE_IDLE_CORES = 0.1
SETTLE_WINDOW_S = 0.5
SETTLE_TIMEOUT_S = 30.0
STAGES = ("dataset", "train", "evaluate", "register", "deploy", "predict")
TARGET_RATIO = 0.5
MLFLOW_TIMEOUT_S = 600.0
#: Telemetry off for MLflow (the machine has no route out; a stalled send would be timed).
MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}

WHAT = {
    "dataset": (
        "datasets.upload(csv): DatasetVersion (checks, profile, Parquet, object store)",
        "start_run, pd.read_csv, from_pandas + log_input",
    ),
    "train": (
        "fit(): submit → training.completed event (queue, fit process, artifact stored)",
        "LinearRegression.fit on the training rows, log_params",
    ),
    "evaluate": (
        "training.completed → evaluation.completed (held-out metrics, bootstrap CI, plots)",
        "held-out predictions, log_metrics (r2, rmse, mae)",
    ),
    "register": (
        "evaluation.completed → fit() returns the registered version",
        "log_model (pip_requirements, signature), register_model, alias",
    ),
    "deploy": (
        "deployments.deploy(wait=True): Triton load until READY",
        "mlflow models serve --env-manager local until /ping is 200",
    ),
    "predict": ("deployments.predict(name, 5 rows), the first call", "the first POST /invocations, 5 rows"),
}


# --- the platform's events, as they arrive ---------------------------------------------------------------


class EventClock:
    """Notes when each of the tenant's events arrives (core NATS), on its own thread and loop.

    Core NATS sees an event as JetStream stores it, so an arrival is when the platform
    published that step's result; the services consume the same message from the stream.
    """

    def __init__(self, nats_url: str, seed_file: Path) -> None:
        self._url = nats_url
        self._seed_file = seed_file
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="event-clock", daemon=True)
        self._lock = threading.Lock()
        #: (perf_counter, training job id, event name)
        self.arrivals: list[tuple[float, str, str]] = []
        self._nc: Any = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(30)

    async def _connect(self) -> None:
        self._nc = await nats.connect(self._url, name="lepton-journey-bench", nkeys_seed=str(self._seed_file))
        await self._nc.subscribe(f"lepton.evt.{TENANT}.>", cb=self._on_event)
        await self._nc.flush()

    async def _on_event(self, msg: Msg) -> None:
        arrived = time.perf_counter()
        try:
            event = events.decode(msg)
        except ValueError:
            return
        lineage = getattr(event.data, "lineage", None)
        job = lineage.training_job_id if lineage is not None else ""
        name = event.type.removeprefix("ai.lepton.").removesuffix(".v1")
        with self._lock:
            self.arrivals.append((arrived, job, name))

    def first(self, job_id: str, name: str, timeout: float = 10.0) -> float:
        """When the job's first ``name`` event arrived; waits a little, as delivery is asynchronous."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for arrived, job, seen in self.arrivals:
                    if job == job_id and seen == name:
                        return arrived
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} event for job {job_id} within {timeout:.0f}s")
            time.sleep(0.01)

    def of_job(self, job_id: str, since: float) -> dict[str, float]:
        """Every event name of the job, seconds after ``since`` (the first of each)."""
        out: dict[str, float] = {}
        with self._lock:
            for arrived, job, name in self.arrivals:
                if job == job_id:
                    out.setdefault(name, round(arrived - since, 4))
        return out

    def stop(self) -> None:
        async def close() -> None:
            if self._nc is not None:
                await self._nc.close()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# --- machine load during a journey ---------------------------------------------------------------------


def cpu_busy_s() -> float:
    """CPU seconds the whole machine spent busy so far (all but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    return (sum(cpu[:8]) - cpu[3] - cpu[4]) / os.sysconf("SC_CLK_TCK")


# --- ours -----------------------------------------------------------------------------------------------


def our_journey(
    client: la.Client,
    clock: EventClock,
    csv: Path,
    rows: pl.DataFrame,
    name: str,
    deploy_mode: str,
) -> dict[str, Any]:
    """One journey through the SDK; returns its stages, predictions and what to check."""
    stages: dict[str, float] = {}
    busy0 = cpu_busy_s()
    started_at = time.time()
    t0 = time.perf_counter()
    dataset = client.datasets.upload(csv, name=name, progress=False)
    t_dataset = time.perf_counter()
    model = la.models.LinearRegression().fit(dataset, target=TARGET, model_name=name, progress=False)
    t_fit = time.perf_counter()
    refused = 0
    if deploy_mode == "explicit":
        # The deployer learns of a version from the registry's event, which it may not have
        # consumed when fit() returns: Deploy then answers NOT_FOUND. A user retries; so do we.
        deadline = time.monotonic() + 60
        while True:
            try:
                deployment = client.deployments.deploy(name, model.model_name, model.version, wait=True)
                break
            except la.NotFound:
                refused += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(DEPLOY_RETRY_S)
        if deployment.state != deployer_pb2.DEPLOYMENT_STATE_READY:
            raise RuntimeError(f"deployment {name} ended {deployment.state}: {deployment.error}")
    elif not model.wait_deployed(300):
        raise RuntimeError(f"the platform did not deploy {name} within 300 s")
    t_deploy = time.perf_counter()
    predictions = client.deployments.predict(name, rows)
    t_predict = time.perf_counter()
    busy = cpu_busy_s() - busy0

    t_trained = clock.first(model.job_id, "training.completed")
    t_evaluated = clock.first(model.job_id, "evaluation.completed")
    stages["dataset"] = t_dataset - t0
    stages["train"] = t_trained - t_dataset
    stages["evaluate"] = t_evaluated - t_trained
    stages["register"] = t_fit - t_evaluated
    stages["deploy"] = t_deploy - t_fit
    stages["predict"] = t_predict - t_deploy
    version = client.models.version(model.model_name, model.version)
    if (version.split_seed, version.test_fraction) != (SPLIT_SEED, TEST_FRACTION):
        raise RuntimeError(
            f"the version was fitted with split seed {version.split_seed}, test fraction {version.test_fraction}; "
            f"the MLflow side uses {SPLIT_SEED}, {TEST_FRACTION}"
        )
    marks = {"dataset returned": round(t_dataset - t0, 4), "fit returned": round(t_fit - t0, 4)}
    marks.update({f"event {k}": v for k, v in clock.of_job(model.job_id, t0).items()})
    marks["deploy returned"] = round(t_deploy - t0, 4)
    return {
        "name": name,
        "started_at": started_at,
        "stages_s": stages,
        "total_s": t_predict - t0,
        "cores_busy": busy / (t_predict - t0),
        "deploy_not_found": refused,
        "marks_s": marks,
        "job_id": model.job_id,
        "model_version": model.version,
        "metrics": dict(model.metrics),
        "predictions": [float(v) for v in predictions],
        "dataset_version_id": dataset.version_id,
    }


def cleanup_ours(client: la.Client, name: str, triton_url: str, control: dict[str, str]) -> None:
    """Untimed: the journey's deployment goes and Triton finishes unloading it (its stub
    process exits), as MLflow's server is stopped, so the next journey does not share the
    CPU with the unload."""
    try:
        deployment = client.deployments.delete(name)
    except la.LeptonError as exc:
        print(f"  (could not delete deployment {name}: {exc})", file=sys.stderr)
        return
    triton = triton_grpc.InferenceServerClient(triton_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            index = triton.get_model_repository_index(headers=control, as_json=True).get("models", [])
            if not any(
                m.get("name") == deployment.triton_model and m.get("state") in ("READY", "LOADING", "UNLOADING")
                for m in index
            ):
                return
            time.sleep(0.05)
        print(f"  (Triton still holds {deployment.triton_model} 60 s after the delete)", file=sys.stderr)
    finally:
        triton.close()


class Settler:
    """Waits until the processes the bench started are idle, before each journey.

    Every process the platform starts leads its own process group (``lepton_platform.processes``),
    its children in it (Triton's stubs, the trainer's fit process); the MLflow worker leads
    one too. A group's CPU is utime + stime over its members in /proc. After a journey the
    platform keeps working for a moment (the monitor consumes the prediction log, the
    evaluator compares versions); the next journey, of either side, must not pay for it.
    """

    def __init__(self, pgids: list[int]) -> None:
        self.pgids = set(pgids)

    def settle(self) -> float:
        """Seconds waited (at most SETTLE_TIMEOUT_S) until the groups use < SETTLE_IDLE_CORES."""
        return _machine.settle(self.pgids, SETTLE_IDLE_CORES, SETTLE_WINDOW_S, SETTLE_TIMEOUT_S)


# --- MLflow ---------------------------------------------------------------------------------------------


class MlflowWorker:
    """``bench/journey_mlflow.py`` in ``.venv-mlflow``: started once, one journey per request."""

    def __init__(self, workdir: Path, csv: Path) -> None:
        python = MLFLOW_VENV / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"{python} is missing: run `make bench-journey` (it creates {MLFLOW_VENV.name})")
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "worker.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                str(python),
                str(MLFLOW_SCRIPT),
                "--workdir",
                str(workdir),
                "--csv",
                str(csv),
                "--target",
                TARGET,
                "--seed",
                str(SPLIT_SEED),
                "--test-fraction",
                str(TEST_FRACTION),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=workdir,
            env={**os.environ, **MLFLOW_ENV},
            start_new_session=True,  # its own process group, for the Settler
        )
        self.ready = self._read("READY ")
        self.ready["process_start_s"] = time.perf_counter() - t0

    def _read(self, prefix: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                found: dict[str, Any] = json.loads(line[len(prefix) :])
                return found
        raise RuntimeError(f"the MLflow worker exited ({self.proc.wait()}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def journey(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"name": name, "rows": PREDICT_ROWS}) + "\n")
        self.proc.stdin.flush()
        result = self._read("RESULT ")
        if "error" in result:
            raise RuntimeError(f"MLflow journey {name}: {result['error']}\n{self.tail()}")
        return result

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def mlflow_journey(worker: MlflowWorker, name: str) -> dict[str, Any]:
    busy0 = cpu_busy_s()
    t0 = time.perf_counter()
    result = worker.journey(name)
    wall = time.perf_counter() - t0
    # The journey ends at the first prediction; the worker then stops the server (untimed).
    result["total_s"] = sum(result["stages_s"].values())
    result["cores_busy"] = (cpu_busy_s() - busy0) / wall
    result["round_trip_s"] = wall
    return result


# --- checks and report ----------------------------------------------------------------------------------


def check(ours: dict[str, Any], theirs: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """The two journeys did the same thing: same training rows, predictions and held-out r2."""
    train_idx, _ = splits.holdout_split(n_rows, SPLIT_SEED, TEST_FRACTION)
    digest = hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes()).hexdigest()
    if theirs["train_rows_sha256"] != digest:
        raise RuntimeError("MLflow's side fitted other rows than the platform's training split")
    served, local = np.asarray(theirs["predictions"]), np.asarray(theirs["in_process"])
    if served.shape != local.shape or np.max(np.abs(served - local)) > TOLERANCE:
        raise RuntimeError(f"MLflow's server predicted {served.tolist()}, its estimator {local.tolist()}")
    a, b = np.asarray(ours["predictions"]), served
    pred_diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
    if pred_diff > TOLERANCE:
        raise RuntimeError(f"first predictions differ by {pred_diff:.3g}: ours {a.tolist()}, MLflow {b.tolist()}")
    r2_diff = abs(ours["metrics"]["r2"] - theirs["metrics"]["r2"])
    if r2_diff > TOLERANCE:
        raise RuntimeError(f"held-out r2 differs: ours {ours['metrics']['r2']}, MLflow {theirs['metrics']['r2']}")
    return {"max_abs_prediction_diff": pred_diff, "r2_abs_diff": r2_diff}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ours = [r["ours"] for r in runs]
    theirs = [r["mlflow"] for r in runs]
    out: dict[str, Any] = {}
    for stage in (*STAGES, "total"):
        a = [r["total_s"] if stage == "total" else r["stages_s"][stage] for r in ours]
        b = [r["total_s"] if stage == "total" else r["stages_s"][stage] for r in theirs]
        per_run = [x / y if y else float("inf") for x, y in zip(a, b, strict=True)]
        out[stage] = {
            "ours_median_s": median(a),
            "mlflow_median_s": median(b),
            "ratio": median(a) / median(b) if median(b) else float("inf"),
            "ours_s": a,
            "mlflow_s": b,
            "paired_ratios": per_run,
        }
    return out


def table(summary: dict[str, Any]) -> str:
    rows = [("stage", "ours s (median)", "MLflow s (median)", "ratio", "paired", "ours per run", "MLflow per run")]
    for stage in (*STAGES, "total"):
        s = summary[stage]
        rows.append(
            (
                stage,
                f"{s['ours_median_s']:.3f}",
                f"{s['mlflow_median_s']:.3f}",
                f"{s['ratio']:.2f}x",
                f"{min(s['paired_ratios']):.2f}-{max(s['paired_ratios']):.2f}",
                " / ".join(f"{v:.2f}" for v in s["ours_s"]),
                " / ".join(f"{v:.2f}" for v in s["mlflow_s"]),
            )
        )
    return str(render(rows)) + "\n(seconds; ratio = ours / MLflow median; paired = min-max of the per-run ratios)"


#: Package versions recorded with the results.
PACKAGES = ("scikit-learn", "numpy", "polars", "grpcio", "tritonclient", "skops")


def machine_info() -> dict[str, Any]:
    return _machine.machine_info(PACKAGES)


def details(runs: list[dict[str, Any]], warmups: list[dict[str, Any]]) -> str:
    lines = []
    for i, r in enumerate(warmups + runs):
        label = f"warm-up {i + 1}" if i < len(warmups) else f"run {i - len(warmups) + 1}"
        o, m = r["ours"], r["mlflow"]
        lines.append(
            f"{label} ({r['first']} first): ours {o['total_s']:.2f} s (cores busy {o['cores_busy']:.2f}), "
            f"MLflow {m['total_s']:.2f} s (cores busy {m['cores_busy']:.2f}); "
            f"Deploy refused NOT_FOUND {o['deploy_not_found']}x; "
            f"|pred diff| {r['check']['max_abs_prediction_diff']:.1e}, |r2 diff| {r['check']['r2_abs_diff']:.1e}"
        )
        lines.append(
            "  ours, seconds since upload began: " + ", ".join(f"{k} {v:.2f}" for k, v in o["marks_s"].items())
        )
        lines.append("  MLflow register: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in m["detail_s"].items()))
    return "\n".join(lines)


def bench(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    csv = args.csv.resolve()
    rows = pl.read_csv(csv)
    n_rows = rows.height
    features = [c for c in rows.columns if c != TARGET]
    predict_rows = rows[PREDICT_ROWS].select(features)

    t0 = time.perf_counter()
    worker = MlflowWorker(workdir / "mlflow", csv)
    print(
        f"MLflow {worker.ready['mlflow']} worker ready in {time.perf_counter() - t0:.1f} s "
        f"(import {worker.ready['import_s']:.1f} s, sqlite store {worker.ready['store_s']:.1f} s; untimed)",
        flush=True,
    )
    report["mlflow_startup"] = worker.ready
    settings = {} if args.deploy == "auto" else {"deployer": {"auto_deploy": "false"}}
    p = EmbeddedPlatform(workdir / "platform", api_key=secrets.token_urlsafe(24), settings=settings)
    clock: EventClock | None = None
    try:
        t0 = time.perf_counter()
        p.start()
        report["platform_start_s"] = time.perf_counter() - t0
        print(f"platform started in {report['platform_start_s']:.1f} s (untimed)\n", flush=True)
        clock = EventClock(p.nats_url, p.nats_admin_seed)
        clock.start()
        client = la.Client(p.api_key, p.url)
        assert p.nats is not None and p.triton is not None
        settler = Settler([*p.nats_pids, p.triton.process.pid, worker.proc.pid, *(s.pid for s in p.processes.values())])
        token = secrets.token_hex(3)
        control = p.triton.control.grpc_headers()  # the deployer's: cleanup waits on Triton's repository index
        runs: list[dict[str, Any]] = []
        warmups: list[dict[str, Any]] = []
        for i in range(args.warmup + args.runs):
            warm = i < args.warmup
            name = f"journey-{token}-{'w' if warm else 'r'}{i}"
            order = ("ours", "mlflow") if i % 2 == 0 else ("mlflow", "ours")
            result: dict[str, Any] = {"first": order[0]}
            for side in order:
                settled = settler.settle()
                gc.collect()
                if side == "ours":
                    result["ours"] = our_journey(client, clock, csv, predict_rows, name, args.deploy)
                    cleanup_ours(client, name, p.triton_url, control)
                else:
                    result["mlflow"] = mlflow_journey(worker, name)
                result[side]["settle_s"] = settled
            result["check"] = check(result["ours"], result["mlflow"], n_rows)
            (warmups if warm else runs).append(result)
            print(
                f"{'warm-up' if warm else 'run'} {i + 1}/{args.warmup + args.runs}: "
                f"ours {result['ours']['total_s']:.2f} s, MLflow {result['mlflow']['total_s']:.2f} s",
                flush=True,
            )
        client.close()
    finally:
        if clock is not None:
            clock.stop()
        p.stop()
        worker.stop()
    summary = summarize(runs)
    report.update({"runs": runs, "warmups": warmups, "summary": summary})
    print()
    print(table(summary))
    print()
    what = dict(WHAT)
    if args.deploy == "auto":
        what["deploy"] = (
            "the platform's own deployment (auto_deploy), model.wait_deployed() until READY",
            WHAT["deploy"][1],
        )
    print("\n".join(f"{s:<9} ours: {what[s][0]}\n{'':<9} MLflow: {what[s][1]}" for s in STAGES))
    print()
    print(details(runs, warmups))
    total = summary["total"]
    verdict = "PASS" if total["ratio"] <= TARGET_RATIO else "MISS"
    print(
        f"\ntarget: ours <= {TARGET_RATIO:g}x MLflow's total time: {total['ratio']:.2f}x "
        f"({total['ours_median_s']:.2f} s vs {total['mlflow_median_s']:.2f} s)  {verdict}"
    )
    report["target"] = {"ratio_max": TARGET_RATIO, "ratio": total["ratio"], "verdict": verdict}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="User journey: the SDK on the running platform vs MLflow.")
    parser.add_argument("--runs", type=int, default=3, help="timed journeys per side (default 3)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed journeys per side first (default 0)")
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="the CSV (default examples/data/diabetes.csv)")
    parser.add_argument(
        "--deploy",
        choices=("explicit", "auto"),
        default="explicit",
        help="explicit: auto-deploy off, the SDK's deploy() deploys (default); auto: the platform's own deployment",
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where the results go (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the platform's and MLflow's files and logs here (default: a temp dir, deleted)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = machine_info()
    print(
        f"Lepton user-journey bench  {stamp}  cpus={info['cpu_count']}  python={info['python']}  "
        f"load={info['loadavg_at_start'][0]:.2f}  runs={args.runs}  deploy={args.deploy}",
        flush=True,
    )
    report: dict[str, Any] = {
        "timestamp": stamp,
        "machine": info,
        "settings": {
            "runs": args.runs,
            "warmup": args.warmup,
            "csv": str(args.csv),
            "deploy": args.deploy,
            "predict_rows": PREDICT_ROWS,
            "split_seed": SPLIT_SEED,
            "test_fraction": TEST_FRACTION,
        },
    }
    _machine.run_and_report(
        lambda wd: bench(args, wd, report), args.workdir, "lepton-journey-bench-", report, args.json, started
    )
    print(f"\n{report['elapsed_s']:.1f} s in all; every run in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
