"""Training jobs: records, submission and the worker, independent of gRPC."""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import logging
import re
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from lepton_core import artifacts
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore, sha256_digest
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument
from lepton_core.mlp import EpochReport
from lepton_core.wire import now
from lepton_trainer.catalogue import CLUSTERING, MLPEstimator, algorithm

log = logging.getLogger(__name__)

NUMERIC_PREFIXES = ("Int", "UInt", "Float", "Boolean")
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobRecord(BaseModel):
    """A training job, keyed ``<tenant>.<job_id>`` in KV ``jobs``."""

    tenant: str
    job_id: str
    state: JobState
    algorithm: str
    params: dict[str, str]
    target: str
    features: list[str]
    model_name: str
    dataset_id: str
    dataset_version_id: str
    dataset_object: ObjectRefRecord
    split_seed: int
    test_fraction: float
    worker_id: str = ""
    error: str = ""
    attempts: int = 0
    artifact: ObjectRefRecord | None = None
    #: Raw input columns (name, dtype) when the model carries a preprocessing chain.
    inputs: list[dict[str, str]] = []
    preprocess: list[dict[str, Any]] = []
    raw_target_dtype: str = ""
    task: str = "regression"
    seed: int = 0
    stage: str = ""
    progress: float = 0.0
    metrics: dict[str, float] = {}
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DatasetInfo(BaseModel):
    """What the trainer needs to know of a dataset version (from the data service)."""

    dataset_id: str
    dataset_name: str
    version_id: str
    object: ObjectRefRecord
    columns: dict[str, str]
    #: Recipes (with fitted parameters) from the raw upload to this version, oldest first.
    preprocess: list[dict[str, Any]] = []
    #: The raw upload's columns, when there is a chain.
    raw_columns: dict[str, str] = {}


def job_key(tenant: str, job_id: str) -> str:
    return f"{tenant}.{job_id}"


def plan_job(
    tenant: str,
    dataset: DatasetInfo,
    algo_name: str,
    target: str,
    params: dict[str, str],
    model_name: str,
    split_seed: int,
    test_fraction: float,
    seed: int | None = None,
) -> JobRecord:
    """Validates a request against the catalogue and the dataset's schema."""
    algo = algorithm(algo_name)
    algo.parse(params)
    if algo.task != CLUSTERING and not target:
        raise InvalidArgument(f"{algo.name} is a {algo.task} algorithm: a target column is required", field="target")
    if target and target not in dataset.columns:
        raise InvalidArgument(
            f"column {target!r} is not in dataset {dataset.dataset_name}; columns: {sorted(dataset.columns)}",
            field="target",
        )
    if target and algo.task != CLUSTERING and not dataset.columns[target].startswith(NUMERIC_PREFIXES):
        raise InvalidArgument(
            f"target {target!r} has type {dataset.columns[target]}; {algo.task} needs a numeric or boolean target "
            "(cast text labels to numbers with a recipe first)",
            field="target",
        )
    features = [c for c, t in dataset.columns.items() if c != target and t.startswith(NUMERIC_PREFIXES)]
    if not features:
        raise InvalidArgument("the dataset has no numeric feature columns besides the target", field="target")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidArgument(f"must be between 0 and 1, got {test_fraction}", field="test_fraction")
    model_name = model_name or f"{dataset.dataset_name}-{algo.name}".replace("_", "-")
    if not MODEL_NAME_RE.match(model_name):
        raise InvalidArgument(
            f"{model_name!r} is not a valid model name: use 1-64 lower-case letters, digits, '-' or '_'",
            field="model_name",
        )
    return JobRecord(
        tenant=tenant,
        job_id="job_" + uuid.uuid4().hex[:20],
        state=JobState.QUEUED,
        algorithm=algo.name,
        params=params,
        target=target,
        features=features,
        model_name=model_name,
        dataset_id=dataset.dataset_id,
        dataset_version_id=dataset.version_id,
        dataset_object=dataset.object,
        split_seed=split_seed,
        test_fraction=test_fraction,
        inputs=[{"name": n, "dtype": t} for n, t in dataset.raw_columns.items() if n != target],
        preprocess=dataset.preprocess,
        raw_target_dtype=dataset.raw_columns.get(target, ""),
        task=algo.task,
        seed=split_seed if seed is None else seed,
        stage="queued",
        created_at=now(),
    )


def load_frame(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


ProgressFn = Callable[[str, float, dict[str, float]], None]


def fit(job: JobRecord, frame: pl.DataFrame, on_progress: ProgressFn | None = None) -> bytes:
    """Trains the job's model on its training rows; returns the artifact bytes.

    Runs inside the fit process (lepton_trainer.fit_worker), so a cancel can stop
    it by terminating that process.
    """
    report = on_progress or (lambda stage, progress, metrics: None)
    algo = algorithm(job.algorithm)
    estimator, _ = algo.make(job.params, seed=job.seed)
    x = frame.select(job.features).to_numpy().astype(np.float64)
    if np.isnan(x).any():
        raise InvalidArgument("the dataset has missing values in feature columns; fill them with a recipe first")
    train_idx, _ = artifacts.holdout_split(len(x), job.split_seed, job.test_fraction)
    report("fitting", 0.0, {})
    if isinstance(estimator, MLPEstimator):
        epochs = estimator.params.epochs

        def on_epoch(r: EpochReport) -> None:
            metrics = {"epoch": float(r.epoch), "epochs": float(epochs), "train_loss": r.train_loss}
            if r.val_loss is not None:
                metrics["val_loss"] = r.val_loss
            if r.val_metric is not None:
                metrics["val_metric"] = r.val_metric
            report(f"epoch {r.epoch}/{epochs}", r.epoch / epochs, metrics)

        estimator.on_epoch = on_epoch
    if algo.task == CLUSTERING:
        estimator.fit(x[train_idx])
    else:
        y = frame[job.target].to_numpy().astype(np.float64)
        if np.isnan(y).any():
            raise InvalidArgument(
                f"the target {job.target!r} has missing values; drop or fill them with a recipe first"
            )
        estimator.fit(x[train_idx], y[train_idx])
    report("packing", 1.0, {})
    signature = artifacts.Signature(
        features=job.features,
        target=job.target,
        task=algo.task,
        algorithm=algo.name,
        libraries=artifacts.library_versions(),
        inputs=job.inputs,
    )
    preprocess = None
    if job.preprocess:
        preprocess = artifacts.Preprocess(
            recipes=job.preprocess, target=job.target, target_dtype=job.raw_target_dtype or "Float64"
        )
    model = estimator.model_ if isinstance(estimator, MLPEstimator) else estimator
    return artifacts.pack(model, signature, preprocess)


TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
CANCEL_POLL_S = 0.5
PR_SET_PDEATHSIG = 1
AsyncProgress = Callable[[JobRecord, str, float, dict[str, float]], Awaitable[None]]


class Jobs:
    """Job records with compare-and-set transitions."""

    def __init__(self, store: RecordStore[JobRecord], objects: ObjectStore) -> None:
        self.store = store
        self.objects = objects
        self._spare: asyncio.subprocess.Process | None = None

    async def create(self, job: JobRecord) -> None:
        await self.store.create(job_key(job.tenant, job.job_id), job)

    async def get(self, tenant: str, job_id: str) -> JobRecord:
        return (await self.store.require(job_key(tenant, job_id), f"training job {job_id!r}")).value

    async def transition(self, tenant: str, job_id: str, **changes: object) -> JobRecord:
        """Applies ``changes`` with compare-and-set, re-reading on a concurrent write."""
        for _ in range(20):
            current = await self.store.require(job_key(tenant, job_id), f"training job {job_id!r}")
            updated = current.value.model_copy(update=changes)
            try:
                await self.store.update(job_key(tenant, job_id), updated, current.revision)
                return updated
            except Conflict:
                await asyncio.sleep(0.05)
        raise Conflict(f"job {job_id} kept changing; giving up")

    async def run(
        self, tenant: str, job_id: str, worker_id: str, on_progress: AsyncProgress | None = None
    ) -> JobRecord:
        """Runs one job to completion. Idempotent: a finished job is returned as it is.

        The fit runs in a child process; a cancel request terminates it. A user error
        fails the job at once; anything else raises, so the message is redelivered.
        """
        job = await self.get(tenant, job_id)
        if job.state in TERMINAL:
            return job
        job = await self.transition(
            tenant,
            job_id,
            state=JobState.RUNNING,
            worker_id=worker_id,
            started_at=now(),
            attempts=job.attempts + 1,
            stage="loading data",
        )
        data = await self.objects.get(job.dataset_object)
        with tempfile.TemporaryDirectory(prefix="lepton-fit-") as tmp:
            workdir = Path(tmp)
            (workdir / "job.json").write_text(job.model_dump_json())
            (workdir / "data.parquet").write_bytes(data)
            outcome = await self._fit_process(job, workdir, on_progress)
            if outcome == "cancelled":
                return await self.transition(
                    tenant, job_id, state=JobState.CANCELLED, stage="cancelled", finished_at=now()
                )
            if outcome == "user-error":
                error = json.loads((workdir / "error.json").read_text())
                message = f"{error['field']}: {error['message']}" if error.get("field") else error["message"]
                return await self.transition(
                    tenant, job_id, state=JobState.FAILED, error=message, stage="failed", finished_at=now()
                )
            artifact = (workdir / "artifact.zip").read_bytes()
        ref = await self.objects.put("artifacts", f"{tenant}/{artifacts_name(artifact)}", artifact)
        return await self.transition(
            tenant, job_id, state=JobState.SUCCEEDED, artifact=ref, stage="done", progress=1.0, finished_at=now()
        )

    async def _fit_process(self, job: JobRecord, workdir: Path, on_progress: AsyncProgress | None) -> str:
        """Runs the fit process; returns "ok", "user-error" or "cancelled"."""
        proc = await self._take_process()
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(f"{workdir}\n".encode())
        await proc.stdin.drain()
        proc.stdin.close()

        async def read_progress() -> None:
            assert proc.stdout is not None
            async for line in proc.stdout:
                try:
                    update = json.loads(line)
                except ValueError:
                    continue
                changes = {"stage": update["stage"], "progress": update["progress"]}
                if update["metrics"]:  # keep the last epoch's metrics through the final stages
                    changes["metrics"] = update["metrics"]
                await self.transition(job.tenant, job.job_id, **changes)
                if on_progress is not None:
                    await on_progress(job, update["stage"], update["progress"], update["metrics"])

        reader = asyncio.create_task(read_progress())
        errors = asyncio.create_task(proc.stderr.read())
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), CANCEL_POLL_S)
                    break
                except TimeoutError:
                    current = await self.get(job.tenant, job.job_id)
                    if current.cancel_requested or current.state == JobState.CANCELLED:
                        proc.kill()
                        await proc.wait()
                        return "cancelled"
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
        stderr = (await errors).decode(errors="replace")
        if proc.returncode == 0:
            return "ok"
        if proc.returncode == 3:
            return "user-error"
        current = await self.get(job.tenant, job.job_id)
        if current.cancel_requested:
            return "cancelled"
        raise RuntimeError(f"fit process exited with code {proc.returncode}: {stderr[-2000:]}")

    async def warm(self) -> None:
        """Starts a fit process now, so the first job does not wait for its imports."""
        if self._spare is None:
            self._spare = await _spawn_fit_process()

    async def _take_process(self) -> asyncio.subprocess.Process:
        """A fit process that has (been) importing while idle; the next one starts now."""
        spare = self._spare
        self._spare = await _spawn_fit_process()
        if spare is None or spare.returncode is not None:
            return await _spawn_fit_process()
        return spare

    async def close(self) -> None:
        if self._spare is not None and self._spare.returncode is None:
            self._spare.kill()
            await self._spare.wait()
        self._spare = None

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancels a queued job at once; asks the worker of a running one to stop it."""
        job = await self.get(tenant, job_id)
        if job.state in TERMINAL:
            raise FailedPrecondition(f"job {job_id} already {job.state.value}", field="job_id")
        if job.state == JobState.QUEUED:
            return await self.transition(tenant, job_id, state=JobState.CANCELLED, stage="cancelled", finished_at=now())
        return await self.transition(tenant, job_id, cancel_requested=True, stage="cancelling")

    async def list(self, tenant: str, state: JobState | None, limit: int) -> list[JobRecord]:
        jobs = await self.store.values(f"{tenant}.*")
        picked = [j for j in jobs if state is None or j.state == state]
        return sorted(picked, key=lambda j: j.created_at, reverse=True)[:limit]

    async def watch(self, tenant: str, job_id: str) -> AsyncIterator[JobRecord]:
        """The job now and after every change, until it ends."""
        await self.get(tenant, job_id)
        async for job in self.store.watch(job_key(tenant, job_id)):
            yield job
            if job.state in TERMINAL:
                return


async def _spawn_fit_process() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lepton_trainer.fit_worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: the fit process gets SIGKILL when its worker dies, even by kill -9."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def artifacts_name(artifact: bytes) -> str:
    """Artifacts are named by their content digest: one copy per distinct model."""
    return sha256_digest(artifact).split(":", 1)[1] + ".zip"
