"""Training jobs: records, submission and the worker, independent of gRPC."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from lepton_core import artifacts
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore, sha256_digest
from lepton_core.errors import Conflict, InvalidArgument, LeptonError
from lepton_core.wire import now
from lepton_trainer.catalogue import algorithm

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
) -> JobRecord:
    """Validates a request against the catalogue and the dataset's schema."""
    algo = algorithm(algo_name)
    algo.make(params)
    if not target:
        raise InvalidArgument("a target column is required", field="target")
    if target not in dataset.columns:
        raise InvalidArgument(
            f"column {target!r} is not in dataset {dataset.dataset_name}; columns: {sorted(dataset.columns)}",
            field="target",
        )
    if not dataset.columns[target].startswith(NUMERIC_PREFIXES):
        raise InvalidArgument(f"target {target!r} has type {dataset.columns[target]}, not numeric", field="target")
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
        created_at=now(),
    )


def load_frame(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def fit(job: JobRecord, frame: pl.DataFrame) -> bytes:
    """Trains the job's model on its training rows; returns the artifact bytes."""
    algo = algorithm(job.algorithm)
    estimator, _ = algo.make(job.params)
    x = frame.select(job.features).to_numpy().astype(np.float64)
    y = frame[job.target].to_numpy().astype(np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        raise InvalidArgument("the dataset has missing values in feature or target columns; clean it first")
    train_idx, _ = artifacts.holdout_split(len(y), job.split_seed, job.test_fraction)
    estimator.fit(x[train_idx], y[train_idx])
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
    return artifacts.pack(estimator, signature, preprocess)


class Jobs:
    """Job records with compare-and-set transitions."""

    def __init__(self, store: RecordStore[JobRecord], objects: ObjectStore) -> None:
        self.store = store
        self.objects = objects

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

    async def run(self, tenant: str, job_id: str, worker_id: str) -> JobRecord:
        """Runs one job to completion. Idempotent: a finished job is returned as it is."""
        job = await self.get(tenant, job_id)
        if job.state in (JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED):
            return job
        job = await self.transition(
            tenant, job_id, state=JobState.RUNNING, worker_id=worker_id, started_at=now(), attempts=job.attempts + 1
        )
        try:
            frame = load_frame(await self.objects.get(job.dataset_object))
            artifact = await asyncio.to_thread(fit, job, frame)
        except LeptonError as exc:
            if exc.retryable:
                raise
            return await self.transition(tenant, job_id, state=JobState.FAILED, error=str(exc), finished_at=now())
        ref = await self.objects.put("artifacts", f"{tenant}/{artifacts_name(artifact)}", artifact)
        return await self.transition(tenant, job_id, state=JobState.SUCCEEDED, artifact=ref, finished_at=now())


def artifacts_name(artifact: bytes) -> str:
    """Artifacts are named by their content digest: one copy per distinct model."""
    return sha256_digest(artifact).split(":", 1)[1] + ".zip"
