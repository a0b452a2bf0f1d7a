"""Serving: the platform's deployed model against its peers, one client, one run.

The same scikit-learn model (``LogisticRegression`` on ``make_classification(5000, 20,
random_state=0)``) is served several ways, and the same tritonclient gRPC client code
(``tritonclient.grpc.InferenceServerClient.infer``, one client per thread, one row per
request, FP64 ``[1, 20]`` input) drives each at concurrency 1 and 8:

* **ours via the gateway**: trained, evaluated, registered and deployed by the platform
  itself (``EmbeddedPlatform``: NATS, Triton, the six services, the inference gateway),
  prediction logging on, called at the gateway by deployment name with the API key
  (``authorization: Bearer``): how clients reach models. The gateway's nginx front
  answers ``ModelInfer`` (``lepton_gateway.front``);
* **ours, direct to Triton**: the same model at Triton's own port with the gateway's
  secret header: no key check and no hop, the baseline the gateway is measured against;
* **hand-loaded**: the same ``model.skops`` loaded into the same Triton server by
  ``bench/serving/handloaded_model.py`` (a bare Python-backend model), with the same
  tensors and batching settings: direct / this is the cost of our wrapper and logging;
* **MLServer** with ``mlserver-sklearn`` (its own venv, ``.venv-mlserver``, from
  ``requirements/mlserver-lock.txt``), over the same KServe V2 gRPC protocol, twice: with
  ``parallel_workers: 0`` (its documented best for a small model) and at its defaults;
* **echo**: a plain grpcio KServe V2 server with no model (``bench/serving/echo_server.py``),
  the floor for a Python gRPC round trip;
* **in-process**: ``estimator.predict`` on one row, no network.

A diagnostic target, **ours via the gateway process alone**, is a second gateway on the
same platform with no nginx front (``front: none``): the ``grpc.aio`` pass-through that
answered every call before the front. Two more are our own Triton model file loaded by hand with the deployment's
files and config: **ours, logging off** (no NATS URL) splits the gap between ours and
hand-loaded into wrapper and prediction logging; **ours, every request logged**
(``log_max_per_s`` 0) shows what logging costs without the default cap of 1000 logs a
second per model instance.

Each round runs every (concurrency, target) cell for ``--warmup`` s untimed and then
``--seconds`` s timed, recording every latency; the second round runs the targets in
reverse order. A cell's figures are over all rounds; ``rounds`` shows each round's
throughput (the noise band). Then a second model version is trained and the time from
its registration (and from training completed) to the deployment serving it is measured
from the platform's events and from polling ``GetDeployment``.

Nothing is asserted: targets print PASS/MISS. Every process started is stopped at the
end, even on error. Run with ``.venv/bin/python bench/serve_bench.py`` after creating
``.venv-mlserver`` (see ``bench/README.md``). Writes ``bench/results/serve-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _machine
import joblib
import nats
import numpy as np
import numpy.typing as npt
import polars as pl
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
from _table import render
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.msg import Msg
from sklearn.datasets import make_classification

from lepton_core import events
from lepton_core.bus import ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.service import GATEWAY
from lepton_core.tls import Peer
from lepton_core.wire import ref_from_pb
from lepton_deployer.triton_config import serving_model_source
from lepton_gateway import front
from lepton_ml import artifacts
from lepton_platform.demo import poll
from lepton_platform.embedded import EmbeddedPlatform, grpc_serving
from lepton_platform.processes import Process, free_port, free_ports, start_service, wait_until

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "serve-latest.json"
HANDLOADED_MODEL = BENCH / "serving" / "handloaded_model.py"
ECHO_SERVER = BENCH / "serving" / "echo_server.py"
MLSERVER_VENV = ROOT / ".venv-mlserver"

SAMPLES = 5000
FEATURES = 20
DATA_SEED = 0
TARGET = "target"
MODEL_NAME = "serve-bench"
TENANT = "default"  # EmbeddedPlatform's tenant for its API key
CONCURRENCY = (1, 8)
ROUNDS = 2
WARMUP_S = 1.0
MEASURE_S = 4.0
CLIENT_TIMEOUT_S = 10.0
PLATFORM_TIMEOUT_S = 300.0
POLL_S = 0.02
#: Before each cell: wait (at most SETTLE_TIMEOUT_S) until the servers use < SETTLE_IDLE_CORES.
SETTLE_GROUPS = ("gateway", "triton", "nats", "services", "mlserver", "echo")
SETTLE_IDLE_CORES = 0.15
SETTLE_TIMEOUT_S = 20.0
#: The issues' targets, all at concurrency 8: the authenticated path (the gateway) against
#: direct Triton and MLServer at its best settings; the direct path against the bare model.
GATEWAY_VS_DIRECT_MIN = 0.8
GATEWAY_P99_VS_DIRECT_MAX = 1.5
VS_MLSERVER_MIN = 2.5
VS_HANDLOADED_MIN = 0.85
P99_MAX_MS = 5.0
INPUT = "features"
OUTPUT = "prediction"
MLSERVER_OUTPUT = "predict"  # mlserver-sklearn's name for the result of estimator.predict

# --- targets and the load generator ----------------------------------------------------------------------

#: Per worker thread: (one request, cleanup). Each thread owns its client.
Caller = tuple[Callable[[], Any], Callable[[], None]]
#: Per asyncio task (``--client asyncio``): the same, as coroutines. Each task owns its client.
AsyncCaller = tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[None]]]
CLIENTS = ("threads", "asyncio")


@dataclass
class Target:
    key: str
    label: str
    what: str
    make_caller: Callable[[], Caller]
    make_async_caller: Callable[[], AsyncCaller]
    #: Whether its prediction must equal the estimator's (the echo server predicts nothing).
    predicts: bool = True


class LoadDuringRollout:
    """Steady load from ``clients`` threads while a rollout runs: every latency and failure."""

    def __init__(self, make_caller: Callable[[], Caller], clients: int) -> None:
        self._make = make_caller
        self._clients = clients
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def _run(self) -> None:
        call, close = self._make()
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    call()
                    self.latencies.append(time.perf_counter() - start)
                except Exception as exc:
                    self.failures.append(str(exc)[:200])
        finally:
            close()

    def __enter__(self) -> LoadDuringRollout:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self._clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies) * 1000
        return {
            "requests": len(self.latencies),
            "failures": len(self.failures),
            "first_failures": self.failures[:5],
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
            "worst_ms": float(ms.max()) if len(ms) else float("nan"),
        }


def _kserve_request(module: Any, url: str, output: str, row: npt.NDArray[np.float64]) -> tuple[Any, Any, Any]:
    """A client of ``module`` (``tritonclient.grpc`` or its ``aio``), the one-row input, the output asked for."""
    inputs = [module.InferInput(INPUT, list(row.shape), "FP64")]
    inputs[0].set_data_from_numpy(row)
    return module.InferenceServerClient(url), inputs, [module.InferRequestedOutput(output)]


def kserve_caller(
    url: str,
    model: str,
    version: str,
    output: str,
    row: npt.NDArray[np.float64],
    headers: dict[str, str] | None = None,
) -> Callable[[], Caller]:
    """The one client code every network target gets: tritonclient gRPC, one row, one output.

    ``headers`` go with every request: the gateway's ``authorization: Bearer <key>``, or the
    secret without which our model refuses a request that did not come through the gateway.
    """

    def make() -> Caller:
        client, inputs, outputs = _kserve_request(triton_grpc, url, output, row)

        def call() -> Any:
            result = client.infer(
                model,
                inputs,
                model_version=version,
                outputs=outputs,
                client_timeout=CLIENT_TIMEOUT_S,
                headers=headers,
            )
            return result.as_numpy(output)

        return call, client.close

    return make


def kserve_async_caller(
    url: str,
    model: str,
    version: str,
    output: str,
    row: npt.NDArray[np.float64],
    headers: dict[str, str] | None = None,
) -> Callable[[], AsyncCaller]:
    """:func:`kserve_caller` on ``tritonclient.grpc.aio``: called from inside the round's event loop."""

    def make() -> AsyncCaller:
        client, inputs, outputs = _kserve_request(triton_aio, url, output, row)

        async def call() -> Any:
            result = await client.infer(
                model,
                inputs,
                model_version=version,
                outputs=outputs,
                client_timeout=CLIENT_TIMEOUT_S,
                headers=headers,
            )
            return result.as_numpy(output)

        return call, client.close

    return make


#: A target's two caller factories: for the threads client and for the asyncio client.
Callers = tuple[Callable[[], Caller], Callable[[], AsyncCaller]]


def kserve_callers(
    url: str,
    model: str,
    version: str,
    output: str,
    row: npt.NDArray[np.float64],
    headers: dict[str, str] | None = None,
) -> Callers:
    """Both load generators' callers for one KServe V2 target."""
    return (
        kserve_caller(url, model, version, output, row, headers),
        kserve_async_caller(url, model, version, output, row, headers),
    )


def inprocess_callers(model: Any, row: npt.NDArray[np.float64]) -> Callers:
    """``estimator.predict(row)``; under asyncio the tasks take turns (nothing to await)."""

    def make() -> Caller:
        return (lambda: model.predict(row)), (lambda: None)

    def make_async() -> AsyncCaller:
        async def call() -> Any:
            return model.predict(row)

        async def close() -> None:
            return None

        return call, close

    return make, make_async


class CpuMeter:
    """CPU seconds used by groups of processes (by process group), this process and the machine.

    Every server the bench starts leads its own process group (``lepton_platform.processes``),
    with its children in it (Triton's Python stubs, MLServer's workers, the trainer's fit
    process), so a group's CPU is the sum of utime + stime over its members in /proc.
    ``other`` is whatever else kept the machine's CPUs busy (other sessions' tests).
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.tick = os.sysconf("SC_CLK_TCK")

    def snapshot(self) -> dict[str, float]:
        by_group = _machine.cpu_seconds_by_group()
        out = {name: sum(by_group.get(g, 0.0) for g in pgids) for name, pgids in self.groups.items()}
        out["client"] = time.process_time()
        with open("/proc/stat") as f:
            cpu = [int(v) for v in f.readline().split()[1:]]
        out["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / self.tick  # all but idle and iowait
        return out

    def settle(self, groups: tuple[str, ...], idle_cores: float, window_s: float, timeout_s: float) -> float:
        """Waits until ``groups`` together use under ``idle_cores`` for ``window_s``; returns the wait.

        The monitor consumes prediction logs behind the load, so after a cell of ours the
        platform keeps a core busy for a while; the next cell must not pay for it.
        """
        t0 = time.perf_counter()
        before = self.snapshot()
        while time.perf_counter() - t0 < timeout_s:
            time.sleep(window_s)
            after = self.snapshot()
            if sum(after[g] - before[g] for g in groups) / window_s < idle_cores:
                break
            before = after
        return time.perf_counter() - t0

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        d = {k: after[k] - before[k] for k in before}
        d["other"] = max(0.0, d.pop("machine") - sum(d.values()))
        return d


@dataclass
class Cell:
    """One target at one concurrency, over all rounds."""

    target: str
    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    warmup_errors: int = 0
    first_error: str = ""
    measured_s: float = 0.0
    round_rps: list[float] = field(default_factory=list)
    #: CPU seconds per process group during the timed windows (CpuMeter).
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Every completed call, warm-up included (for counting prediction logs).
    calls: int = 0
    #: Seconds waited before each round for the servers to go idle (CpuMeter.settle).
    settle_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def rps(self) -> float:
        return self.requests / self.measured_s if self.measured_s else 0.0

    def add_cpu(self, delta: dict[str, float]) -> None:
        for k, v in delta.items():
            self.cpu_s[k] = self.cpu_s.get(k, 0.0) + v

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies_s), q)) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "warmup_errors": self.warmup_errors,
            "first_error": self.first_error,
            "measured_s": self.measured_s,
            "throughput_rps": self.rps,
            "round_throughput_rps": self.round_rps,
            "calls_incl_warmup": self.calls,
            "settle_s": self.settle_s,
            "cpu_s": self.cpu_s,
            "cpu_us_per_request": {k: v / self.requests * 1e6 for k, v in self.cpu_s.items()} if self.requests else {},
            "p50_ms": self.percentile_ms(50),
            "p95_ms": self.percentile_ms(95),
            "p99_ms": self.percentile_ms(99),
            "mean_ms": statistics.fmean(self.latencies_s) * 1000 if self.latencies_s else None,
            "max_ms": max(self.latencies_s) * 1000 if self.latencies_s else None,
            "latencies_ms": [round(s * 1000, 4) for s in self.latencies_s],
        }


def run_round(
    target: Target, concurrency: int, cell: Cell, warmup_s: float, measure_s: float, cpu: CpuMeter | None = None
) -> None:
    """``concurrency`` threads send requests back to back; those started in the timed window count."""
    if cpu is not None:
        cell.settle_s.append(cpu.settle(SETTLE_GROUPS, SETTLE_IDLE_CORES, 0.5, SETTLE_TIMEOUT_S))
    callers = [target.make_caller() for _ in range(concurrency)]
    tally = Tally(concurrency)
    ready = threading.Barrier(concurrency + 1)
    marks: dict[str, float] = {}

    def worker(i: int) -> None:
        call, _ = callers[i]
        ready.wait()
        t_measure, t_end = marks["measure"], marks["end"]
        clock = time.perf_counter
        while True:
            t0 = clock()
            if t0 >= t_end:
                return
            try:
                call()
            except Exception as exc:
                tally.failed(i, exc, t0 >= t_measure)
                continue
            tally.done(i, t0, clock() - t0 if t0 >= t_measure else None)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    try:
        for t in threads:
            t.start()
        start = time.perf_counter()
        marks["measure"] = start + warmup_s
        marks["end"] = start + warmup_s + measure_s
        ready.wait()
        if cpu is not None:
            time.sleep(max(0.0, marks["measure"] - time.perf_counter()))
            before = cpu.snapshot()
            time.sleep(max(0.0, marks["end"] - time.perf_counter()))
            cell.add_cpu(cpu.delta(before, cpu.snapshot()))
        for t in threads:
            t.join(measure_s + warmup_s + CLIENT_TIMEOUT_S + 5)
    finally:
        for _, close in callers:
            with contextlib.suppress(Exception):
                close()
    tally.record(cell, measure_s)


def run_round_async(
    target: Target, concurrency: int, cell: Cell, warmup_s: float, measure_s: float, cpu: CpuMeter | None = None
) -> None:
    """:func:`run_round` with ``concurrency`` asyncio tasks on ``tritonclient.grpc.aio`` in one thread."""
    if cpu is not None:
        cell.settle_s.append(cpu.settle(SETTLE_GROUPS, SETTLE_IDLE_CORES, 0.5, SETTLE_TIMEOUT_S))
    tally = Tally(concurrency)

    async def round_() -> None:
        callers = [target.make_async_caller() for _ in range(concurrency)]
        clock = time.perf_counter
        t_measure = clock() + warmup_s
        t_end = t_measure + measure_s

        async def worker(i: int) -> None:
            call, _ = callers[i]
            while True:
                t0 = clock()
                if t0 >= t_end:
                    return
                try:
                    await call()
                except Exception as exc:
                    tally.failed(i, exc, t0 >= t_measure)
                    continue
                tally.done(i, t0, clock() - t0 if t0 >= t_measure else None)

        async def meter() -> None:
            if cpu is None:
                return
            await asyncio.sleep(max(0.0, t_measure - clock()))
            before = cpu.snapshot()
            await asyncio.sleep(max(0.0, t_end - clock()))
            cell.add_cpu(cpu.delta(before, cpu.snapshot()))

        try:
            await asyncio.gather(meter(), *(worker(i) for i in range(concurrency)))
        finally:
            for _, close in callers:
                with contextlib.suppress(Exception):
                    await close()

    asyncio.run(round_())
    tally.record(cell, measure_s)


class Tally:
    """What one round's workers saw, per worker (thread or task), until it goes into the cell."""

    def __init__(self, workers: int) -> None:
        self.latencies: list[list[float]] = [[] for _ in range(workers)]
        self.errors = [0] * workers
        self.warm_errors = [0] * workers
        self.calls = [0] * workers
        self.first_error = ""

    def done(self, i: int, t0: float, latency: float | None) -> None:
        """A call answered; ``latency`` only when it started in the timed window."""
        self.calls[i] += 1
        if latency is not None:
            self.latencies[i].append(latency)

    def failed(self, i: int, exc: Exception, timed: bool) -> None:
        if timed:
            self.errors[i] += 1
        else:
            self.warm_errors[i] += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]

    def record(self, cell: Cell, measure_s: float) -> None:
        done = [x for xs in self.latencies for x in xs]
        cell.latencies_s.extend(done)
        cell.errors += sum(self.errors)
        cell.warmup_errors += sum(self.warm_errors)
        cell.calls += sum(self.calls)
        cell.measured_s += measure_s
        cell.round_rps.append(len(done) / measure_s)
        if self.first_error and not cell.first_error:
            cell.first_error = self.first_error


def check_targets(targets: list[Target], row: npt.NDArray[np.float64], expected: float) -> dict[str, Any]:
    """One request to each target before any timing: every model must predict what the estimator does."""
    seen: dict[str, Any] = {}
    for t in targets:
        call, close = t.make_caller()
        try:
            out = np.asarray(call()).reshape(-1)
        finally:
            close()
        seen[t.key] = out.tolist()
        if t.predicts and (out.size != 1 or float(out[0]) != expected):
            raise RuntimeError(f"{t.label} predicted {out.tolist()} for the check row, the estimator {expected}")
    return seen


# --- the platform path -------------------------------------------------------------------------------------


def make_dataset() -> tuple[pl.DataFrame, npt.NDArray[np.float64]]:
    x, y = make_classification(n_samples=SAMPLES, n_features=FEATURES, random_state=DATA_SEED)
    columns: dict[str, Any] = {f"f{i:02d}": x[:, i] for i in range(FEATURES)}
    columns[TARGET] = y.astype(np.int64)
    return pl.DataFrame(columns), x


def upload_parts(data: bytes, name: str) -> AsyncIterator[data_pb2.UploadDatasetRequest]:
    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="parquet"))
        for start in range(0, len(data), 1024 * 1024):
            yield data_pb2.UploadDatasetRequest(chunk=data[start : start + 1024 * 1024])

    return parts()


async def until(what: str, call: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float) -> Any:
    """Polls ``call`` every POLL_S until ``done(result)``; NOT_FOUND counts as not yet."""
    return await poll(what, call, done, timeout, interval=POLL_S)


@dataclass
class Rollout:
    """One SubmitTraining followed until the deployment serves the new version."""

    job: trainer_pb2.TrainingJob
    version: registry_pb2.ModelVersion
    deployment: deployer_pb2.Deployment
    #: Seconds since the SubmitTraining call, when the bench process saw each thing.
    seen_s: dict[str, float]
    #: The events' own ce-time stamps, for the same things.
    ce_time: dict[str, str]


async def roll_out(p: EmbeddedPlatform, dataset_version_id: str, params: dict[str, str]) -> Rollout:
    """Trains ``params`` under MODEL_NAME and waits until its deployment is READY.

    The bench subscribes (core NATS) to the tenant's events before submitting, so it sees
    each step's event as it is published, and polls GetDeployment every POLL_S beside it.
    """
    seen: dict[str, float] = {}
    ce_time: dict[str, str] = {}
    # (arrival, training job id, event name, ce-time): kept unfiltered, because an event
    # can arrive before the SubmitTraining reply says which job is ours.
    arrivals: list[tuple[float, str, str, str]] = []
    t0 = time.perf_counter()

    async def on_event(msg: Msg) -> None:
        arrived = time.perf_counter() - t0
        try:
            event = events.decode(msg)
        except ValueError:
            return
        lineage = getattr(event.data, "lineage", None)
        if lineage is not None:
            name = event.type.removeprefix("ai.lepton.").removesuffix(".v1")
            arrivals.append((arrived, lineage.training_job_id, name, event.time))

    def note_events(job_id: str) -> None:
        for arrived, job, name, when in arrivals:
            if job == job_id:
                seen.setdefault(f"event {name}", arrived)
                ce_time.setdefault(name, when)

    nc = await nats.connect(p.nats_url, name="lepton-serve-bench", nkeys_seed=str(p.nats_admin_seed))
    try:
        await nc.subscribe(f"lepton.evt.{TENANT}.>", cb=on_event)
        await nc.flush()
        a = p.addresses
        async with (
            client_channel(a["trainer"], p.api_key) as tch,
            client_channel(a["registry"], p.api_key) as rch,
            client_channel(a["deployer"], p.api_key) as dch,
        ):
            trainer = trainer_pb2_grpc.TrainingServiceStub(tch)
            registry = registry_pb2_grpc.RegistryServiceStub(rch)
            deployer = deployer_pb2_grpc.DeploymentServiceStub(dch)
            t0 = time.perf_counter()
            job = await trainer.SubmitTraining(
                trainer_pb2.SubmitTrainingRequest(
                    dataset_version_id=dataset_version_id,
                    algorithm="logistic_regression",
                    target=TARGET,
                    params=params,
                    model_name=MODEL_NAME,
                ),
                timeout=30,
            )
            job = await until(
                "training",
                lambda: trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id), timeout=10),
                lambda j: j.state in (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED),
                PLATFORM_TIMEOUT_S,
            )
            if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"training failed: {job.error}")
            seen["poll training succeeded"] = time.perf_counter() - t0
            version = await until(
                "registration",
                lambda: registry.GetModelVersion(
                    registry_pb2.GetModelVersionRequest(model_name=MODEL_NAME), timeout=10
                ),
                lambda v: v.lineage.training_job_id == job.job_id,
                PLATFORM_TIMEOUT_S,
            )
            seen["poll version registered"] = time.perf_counter() - t0
            deployment = await until(
                "deployment",
                lambda: deployer.GetDeployment(deployer_pb2.GetDeploymentRequest(name=MODEL_NAME), timeout=10),
                lambda d: (
                    d.lineage.model_version == version.version
                    and d.state in (deployer_pb2.DEPLOYMENT_STATE_READY, deployer_pb2.DEPLOYMENT_STATE_FAILED)
                ),
                PLATFORM_TIMEOUT_S,
            )
            seen["poll deployment ready"] = time.perf_counter() - t0
            if deployment.state != deployer_pb2.DEPLOYMENT_STATE_READY:
                raise RuntimeError(f"deployment failed: {deployment.error}")
            # The ready event is published right after the READY record: give it a moment.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                note_events(job.job_id)
                if "event deployment.ready" in seen:
                    break
                await asyncio.sleep(POLL_S)
    finally:
        await nc.close()
    return Rollout(job, version, deployment, dict(sorted(seen.items(), key=lambda kv: kv[1])), ce_time)


def deploy_timings(r: Rollout) -> dict[str, float | None]:
    """The intervals the report names, in seconds (None when an event was not seen)."""
    s = r.seen_s

    def span(a: str, b: str) -> float | None:
        return s[b] - s[a] if a in s and b in s else None

    return {
        "submit_to_training_completed": s.get("event training.completed"),
        "training_completed_to_version_created": span("event training.completed", "event registry.version.created"),
        "version_created_to_deployment_ready_event": span("event registry.version.created", "event deployment.ready"),
        "version_created_to_ready_polled": span("event registry.version.created", "poll deployment ready"),
        "training_completed_to_ready_polled": span("event training.completed", "poll deployment ready"),
        "submit_to_ready_polled": s.get("poll deployment ready"),
    }


async def fetch_artifact(p: EmbeddedPlatform, version: registry_pb2.ModelVersion) -> bytes:
    nc = await nats.connect(p.nats_url, name="lepton-serve-bench", nkeys_seed=str(p.nats_admin_seed))
    try:
        return await ObjectStore(nc.jetstream()).get(ref_from_pb(version.artifact))
    finally:
        await nc.close()


async def upload(p: EmbeddedPlatform, frame: pl.DataFrame) -> data_pb2.DatasetVersion:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    async with client_channel(p.addresses["data"], p.api_key) as ch:
        return await data_pb2_grpc.DataServiceStub(ch).UploadDataset(
            upload_parts(buf.getvalue(), MODEL_NAME), timeout=120
        )


# --- the other servers --------------------------------------------------------------------------------------


def triton_config_of(url: str, model: str, control: dict[str, str]) -> dict[str, Any]:
    """``model``'s config as Triton holds it (``control``: the headers that open model control)."""
    client = triton_grpc.InferenceServerClient(url)
    try:
        return dict(client.get_model_config(model, headers=control, as_json=True)["config"])
    finally:
        client.close()


def load_by_hand(url: str, name: str, config: dict[str, Any], files: dict[str, bytes], control: dict[str, str]) -> None:
    """Loads ``name`` version 1 into Triton from in-memory files, as the deployer does (``control``: its headers)."""
    client = triton_grpc.InferenceServerClient(url)
    try:
        client.load_model(
            name,
            headers=control,
            config=json.dumps(config),
            files={f"file:1/{k}": v for k, v in files.items()},
            client_timeout=PLATFORM_TIMEOUT_S,
        )
        wait_until(lambda: client.is_model_ready(name, "1"), 120, f"Triton model {name}")
    finally:
        client.close()


def config_like(ours: dict[str, Any], name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A config for ``name`` with ours' backend, tensors, batch size, dynamic batching and
    instances (as Triton reports them for the deployment), and ``parameters``."""
    config = {k: ours[k] for k in ("backend", "max_batch_size", "input", "output", "dynamic_batching") if k in ours}
    config["name"] = name
    config["instance_group"] = [
        {"kind": g.get("kind", "KIND_CPU"), "count": int(g.get("count", 1))} for g in ours.get("instance_group", [])
    ]
    if parameters:
        config["parameters"] = parameters
    return config


class MLServer:
    """``mlserver start`` from .venv-mlserver on free ports, serving a joblib file in a temp dir.

    ``parallel_workers`` None keeps MLServer's default (inference in a pool of worker
    processes); 0 runs inference in the server's own process, MLServer's documented
    setting for small, fast models (no hop to a worker process).
    """

    NAME = "sklearn-lr"

    def __init__(self, model: Any, workdir: Path, parallel_workers: int | None = None) -> None:
        binary = MLSERVER_VENV / "bin" / "mlserver"
        if not binary.exists():
            raise RuntimeError(f"{binary} not found: create .venv-mlserver (bench/README.md, serving benchmark)")
        self.parallel_workers = parallel_workers
        tag = "default" if parallel_workers is None else f"workers-{parallel_workers}"
        models = workdir / f"mlserver-models-{tag}" / self.NAME
        models.mkdir(parents=True)
        # mlserver-sklearn loads joblib (pickle) files: the peer's format, written only here.
        joblib.dump(model, models / "model.joblib")
        (models / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": self.NAME,
                    "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": "1"},
                }
            )
        )
        self.grpc_port, http_port, metrics_port = free_ports(3)
        env = {
            **os.environ,
            "MLSERVER_HOST": "127.0.0.1",
            "MLSERVER_HTTP_PORT": str(http_port),
            "MLSERVER_GRPC_PORT": str(self.grpc_port),
            "MLSERVER_METRICS_PORT": str(metrics_port),
            "MLSERVER_METRICS_DIR": str(models.parent / ".metrics"),  # not the working directory
        }
        if parallel_workers is not None:
            env["MLSERVER_PARALLEL_WORKERS"] = str(parallel_workers)
        for var in ("VIRTUAL_ENV", "PYTHONPATH"):  # its own venv, nothing of ours
            env.pop(var, None)
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.process = Process(
            "mlserver", [str(binary), "start", str(models.parent)], workdir / f"mlserver-{tag}.log", env
        )
        client = triton_grpc.InferenceServerClient(self.url)
        try:
            wait_until(lambda: client.is_model_ready(self.NAME, "1"), 120, "MLServer", self.process.proc)
        except BaseException as exc:
            tail = self.process.tail()
            self.process.stop()  # the caller never gets an object to stop
            raise RuntimeError(f"{exc}\n--- mlserver log ---\n{tail}") from exc
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop()


class KServeProcess:
    """A KServe V2 gRPC server the bench starts at ``url``: waits until it is live, stops it."""

    def __init__(self, name: str, argv: list[str], url: str, log: Path) -> None:
        self.url = url
        self.process = Process(name, argv, log)
        client = triton_grpc.InferenceServerClient(url)
        try:
            wait_until(lambda: client.is_server_live(client_timeout=1.0), 60, name, self.process.proc)
        except BaseException:
            self.process.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop()


class EchoServer(KServeProcess):
    def __init__(self, workdir: Path) -> None:
        url = f"127.0.0.1:{free_port()}"
        port = url.rsplit(":", 1)[1]
        super().__init__("echo server", [sys.executable, str(ECHO_SERVER), "--port", port], url, workdir / "echo.log")


class NginxPassThrough(KServeProcess):
    """nginx passing gRPC to Triton untouched (no Lua, no key): the floor any proxy hop sets here.

    The same nginx, worker count and upstream keep-alive as the gateway's front
    (``lepton_gateway.front``); callers name Triton's model and send the inference secret
    themselves, as the direct target does.
    """

    def __init__(self, workdir: Path, triton_url: str) -> None:
        folder = workdir / "nginx-floor"
        folder.mkdir(mode=0o700)
        url = f"127.0.0.1:{free_port()}"
        conf = folder / "nginx.conf"
        conf.write_text(
            front.process_config(folder)
            + f"  upstream triton {{ server {triton_url}; {front.KEEPALIVE} }}\n"
            + f"  server {{ listen {url} http2; keepalive_requests 1000000; "
            + "location / { grpc_pass grpc://triton; } }\n}\n"
        )
        argv = [str(front.NGINX), "-p", str(folder), "-c", str(conf)]
        super().__init__("nginx pass-through", argv, url, workdir / "nginx-floor.log")


# --- report ------------------------------------------------------------------------------------------------


#: Package versions recorded with the results.
PACKAGES = ("tritonclient", "nvidia-pytriton", "grpcio", "protobuf", "scikit-learn", "skops", "numpy")


def gateway_alone(p: EmbeddedPlatform, logs: Path) -> tuple[Process, str]:
    """A second gateway on ``p`` with no nginx front (``front: none``): its process and gRPC address."""
    assert p.nats is not None and p.nats_secrets is not None and p.triton is not None
    address = f"127.0.0.1:{free_port()}"
    values = {
        "nats_url": p.nats.url,
        "nats_nkey_seed_file": str(p.nats_secrets.seed_file(GATEWAY)),
        "grpc_port": address.rsplit(":", 1)[1],
        "service_keys": p.nats_secrets.service_keys(),
        "triton_url": p.triton.url,
        "inference_secret_file": str(p.triton.inference_secret_file),
        "front": "none",
    }
    process = start_service(GATEWAY, values, logs)
    wait_until(lambda: grpc_serving(Peer(address)), 60, "the gateway without its front", process.proc)
    return process, address


def mlserver_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            [str(MLSERVER_VENV / "bin" / "mlserver"), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    return "?"


def machine_info() -> dict[str, Any]:
    return _machine.machine_info(PACKAGES, mlserver=mlserver_version())


def fmt_ms(v: float) -> str:
    return f"{v:,.2f}"


def cell_table(targets: list[Target], cells: dict[tuple[str, int], Cell]) -> str:
    header = ("target", "c", "requests", "req/s", "rounds req/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    rows: list[tuple[str, ...]] = [header]
    for c in CONCURRENCY:
        for t in targets:
            cell = cells[(t.key, c)]
            rows.append(
                (
                    t.label,
                    str(c),
                    f"{cell.requests:,}",
                    f"{cell.rps:,.0f}",
                    "/".join(f"{r:,.0f}" for r in cell.round_rps),
                    fmt_ms(cell.percentile_ms(50)),
                    fmt_ms(cell.percentile_ms(95)),
                    fmt_ms(cell.percentile_ms(99)),
                    str(cell.errors),
                )
            )
    return render(rows)


CPU_COLUMNS = ("client", "gateway", "triton", "nats", "services", "mlserver", "echo", "other")


def cpu_table(targets: list[Target], cells: dict[tuple[str, int], Cell]) -> str:
    header = ("target", "c", *CPU_COLUMNS, "all ours", "cores busy")
    rows: list[tuple[str, ...]] = [header]
    for c in CONCURRENCY:
        for t in targets:
            cell = cells[(t.key, c)]
            if not cell.requests or not cell.cpu_s:
                continue
            per = {k: v / cell.requests * 1e6 for k, v in cell.cpu_s.items()}
            ours = sum(v for k, v in per.items() if k != "other")
            busy = sum(cell.cpu_s.values()) / cell.measured_s
            rows.append(
                (t.label, str(c), *(f"{per.get(k, 0.0):,.0f}" for k in CPU_COLUMNS), f"{ours:,.0f}", f"{busy:.2f}")
            )
    return render(rows)


def prediction_log_counts(triton_log: Path, model: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """What our Triton model reported at unload: prediction logs published and dropped.

    Waits up to ``timeout`` for ``model``'s line: Triton unloads the old version after the
    new one is ready, and the unload flushes queued logs for up to 2 s first.
    """
    deadline = time.monotonic() + timeout
    while model not in _read(triton_log) and time.monotonic() < deadline:
        time.sleep(0.2)
    pattern = re.compile(r"model (\S+) unloaded: (\d+) prediction logs published, (\d+) dropped")
    return [{"model": m[1], "published": int(m[2]), "dropped": int(m[3])} for m in pattern.finditer(_read(triton_log))]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def ratios(cells: dict[tuple[str, int], Cell]) -> dict[str, Any]:
    def ratio(a: str, b: str, c: int = 8) -> tuple[float, list[float]]:
        x, y = cells[(a, c)], cells[(b, c)]
        paired = [p / q for p, q in zip(x.round_rps, y.round_rps, strict=True) if q]
        return (x.rps / y.rps if y.rps else float("nan")), paired

    gw_direct, gw_direct_rounds = ratio("gateway", "ours")
    gw_best, gw_best_rounds = ratio("gateway", "mlserver_best")
    gw_default, gw_default_rounds = ratio("gateway", "mlserver")
    gw_p99 = cells[("gateway", 8)].percentile_ms(99)
    direct_p99 = cells[("ours", 8)].percentile_ms(99)
    vs_mls, vs_mls_rounds = ratio("ours", "mlserver_best")
    vs_hand, vs_hand_rounds = ratio("ours", "hand")
    nolog_vs_hand, nolog_rounds = ratio("ours_nolog", "hand")
    alllog_vs_hand, alllog_rounds = ratio("ours_alllog", "hand")
    p99 = cells[("ours", 8)].percentile_ms(99)
    return {
        "gateway_vs_direct_rps_c8": {
            "value": gw_direct,
            "rounds": gw_direct_rounds,
            "target_min": GATEWAY_VS_DIRECT_MIN,
        },
        "gateway_p99_vs_direct_c8": {
            "value": gw_p99 / direct_p99 if direct_p99 else float("nan"),
            "gateway_ms": gw_p99,
            "direct_ms": direct_p99,
            "target_max": GATEWAY_P99_VS_DIRECT_MAX,
        },
        "gateway_vs_mlserver_best_rps_c8": {"value": gw_best, "rounds": gw_best_rounds, "target_min": VS_MLSERVER_MIN},
        "gateway_vs_mlserver_default_rps_c8": {"value": gw_default, "rounds": gw_default_rounds},
        "mlserver_best_vs_default_rps_c8": {"value": ratio("mlserver_best", "mlserver")[0]},
        "ours_vs_mlserver_best_rps_c8": {"value": vs_mls, "rounds": vs_mls_rounds, "target_min": VS_MLSERVER_MIN},
        "ours_vs_handloaded_rps_c8": {"value": vs_hand, "rounds": vs_hand_rounds, "target_min": VS_HANDLOADED_MIN},
        "ours_p99_ms_c8": {"value": p99, "target_max": P99_MAX_MS},
        "ours_nolog_vs_handloaded_rps_c8": {"value": nolog_vs_hand, "rounds": nolog_rounds},
        "ours_alllog_vs_handloaded_rps_c8": {"value": alllog_vs_hand, "rounds": alllog_rounds},
        "ours_alllog_p99_ms_c8": {"value": cells[("ours_alllog", 8)].percentile_ms(99)},
        "ours_vs_echo_rps_c8": {"value": ratio("ours", "echo")[0]},
        "handloaded_vs_mlserver_rps_c8": {"value": ratio("hand", "mlserver")[0]},
        "gateway_alone_vs_direct_rps_c8": dict(zip(("value", "rounds"), ratio("gateway_alone", "ours"), strict=True)),
        "gateway_alone_p99_ms_c8": {"value": cells[("gateway_alone", 8)].percentile_ms(99)},
        "nginx_floor_vs_direct_rps_c8": dict(zip(("value", "rounds"), ratio("nginx_floor", "ours"), strict=True)),
        "nginx_floor_p99_ms_c8": {"value": cells[("nginx_floor", 8)].percentile_ms(99)},
    }


def ratio_lines(r: dict[str, Any]) -> list[str]:
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    def band(rounds: list[float]) -> str:
        return f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else "-"

    m, h, p = r["ours_vs_mlserver_best_rps_c8"], r["ours_vs_handloaded_rps_c8"], r["ours_p99_ms_c8"]
    n = r["ours_nolog_vs_handloaded_rps_c8"]
    a, ap = r["ours_alllog_vs_handloaded_rps_c8"], r["ours_alllog_p99_ms_c8"]
    gd, gp = r["gateway_vs_direct_rps_c8"], r["gateway_p99_vs_direct_c8"]
    gb, gm = r["gateway_vs_mlserver_best_rps_c8"], r["gateway_vs_mlserver_default_rps_c8"]
    ga, gap = r["gateway_alone_vs_direct_rps_c8"], r["gateway_alone_p99_ms_c8"]
    nf, nfp = r["nginx_floor_vs_direct_rps_c8"], r["nginx_floor_p99_ms_c8"]
    return [
        f"gateway / direct Triton throughput, c=8:  {gd['value']:.2f}x  (rounds {band(gd['rounds'])})  "
        f"{verdict(gd['value'] >= GATEWAY_VS_DIRECT_MIN)} (>= {GATEWAY_VS_DIRECT_MIN}x)",
        f"gateway p99 / direct Triton p99, c=8:     {gp['value']:.2f}x  ({gp['gateway_ms']:.2f} / "
        f"{gp['direct_ms']:.2f} ms)  {verdict(gp['value'] <= GATEWAY_P99_VS_DIRECT_MAX)} "
        f"(<= {GATEWAY_P99_VS_DIRECT_MAX}x)",
        f"gateway without nginx / direct, c=8:      {ga['value']:.2f}x  (rounds {band(ga['rounds'])}), "
        f"p99 {gap['value']:.2f} ms  diagnostic",
        f"nginx pass-through / direct, c=8:         {nf['value']:.2f}x  (rounds {band(nf['rounds'])}), "
        f"p99 {nfp['value']:.2f} ms  the floor of any hop",
        f"gateway / MLServer (parallel_workers 0):  {gb['value']:.2f}x  (rounds {band(gb['rounds'])})  "
        f"{verdict(gb['value'] >= VS_MLSERVER_MIN)} (>= {VS_MLSERVER_MIN}x)",
        f"gateway / MLServer (defaults):            {gm['value']:.2f}x  (rounds {band(gm['rounds'])})  "
        f"reported; MLServer parallel_workers 0 / defaults: {r['mlserver_best_vs_default_rps_c8']['value']:.2f}x",
        f"direct / MLServer (parallel_workers 0):   {m['value']:.2f}x  (rounds {band(m['rounds'])})  "
        f"{verdict(m['value'] >= VS_MLSERVER_MIN)} (>= {VS_MLSERVER_MIN}x)",
        f"direct / hand-loaded throughput, c=8:  {h['value']:.2f}x  (rounds {band(h['rounds'])})  "
        f"{verdict(h['value'] >= VS_HANDLOADED_MIN)} (>= {VS_HANDLOADED_MIN}x)",
        f"direct p99 latency, c=8:               {p['value']:.2f} ms  "
        f"{verdict(p['value'] < P99_MAX_MS)} (< {P99_MAX_MS} ms)",
        f"ours (logging off) / hand-loaded, c=8: {n['value']:.2f}x  (rounds {band(n['rounds'])})  diagnostic",
        f"ours (every request logged) / hand-loaded, c=8: {a['value']:.2f}x  (rounds {band(a['rounds'])}), "
        f"p99 {ap['value']:.2f} ms  diagnostic",
    ]


def deploy_lines(name: str, r: Rollout) -> list[str]:
    t = deploy_timings(r)

    def s(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f} s"

    return [
        f"{name} (job {r.job.job_id}, registry v{r.version.version}, Triton {r.deployment.triton_model} "
        f"v{r.deployment.triton_version}):",
        f"  registry.version.created -> deployment.ready event     {s(t['version_created_to_deployment_ready_event'])}",
        f"  registry.version.created -> READY seen by GetDeployment {s(t['version_created_to_ready_polled'])}",
        f"  training.completed -> READY seen by GetDeployment       {s(t['training_completed_to_ready_polled'])}",
        f"  SubmitTraining -> READY seen by GetDeployment            {s(t['submit_to_ready_polled'])}",
    ]


# --- run ---------------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    frame, x = make_dataset()
    row = np.ascontiguousarray(x[:1], dtype=np.float64)
    stoppers: list[Callable[[], None]] = []
    p = EmbeddedPlatform(workdir / "platform", api_key=secrets.token_urlsafe(24))
    try:
        t0 = time.perf_counter()
        print("starting NATS, Triton, the six services and the gateway ...", flush=True)
        stoppers.append(p.stop)
        p.start()
        report["platform_start_s"] = time.perf_counter() - t0
        dataset = asyncio.run(upload(p, frame))
        first = asyncio.run(roll_out(p, dataset.version_id, {}))
        dep = first.deployment
        print(
            f"platform up in {report['platform_start_s']:.1f} s; {MODEL_NAME} v{first.version.version} trained and "
            f"READY on Triton as {dep.triton_model} v{dep.triton_version} "
            f"{first.seen_s['poll deployment ready']:.1f} s after SubmitTraining",
            flush=True,
        )
        artifact = asyncio.run(fetch_artifact(p, first.version))
        assert p.artifact_keys is not None
        files = artifacts.unpack_files(artifact, p.artifact_keys.trusted())
        model, _ = artifacts.unpack(artifact, p.artifact_keys.trusted())
        expected = float(model.predict(row)[0])

        # The same Triton server: the bare model, and our model with logging off.
        assert p.triton is not None
        control = p.triton.control.grpc_headers()  # model control is the deployer's: the bench borrows it
        ours_config = triton_config_of(p.triton_url, dep.triton_model, control)
        if ours_config.get("backend") != "python":
            raise RuntimeError(
                f"the deployment is served by Triton's {ours_config.get('backend')!r} backend, not python"
            )
        hand_config = config_like(ours_config, "handloaded", None)
        nolog_params = {**ours_config.get("parameters", {}), "log_sample_rate": {"string_value": "0"}}
        nolog_config = config_like(ours_config, "ours-nolog", nolog_params)
        # Our model logging every request (no rate cap): what the default cap saves.
        alllog_params = {**ours_config.get("parameters", {}), "log_max_per_s": {"string_value": "0"}}
        alllog_config = config_like(ours_config, "ours-alllog", alllog_params)
        t_load = time.perf_counter()
        load_by_hand(
            p.triton_url,
            "handloaded",
            hand_config,
            {"model.py": HANDLOADED_MODEL.read_bytes(), artifacts.MODEL_FILE: files[artifacts.MODEL_FILE]},
            control,
        )
        report["handloaded_load_s"] = time.perf_counter() - t_load
        ours_files = {"model.py": serving_model_source(), artifacts.ARTIFACT_FILE: artifact}  # as the deployer's
        t_load = time.perf_counter()
        load_by_hand(p.triton_url, "ours-nolog", nolog_config, ours_files, control)
        report["ours_nolog_load_s"] = time.perf_counter() - t_load
        load_by_hand(p.triton_url, "ours-alllog", alllog_config, ours_files, control)
        print(
            f"loaded by hand into the same Triton: handloaded in {report['handloaded_load_s']:.1f} s, "
            f"ours-nolog in {report['ours_nolog_load_s']:.1f} s",
            flush=True,
        )

        mls = MLServer(model, workdir)
        stoppers.append(mls.stop)
        mls_best = MLServer(model, workdir, parallel_workers=0)
        stoppers.append(mls_best.stop)
        echo = EchoServer(workdir)
        stoppers.append(echo.stop)
        alone, alone_url = gateway_alone(p, workdir / "gateway-alone")
        stoppers.append(lambda: alone.stop())
        floor = NginxPassThrough(workdir, p.triton.url)
        stoppers.append(floor.stop)

        # Clients reach models through the gateway with their key; the direct path (Triton's own
        # port, with the secret the gateway adds) is what the gateway and its checks cost against.
        inference = p.triton.inference_headers()
        bearer = {"authorization": f"Bearer {p.api_key}"}
        targets = [
            Target(
                "gateway",
                "ours via the gateway (auth)",
                "the deployment by name through the inference gateway (its nginx front answers ModelInfer), "
                "Bearer key, tenant routes and rate limit",
                *kserve_callers(p.gateway_url, MODEL_NAME, "", dep.output_names[0], row, bearer),
            ),
            Target(
                "gateway_alone",
                "ours via gateway, no nginx",
                "the same through a second gateway with front: none (the grpc.aio pass-through alone; diagnostic)",
                *kserve_callers(alone_url, MODEL_NAME, "", dep.output_names[0], row, bearer),
            ),
            Target(
                "ours",
                "ours, direct to Triton",
                "the same deployed model at Triton's port (no key, no gateway hop), prediction logging on "
                "(defaults: every request, at most 1000/s)",
                *kserve_callers(
                    p.triton_url, dep.triton_model, dep.triton_version, dep.output_names[0], row, inference
                ),
            ),
            Target(
                "nginx_floor",
                "nginx pass-through (floor)",
                "the same model at Triton's name through nginx with no Lua and no key (grpc_pass only): the floor "
                "any proxy hop sets",
                *kserve_callers(floor.url, dep.triton_model, dep.triton_version, dep.output_names[0], row, inference),
            ),
            Target(
                "hand",
                "hand-loaded Triton",
                "bench/serving/handloaded_model.py, same Triton, same skops file",
                *kserve_callers(p.triton_url, "handloaded", "1", OUTPUT, row),
            ),
            Target(
                "mlserver_best",
                "MLServer, parallel_workers 0",
                "mlserver-sklearn, joblib file, parallel_workers 0 (inference in the server process: MLServer's "
                "documented setting for small models)",
                *kserve_callers(mls_best.url, MLServer.NAME, "1", MLSERVER_OUTPUT, row),
            ),
            Target(
                "mlserver",
                "MLServer, defaults",
                "mlserver-sklearn, joblib file, default settings (a pool of inference worker processes)",
                *kserve_callers(mls.url, MLServer.NAME, "1", MLSERVER_OUTPUT, row),
            ),
            Target(
                "echo",
                "grpcio echo (floor)",
                "bench/serving/echo_server.py, fixed [1,1] output",
                *kserve_callers(echo.url, "echo", "", OUTPUT, row),
                predicts=False,
            ),
            Target("inproc", "in-process predict", "estimator.predict(row)", *inprocess_callers(model, row)),
            Target(
                "ours_nolog",
                "ours, logging off (diag.)",
                "our model.py, same files and config, log_sample_rate 0",
                *kserve_callers(p.triton_url, "ours-nolog", "1", OUTPUT, row, inference),
            ),
            Target(
                "ours_alllog",
                "ours, every request logged (diag.)",
                "our model.py, same files and config, log_max_per_s 0 (no cap)",
                *kserve_callers(p.triton_url, "ours-alllog", "1", OUTPUT, row, inference),
            ),
        ]
        report["targets"] = {t.key: {"label": t.label, "what": t.what} for t in targets}
        report["check_predictions"] = check_targets(targets, row, expected)
        report["triton_configs"] = {
            "ours": ours_config,
            "handloaded": hand_config,
            "ours-nolog": nolog_config,
            "ours-alllog": alllog_config,
        }

        assert p.triton is not None and p.nats is not None
        cpu = CpuMeter(
            {
                "triton": [p.triton.process.pid],
                "nats": p.nats_pids,
                # The front's nginx is in the gateway's process group; the floor's nginx leads its own.
                "gateway": [p.processes[GATEWAY].pid, alone.pid, floor.process.pid],
                "services": [proc.pid for name, proc in p.processes.items() if name != GATEWAY],
                "mlserver": [mls.process.pid, mls_best.process.pid],
                "echo": [echo.process.pid],
            }
        )
        triton_log = p.triton.process.log_path
        cells = {(t.key, c): Cell(t.key, c) for t in targets for c in CONCURRENCY}
        run = run_round_async if args.client == "asyncio" else run_round
        for rnd in range(args.rounds):
            order = targets if rnd % 2 == 0 else list(reversed(targets))
            for c in CONCURRENCY:
                for t in order:
                    run(t, c, cells[(t.key, c)], args.warmup, args.seconds, cpu)
                    cell = cells[(t.key, c)]
                    print(
                        f"  round {rnd + 1}/{args.rounds}  c={c}  {t.label:<26} {cell.round_rps[-1]:>8,.0f} req/s"
                        f"  (settled {cell.settle_s[-1]:.1f} s, load {os.getloadavg()[0]:.2f})",
                        flush=True,
                    )
        report["cells"] = [cells[(t.key, c)].summary() for c in CONCURRENCY for t in targets]
        report["ratios"] = ratios(cells)
        report["loadavg_after_load"] = list(os.getloadavg())

        # A new version of the same model: time from its registration to Triton serving it,
        # while two clients keep calling the stable model (no version) through the rollout.
        with LoadDuringRollout(kserve_caller(p.gateway_url, MODEL_NAME, "", OUTPUT, row, bearer), 2) as during:
            second = asyncio.run(roll_out(p, dataset.version_id, {"C": "0.5"}))
        report["during_rollout"] = during.summary()
        report["deploy"] = {
            name: {
                "job_id": r.job.job_id,
                "model_version": r.version.version,
                "triton_version": r.deployment.triton_version,
                "seen_s": r.seen_s,
                "ce_time": r.ce_time,
                "timings_s": deploy_timings(r),
            }
            for name, r in (("first_version", first), ("second_version", second))
        }
        check_v2 = kserve_caller(
            p.triton_url, second.deployment.triton_model, second.deployment.triton_version, OUTPUT, row, inference
        )
        call, close = check_v2()
        try:
            report["second_version_prediction"] = np.asarray(call()).reshape(-1).tolist()
        finally:
            close()
        # Version 1 was unloaded when version 2 replaced it: its finalize() counted its logs.
        report["prediction_logs"] = prediction_log_counts(triton_log, f"model {dep.triton_model} unloaded")
        report["ours_calls_incl_warmup"] = sum(cells[("ours", c)].calls for c in CONCURRENCY)

        print()
        print(cell_table(targets, cells))
        for t in targets:
            print(f"  {t.label}: {t.what}")
        print("\nCPU per request (us) by process group, timed windows only; cores busy = all CPU / wall time")
        print(cpu_table(targets, cells))
        print()
        for line in ratio_lines(report["ratios"]):
            print(line)
        print()
        for line in deploy_lines("first version", first) + deploy_lines("second version", second):
            print(line)
        d = report["during_rollout"]
        print(
            f"  during the second rollout, 2 clients without a version: {d['requests']:,} requests, "
            f"{d['failures']} failed, p99 {d['p99_ms']:.2f} ms, worst {d['worst_ms']:.2f} ms"
        )
        print(
            f"  for scale: Triton loads handloaded_model.py by hand in {report['handloaded_load_s']:.2f} s, "
            f"our model.py (no logging) in {report['ours_nolog_load_s']:.2f} s"
        )
        for entry in report["prediction_logs"]:
            print(
                f"prediction logs of {entry['model']} at unload: {entry['published']:,} published, "
                f"{entry['dropped']:,} dropped; {report['ours_calls_incl_warmup']:,} calls sent to it in the load cells"
            )
        errors = {f"{k} c={c}": v.first_error for (k, c), v in cells.items() if v.first_error}
        if errors:
            print("\nfirst error per cell:")
            for k, v in errors.items():
                print(f"  {k}: {v}")
    finally:
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                print(f"  (while stopping: {type(exc).__name__}: {exc})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serving: ours on Triton vs hand-loaded Triton, MLServer, echo.")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds over all cells (default {ROUNDS})")
    parser.add_argument("--seconds", type=float, default=MEASURE_S, help=f"timed s per cell per round ({MEASURE_S})")
    parser.add_argument("--warmup", type=float, default=WARMUP_S, help=f"untimed s per cell per round ({WARMUP_S})")
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="threads",
        help="load generator: one tritonclient.grpc client per thread (default), or one tritonclient.grpc.aio "
        "client per asyncio task, all in one thread",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = machine_info()
    print(f"Lepton serving bench  {stamp}  cpus={info['cpu_count']}  python={info['python']}  {info['mlserver']}")
    print(
        f"{args.rounds} rounds x (warm-up {args.warmup:g} s + {args.seconds:g} s timed) per target and concurrency; "
        f"one row per request, {args.client} client\n",
        flush=True,
    )
    report: dict[str, Any] = {
        "timestamp": stamp,
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "measure_s": args.seconds,
            "concurrency": list(CONCURRENCY),
            "client": args.client,
            "samples": SAMPLES,
            "features": FEATURES,
            "data_seed": DATA_SEED,
        },
    }
    with tempfile.TemporaryDirectory(prefix="lepton-serve-bench-") as tmp:
        bench(args, Path(tmp), report)
    elapsed = time.perf_counter() - started
    report["elapsed_s"] = round(elapsed, 2)
    results = RESULTS if args.client == "threads" else RESULTS.with_name(f"serve-latest-{args.client}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n{elapsed:.1f} s in all; every latency in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
