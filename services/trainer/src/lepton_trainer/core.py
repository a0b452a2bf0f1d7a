"""Training jobs: records, submission and the worker, independent of gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import logging
import re
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from lepton_core.bounds import check_fraction
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore, cannot_write, no_room, sha256_digest
from lepton_core.children import die_with_parent
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from lepton_core.names import check_name, shown
from lepton_core.quotas import PlanBook, check_at_most, check_room, run_time_exceeded
from lepton_core.tenant_deletion import Erased
from lepton_core.wire import now
from lepton_ml import artifacts, splits
from lepton_ml.mlp import EpochReport
from lepton_ml.scoring import SCORERS
from lepton_ml.signing import Signer
from lepton_trainer.catalogue import CLUSTERING, MLPEstimator, algorithm
from lepton_trainer.checks import check_search

log = logging.getLogger(__name__)

NUMERIC_PREFIXES = ("Int", "UInt", "Float", "Boolean")


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
    #: "single", "search" (the parent of trials) or "trial".
    kind: str = "single"
    #: The device a neural network trains on unless its params say: the worker's setting.
    device: str = "cpu"
    parent_job_id: str = ""
    search_metric: str = ""
    trials: list[TrialRecord] = []
    best_trial_id: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TrialRecord(BaseModel):
    """One candidate of a search, as its parent job sees it."""

    job_id: str
    params: dict[str, str]
    state: JobState = JobState.QUEUED
    score: float | None = None
    error: str = ""


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
            f"column {shown(target)} is not in dataset {dataset.dataset_name}; columns: {sorted(dataset.columns)}",
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
    check_fraction(test_fraction, "test_fraction")
    model_name = model_name or re.sub(r"[^a-z0-9-]+", "-", f"{dataset.dataset_name}-{algo.name}".lower())
    check_name(model_name, "model_name", what="a model name")
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


METRICS_FOR = {
    "regression": ("r2", "rmse", "mae"),
    "classification": ("accuracy", "balanced_accuracy", "f1_macro"),
    "clustering": ("silhouette",),
}
DEFAULT_METRIC = {task: metrics[0] for task, metrics in METRICS_FOR.items()}
MAX_TRIALS = 256
#: Share of the training rows a trial holds back to score itself.
VALIDATION_FRACTION = 0.2


def plan_search(
    parent: JobRecord, kind: str, space: dict[str, list[str]], trials: int, metric: str
) -> tuple[JobRecord, list[JobRecord]]:
    """The search parent and its trial jobs: one per candidate, validated up front."""
    algo = algorithm(parent.algorithm)
    if kind not in ("grid", "random"):
        raise InvalidArgument(f"unknown search kind {shown(kind)}; use grid or random", field="search.kind")
    check_search(space, trials, kind, metric)  # sizes first: the grid below is built in memory
    if not space:
        raise InvalidArgument("a search needs at least one parameter with candidate values", field="search.space")
    for name, values in space.items():
        if not values:
            raise InvalidArgument(f"no candidate values for {name!r}", field=f"search.space.{name}")
        for value in values:
            algo.parse({**parent.params, name: value})
    metric = metric or DEFAULT_METRIC[algo.task]
    if metric not in METRICS_FOR[algo.task]:
        usable = ", ".join(METRICS_FOR[algo.task])
        raise InvalidArgument(
            f"metric {shown(metric)} does not fit a {algo.task} search; use {usable}", field="search.metric"
        )
    names = sorted(space)
    grid = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(space[n] for n in names))]
    if kind == "grid":
        if trials:
            raise InvalidArgument("a grid search tries every combination: leave trials at 0", field="search.trials")
        chosen = grid
    else:
        if not 1 <= trials <= len(grid):
            raise InvalidArgument(
                f"must be between 1 and {len(grid)} (the combinations), got {trials}", field="search.trials"
            )
        order = np.random.default_rng(parent.seed).permutation(len(grid))[:trials]
        chosen = [grid[i] for i in sorted(order)]
    if len(chosen) > MAX_TRIALS:
        raise InvalidArgument(f"{len(chosen)} candidates; at most {MAX_TRIALS} are allowed", field="search.space")
    children = [
        parent.model_copy(
            update={
                "job_id": f"{parent.job_id}_t{i}",
                "kind": "trial",
                "parent_job_id": parent.job_id,
                "params": {**parent.params, **candidate},
                "search_metric": metric,
            }
        )
        for i, candidate in enumerate(chosen)
    ]
    search = parent.model_copy(
        update={
            "kind": "search",
            "search_metric": metric,
            "trials": [TrialRecord(job_id=c.job_id, params=c.params) for c in children],
        }
    )
    return search, children


def score_trial(job: JobRecord, frame: pl.DataFrame) -> float:
    """A trial's score: fit on part of the training rows, score on the rest (never the test rows)."""
    algo = algorithm(job.algorithm)
    estimator, _ = algo.make(job.params, seed=job.seed)
    x = frame.select(job.features).to_numpy().astype(np.float64)
    train_idx, _ = splits.holdout_split(len(x), job.split_seed, job.test_fraction)
    inner, held = splits.holdout_split(len(train_idx), job.seed, VALIDATION_FRACTION)
    fit_rows, val_rows = train_idx[inner], train_idx[held]
    scorer = SCORERS[job.search_metric].fn
    if algo.task == CLUSTERING:
        estimator.fit(x[fit_rows])
        return scorer(x[val_rows], estimator.predict(x[val_rows]))
    y = frame[job.target].to_numpy().astype(np.float64)
    estimator.fit(x[fit_rows], y[fit_rows])
    return scorer(y[val_rows], estimator.predict(x[val_rows]))


def load_frame(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


ProgressFn = Callable[[str, float, dict[str, float]], None]


def fit(job: JobRecord, frame: pl.DataFrame, on_progress: ProgressFn | None = None) -> bytes:
    """Trains the job's model on its training rows; returns the bundle zip (unsigned: see :class:`Jobs`).

    Runs inside the fit process (lepton_trainer.fit_worker), so a cancel can stop
    it by terminating that process.
    """
    report = on_progress or (lambda stage, progress, metrics: None)
    algo = algorithm(job.algorithm)
    estimator, _ = algo.make(job.params, seed=job.seed)
    x = frame.select(job.features).to_numpy().astype(np.float64)
    if np.isnan(x).any():
        raise InvalidArgument("the dataset has missing values in feature columns; fill them with a recipe first")
    train_idx, _ = splits.holdout_split(len(x), job.split_seed, job.test_fraction)
    report("fitting", 0.0, {})
    if isinstance(estimator, MLPEstimator):
        if "device" not in job.params:
            estimator.params = dataclasses.replace(estimator.params, device=job.device)  # type: ignore[arg-type]
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
#: Exit code the fit process reports for a user error (see fit_worker).
USER_ERROR_EXIT = 3
AsyncProgress = Callable[[JobRecord, str, float, dict[str, float]], Awaitable[None]]


class Jobs:
    """Job records with compare-and-set transitions.

    ``signer`` signs each artifact (:func:`lepton_ml.artifacts.seal`) in this process, after the
    fit process wrote the bundle zip: the fit process never holds the key.
    """

    def __init__(
        self,
        store: RecordStore[JobRecord],
        objects: ObjectStore,
        signer: Signer,
        device: str = "cpu",
        plans: PlanBook | None = None,
    ) -> None:
        self.store = store
        self.objects = objects
        self.signer = signer
        self.device = device
        self.plans = plans or PlanBook()
        self._proc: asyncio.subprocess.Process | None = None
        self._room: dict[str, asyncio.Lock] = {}

    async def create(self, job: JobRecord) -> None:
        await self.store.create(job_key(job.tenant, job.job_id), job)

    async def admit(self, job: JobRecord, trials: int = 0) -> None:
        """Creates a new job (a single one, or a search of ``trials`` trials) if the tenant's plan
        has room for it (RESOURCE_EXHAUSTED naming the limit otherwise, and nothing is stored).

        ``trials_per_search`` bounds the trials; ``concurrent_jobs`` the tenant's unfinished jobs
        (queued or running; a search is one job, its trials are not counted again) and
        ``queued_jobs`` those of them still waiting to start.
        """
        plan = self.plans.plan_of(job.tenant)
        limits = plan.limits
        if trials:
            check_at_most(plan, "trials_per_search", trials, what=f"this search of {trials} trials")
        if not (limits.concurrent_jobs or limits.queued_jobs):
            await self.create(job)
            return
        async with self._room.setdefault(job.tenant, asyncio.Lock()):
            jobs = [j for j in await self.store.values(f"{job.tenant}.*") if j.kind != "trial"]
            unfinished = [j for j in jobs if j.state not in TERMINAL]
            queued = sum(1 for j in unfinished if j.state == JobState.QUEUED)
            check_room(plan, "concurrent_jobs", len(unfinished), what="a new job would be one more")
            check_room(plan, "queued_jobs", queued, what="a new job would wait to start as well")
            await self.create(job)

    async def withdraw(self, job: JobRecord, children: list[JobRecord], error: BaseException) -> None:
        """Undoes the admission of a job whose queueing failed (the store refused or did not take its
        events): it and its trials are failed with the reason, so none waits queued for a start that never
        comes, or counts against the tenant's plan. A record the store will not update either (it is full)
        is erased, which frees room rather than taking it."""
        cause = no_room(error) if cannot_write(error) else f"the store did not take it ({error})"
        reason = f"the job could not be queued: {cause}; submit it again"
        for record in [*children, job]:
            try:
                await self.transition(
                    record.tenant, record.job_id, state=JobState.FAILED, error=reason, stage="failed", finished_at=now()
                )
            except Exception:
                try:
                    await self.store.erase(job_key(record.tenant, record.job_id))
                except Exception:
                    log.exception("job %s could not be queued, failed or erased: it stays queued", record.job_id)

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
            device=self.device,
        )
        if job.kind == "trial":
            await self._parent_running(job)
        data = await self.objects.get(job.dataset_object)
        with tempfile.TemporaryDirectory(prefix="lepton-fit-") as tmp:
            workdir = Path(tmp)
            (workdir / "job.json").write_text(job.model_dump_json())
            (workdir / "data.parquet").write_bytes(data)
            outcome, ran_s = await self._fit_process(job, workdir, on_progress)
            if outcome == "cancelled":
                return await self.transition(
                    tenant, job_id, state=JobState.CANCELLED, stage="cancelled", finished_at=now()
                )
            if outcome == "over-time":
                error = run_time_exceeded(self.plans.plan_of(tenant), ran_s)
                return await self.transition(
                    tenant, job_id, state=JobState.FAILED, error=error, stage="failed", finished_at=now()
                )
            if outcome == "user-error":
                error = json.loads((workdir / "error.json").read_text())
                message = f"{error['field']}: {error['message']}" if error.get("field") else error["message"]
                return await self.transition(
                    tenant, job_id, state=JobState.FAILED, error=message, stage="failed", finished_at=now()
                )
            if job.kind == "trial":
                score = json.loads((workdir / "score.json").read_text())["score"]
                return await self.transition(
                    tenant,
                    job_id,
                    state=JobState.SUCCEEDED,
                    stage="done",
                    progress=1.0,
                    metrics={job.search_metric: score},
                    finished_at=now(),
                )
            artifact = artifacts.seal((workdir / "artifact.zip").read_bytes(), self.signer)
        ref = await self.objects.put("artifacts", f"{tenant}/{artifacts_name(artifact)}", artifact)
        return await self.transition(
            tenant, job_id, state=JobState.SUCCEEDED, artifact=ref, stage="done", progress=1.0, finished_at=now()
        )

    async def _fit_process(self, job: JobRecord, workdir: Path, on_progress: AsyncProgress | None) -> tuple[str, float]:
        """Runs one fit in the fit process; returns "ok", "user-error", "cancelled", or "over-time"
        when the job ran past its plan's ``job_run_seconds``, and the seconds the fit ran.

        The run time counts from the fit process's first report (the fit starting), so neither the
        wait for a worker nor the fit process's own start-up (its imports, after a crash or a stop)
        is held against the job.
        """
        fit_started: list[float] = []
        proc = await self._process()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"{workdir}\n".encode())
        await proc.stdin.drain()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def report(update: dict[str, Any]) -> None:
            """Records a progress report. It is a report, not the job's outcome: one the store refuses
            (full, or away for a moment) is skipped, and the fit goes on."""
            changes = {"stage": update["stage"], "progress": update["progress"]}
            if update["metrics"]:  # keep the last epoch's metrics through the final stages
                changes["metrics"] = update["metrics"]
            try:
                await self.transition(job.tenant, job.job_id, **changes)
                if on_progress is not None:
                    await on_progress(job, update["stage"], update["progress"], update["metrics"])
            except Exception as exc:
                log.warning("job %s: a progress report was not recorded: %r", job.job_id, exc)

        async def read() -> None:
            assert proc.stdout is not None
            try:
                async for line in proc.stdout:
                    try:
                        update = json.loads(line)
                    except ValueError:
                        continue
                    if "done" in update:
                        done.set_result(int(update["done"]))
                        return
                    if not fit_started:
                        fit_started.append(time.monotonic())
                    await report(update)
                error: BaseException = RuntimeError(
                    f"the fit process died (exit code {await proc.wait()}); see the log"
                )
            except Exception as exc:  # the job's wait below must end whatever stops the reading
                error = exc
            if not done.done():
                done.set_exception(error)

        def ran() -> float:
            return time.monotonic() - fit_started[0] if fit_started else 0.0

        reader = asyncio.create_task(read())
        try:
            while not done.done():
                await asyncio.wait({done}, timeout=CANCEL_POLL_S)
                if done.done():
                    break
                current = await self.get(job.tenant, job.job_id)
                if current.cancel_requested or current.state == JobState.CANCELLED:
                    await self._kill()
                    return "cancelled", ran()
                limit = self.plans.plan_of(job.tenant).limits.job_run_seconds
                if limit and ran() > limit:
                    await self._kill()
                    return "over-time", ran()
            code = done.result()
        except RuntimeError:
            self._proc = None
            current = await self.get(job.tenant, job.job_id)
            if current.cancel_requested:
                return "cancelled", ran()
            raise
        finally:
            if not reader.done():
                reader.cancel()
        if code == USER_ERROR_EXIT:
            return "user-error", ran()
        if code != 0:
            raise RuntimeError(f"the fit failed with code {code}; see the trainer log")
        return "ok", ran()

    async def warm(self) -> None:
        """Starts the fit process now, so the first job does not wait for its imports."""
        await self._process()

    async def _process(self) -> asyncio.subprocess.Process:
        """The long-lived fit process (started again after a cancel or a crash)."""
        if self._proc is None or self._proc.returncode is not None:
            # SIGKILL to the fit process when this worker dies, even by kill -9.
            self._proc = await asyncio.create_subprocess_exec(
                *die_with_parent("KILL"),
                sys.executable,
                "-m",
                "lepton_trainer.fit_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        return self._proc

    async def _kill(self) -> None:
        """Stops a fit mid-way: scikit-learn cannot be interrupted inside fit, its process can."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        self._proc = None

    async def _parent_running(self, trial: JobRecord) -> None:
        parent = await self.get(trial.tenant, trial.parent_job_id)
        if parent.state == JobState.QUEUED:
            await self.transition(trial.tenant, parent.job_id, state=JobState.RUNNING, started_at=now(), stage="trials")

    async def record_trial(self, trial: JobRecord) -> tuple[JobRecord, bool]:
        """Records a finished trial on its parent. Returns the parent and whether it is now
        ready for its final fit (every trial done, at least one succeeded)."""
        for _ in range(50):
            current = await self.store.require(job_key(trial.tenant, trial.parent_job_id), "search job")
            parent = current.value
            if parent.state in TERMINAL:
                return parent, False
            trials = [
                t.model_copy(
                    update={
                        "state": trial.state,
                        "score": trial.metrics.get(trial.search_metric),
                        "error": trial.error,
                    }
                )
                if t.job_id == trial.job_id
                else t
                for t in parent.trials
            ]
            done = [t for t in trials if t.state in TERMINAL]
            changes: dict[str, Any] = {"trials": trials, "stage": f"trials {len(done)}/{len(trials)}"}
            changes["progress"] = len(done) / (len(trials) + 1)
            ready = False
            if len(done) == len(trials):
                scored = [t for t in trials if t.state == JobState.SUCCEEDED and t.score is not None]
                if scored:
                    higher_is_better = SCORERS[parent.search_metric].higher_is_better
                    best = (max if higher_is_better else min)(scored, key=lambda t: t.score or 0.0)
                    changes.update(best_trial_id=best.job_id, params=best.params, stage="final fit")
                    ready = True
                else:
                    errors = "; ".join(sorted({t.error for t in trials if t.error})) or "cancelled"
                    changes.update(state=JobState.FAILED, error=f"every trial failed: {errors}", finished_at=now())
            updated = parent.model_copy(update=changes)
            try:
                await self.store.update(job_key(trial.tenant, parent.job_id), updated, current.revision)
                return updated, ready
            except Conflict:
                await asyncio.sleep(0.02)
        raise Conflict(f"search {trial.parent_job_id} kept changing")

    async def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancels a queued job at once; asks the worker of a running one to stop it."""
        job = await self.get(tenant, job_id)
        if job.state in TERMINAL:
            raise FailedPrecondition(f"job {job_id} already {job.state.value}", field="job_id")
        if job.kind == "search":
            for trial in job.trials:
                child = await self.get(tenant, trial.job_id)
                if child.state not in TERMINAL:
                    await self.cancel(tenant, trial.job_id)
            return await self.transition(tenant, job_id, state=JobState.CANCELLED, stage="cancelled", finished_at=now())
        if job.state == JobState.QUEUED:
            return await self.transition(tenant, job_id, state=JobState.CANCELLED, stage="cancelled", finished_at=now())
        return await self.transition(tenant, job_id, cancel_requested=True, stage="cancelling")

    async def stop_tenant(self, tenant: str, wait_s: float = 60.0) -> Erased:
        """Cancels every job of a deleted tenant and waits (up to ``wait_s``) for running ones to
        stop, so that no worker writes an artifact after the tenant's are erased."""
        for job in await self.store.values(f"{tenant}.*"):
            if job.state not in TERMINAL and job.kind != "trial":
                with contextlib.suppress(FailedPrecondition, NotFound):
                    await self.cancel(tenant, job.job_id)
        deadline = asyncio.get_running_loop().time() + wait_s
        while any(j.state not in TERMINAL for j in await self.store.values(f"{tenant}.*")):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("jobs of deleted tenant %s still run after %.0f s; erasing anyway", tenant, wait_s)
                break
            await asyncio.sleep(0.5)
        return Erased()

    async def list(self, tenant: str, state: JobState | None, limit: int) -> list[JobRecord]:
        jobs = [j for j in await self.store.values(f"{tenant}.*") if j.kind != "trial"]
        picked = [j for j in jobs if state is None or j.state == state]
        return sorted(picked, key=lambda j: j.created_at, reverse=True)[:limit]

    async def watch(self, tenant: str, job_id: str) -> AsyncIterator[JobRecord]:
        """The job now and after every change, until it ends."""
        await self.get(tenant, job_id)
        async for job in self.store.watch(job_key(tenant, job_id)):
            yield job
            if job.state in TERMINAL:
                return


def artifacts_name(artifact: bytes) -> str:
    """Artifacts are named by their content digest: one copy per distinct model."""
    return sha256_digest(artifact).split(":", 1)[1] + ".zip"
