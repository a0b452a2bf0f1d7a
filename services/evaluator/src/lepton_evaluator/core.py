"""Evaluation of a trained model on the rows its training held out."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import BaseModel
from sklearn import metrics as skm

from lepton_core import artifacts
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore
from lepton_core.wire import now


class EvaluationRecord(BaseModel):
    """One evaluation, keyed ``<tenant>.<training_job_id>`` in KV ``evaluations``."""

    tenant: str
    evaluation_id: str
    training_job_id: str
    dataset_id: str
    dataset_version_id: str
    model_name: str
    metrics: dict[str, float]
    test_rows: int
    created_at: datetime


def regression_metrics(y_true: npt.NDArray[np.float64], y_pred: npt.NDArray[np.float64]) -> dict[str, float]:
    mse = float(skm.mean_squared_error(y_true, y_pred))
    return {
        "r2": float(skm.r2_score(y_true, y_pred)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
    }


def classification_metrics(y_true: npt.NDArray[np.float64], y_pred: npt.NDArray[np.float64]) -> dict[str, float]:
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision_macro": float(skm.precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def clustering_metrics(x: npt.NDArray[np.float64], labels: npt.NDArray[np.float64]) -> dict[str, float]:
    """Silhouette needs 2 <= clusters < rows; outside that it is not defined and left out."""
    n_labels = len(np.unique(labels))
    out = {"clusters": float(n_labels)}
    if 2 <= n_labels < len(labels):
        out["silhouette"] = float(skm.silhouette_score(x, labels))
    return out


def evaluate_artifact(artifact: bytes, dataset: bytes, seed: int, test_fraction: float) -> tuple[dict[str, float], int]:
    """Metrics of the model in ``artifact`` on the held-out rows of ``dataset``, by task."""
    model, signature = artifacts.unpack(artifact)
    frame = pl.read_parquet(io.BytesIO(dataset))
    x = frame.select(signature.features).to_numpy().astype(np.float64)
    _, test_idx = artifacts.holdout_split(len(x), seed, test_fraction)
    predicted = np.asarray(model.predict(x[test_idx]), dtype=np.float64)
    if signature.task == "clustering":
        return clustering_metrics(x[test_idx], predicted), len(test_idx)
    y = frame[signature.target].to_numpy().astype(np.float64)[test_idx]
    if signature.task == "classification":
        return classification_metrics(y, predicted), len(test_idx)
    return regression_metrics(y, predicted), len(test_idx)


class Evaluations:
    def __init__(self, store: RecordStore[EvaluationRecord], objects: ObjectStore) -> None:
        self.store = store
        self.objects = objects

    async def get(self, tenant: str, job_id: str) -> EvaluationRecord | None:
        found = await self.store.get(f"{tenant}.{job_id}")
        return found.value if found else None

    async def evaluate(
        self,
        *,
        tenant: str,
        job_id: str,
        dataset_id: str,
        dataset_version_id: str,
        model_name: str,
        artifact: ObjectRefRecord,
        dataset: ObjectRefRecord,
        seed: int,
        test_fraction: float,
    ) -> EvaluationRecord:
        """Evaluates once per training job; a repeat returns the stored result."""
        existing = await self.get(tenant, job_id)
        if existing is not None:
            return existing
        metrics, rows = evaluate_artifact(
            await self.objects.get(artifact), await self.objects.get(dataset), seed, test_fraction
        )
        record = EvaluationRecord(
            tenant=tenant,
            evaluation_id=f"ev_{job_id.removeprefix('job_')}",
            training_job_id=job_id,
            dataset_id=dataset_id,
            dataset_version_id=dataset_version_id,
            model_name=model_name,
            metrics=metrics,
            test_rows=rows,
            created_at=now(),
        )
        await self.store.put(f"{tenant}.{job_id}", record)
        return record
