"""Evaluation of a trained model on the rows its training held out."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field
from sklearn import metrics as skm

from lepton_core import artifacts
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore
from lepton_core.errors import NotFound
from lepton_core.wire import now
from lepton_evaluator import metrics as m
from lepton_evaluator import plots

#: Resamples behind each headline confidence interval.
BOOTSTRAP_RESAMPLES = 1000
_HEADLINE_FN = {
    "r2": lambda y, p: float(skm.r2_score(y, p)),
    "accuracy": lambda y, p: float(skm.accuracy_score(y, p)),
}


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
    headline_metric: str = ""
    ci_low: float | None = None
    ci_high: float | None = None
    classes: list[str] = Field(default_factory=list)
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    confusion: list[list[int]] = Field(default_factory=list)
    plots: dict[str, ObjectRefRecord] = Field(default_factory=dict)


@dataclass
class Outcome:
    """Everything an evaluation computed, before it is stored."""

    metrics: dict[str, float]
    test_rows: int
    headline: str
    ci: tuple[float, float] | None = None
    classes: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)


def evaluate_artifact(artifact: bytes, dataset: bytes, seed: int, test_fraction: float) -> Outcome:
    """Metrics, a confidence interval and plots of ``artifact`` on the held-out rows of ``dataset``."""
    bundle = artifacts.load_bundle(artifact)
    model, signature = bundle.model, bundle.signature
    frame = pl.read_parquet(io.BytesIO(dataset))
    x = frame.select(signature.features).to_numpy().astype(np.float64)
    _, test_idx = artifacts.holdout_split(len(x), seed, test_fraction)
    x_test = x[test_idx]
    predicted = np.asarray(model.predict(x_test))
    headline = m.headline(signature.task)
    if signature.task == "clustering":
        return Outcome(m.clustering_metrics(x_test, predicted), len(test_idx), headline)
    y = frame[signature.target].to_numpy()[test_idx]
    out = Outcome({}, len(test_idx), headline)
    proba: Any = None
    if signature.task == "classification":
        classes = list(getattr(model, "classes_", np.unique(np.concatenate([y, predicted]))))
        if hasattr(model, "predict_proba"):
            try:
                proba = np.asarray(model.predict_proba(x_test))
            except (AttributeError, ValueError):  # e.g. SVC without probability=True
                proba = None
        report = m.classification_metrics(y, predicted, proba, classes)
        out.metrics, out.per_class, out.confusion = report.metrics, report.per_class, report.confusion
        out.classes = [str(c) for c in classes]
    else:
        y = y.astype(np.float64)
        out.metrics = m.regression_metrics(y, predicted.astype(np.float64))
        classes = None
    if headline in _HEADLINE_FN and len(y) >= 2:
        out.ci = m.bootstrap_ci(y, predicted, _HEADLINE_FN[headline], n=BOOTSTRAP_RESAMPLES, seed=seed)
    out.plots = plots.plots_for(signature.task, y, predicted, proba, classes, signature.features, model)
    return out


class Evaluations:
    def __init__(self, store: RecordStore[EvaluationRecord], objects: ObjectStore) -> None:
        self.store = store
        self.objects = objects

    async def get(self, tenant: str, job_id: str) -> EvaluationRecord | None:
        found = await self.store.get(f"{tenant}.{job_id}")
        return found.value if found else None

    async def plot(self, tenant: str, job_id: str, name: str) -> bytes:
        record = await self.get(tenant, job_id)
        if record is None:
            raise NotFound(f"no evaluation for training job {job_id!r}", field="training_job_id")
        if name not in record.plots:
            raise NotFound(
                f"no plot {name!r}; this evaluation has {', '.join(sorted(record.plots)) or 'none'}", field="name"
            )
        return await self.objects.get(record.plots[name])

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
        outcome = await asyncio.to_thread(
            evaluate_artifact, await self.objects.get(artifact), await self.objects.get(dataset), seed, test_fraction
        )
        evaluation_id = f"ev_{job_id.removeprefix('job_')}"
        refs = {
            name: await self.objects.put("artifacts", f"{tenant}/plots/{evaluation_id}/{name}.png", png)
            for name, png in outcome.plots.items()
        }
        record = EvaluationRecord(
            tenant=tenant,
            evaluation_id=evaluation_id,
            training_job_id=job_id,
            dataset_id=dataset_id,
            dataset_version_id=dataset_version_id,
            model_name=model_name,
            metrics=outcome.metrics,
            test_rows=outcome.test_rows,
            created_at=now(),
            headline_metric=outcome.headline,
            ci_low=outcome.ci[0] if outcome.ci else None,
            ci_high=outcome.ci[1] if outcome.ci else None,
            classes=outcome.classes,
            per_class=outcome.per_class,
            confusion=outcome.confusion,
            plots=refs,
        )
        await self.store.put(f"{tenant}.{job_id}", record)
        return record


@dataclass
class Comparison:
    """A challenger against the champion on the challenger's held-out rows."""

    metric: str
    challenger: float
    champion: float | None
    difference: float = 0.0
    ci: tuple[float, float] = (0.0, 0.0)
    decision: str = "keep"
    reasons: list[str] = field(default_factory=list)


_SCORE: dict[str, Any] = {
    "r2": skm.r2_score,
    "mse": skm.mean_squared_error,
    "rmse": lambda y, p: float(np.sqrt(skm.mean_squared_error(y, p))),
    "mae": skm.mean_absolute_error,
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1_macro": lambda y, p: skm.f1_score(y, p, average="macro", zero_division=0),
}


def compare(
    challenger: bytes,
    champion: bytes | None,
    dataset: bytes,
    seed: int,
    test_fraction: float,
    metric: str,
    min_improvement: float,
    require_significant: bool,
) -> Comparison:
    """Scores both models on the same held-out rows and decides whether to promote.

    The difference's 95% interval comes from a paired bootstrap (the same resampled
    rows score both models), so a shared hard subset does not look like a difference.
    """
    new = artifacts.load_bundle(challenger)
    frame = pl.read_parquet(io.BytesIO(dataset))
    _, test_idx = artifacts.holdout_split(frame.height, seed, test_fraction)
    rows = frame[test_idx.tolist()]
    metric = metric or m.headline(new.signature.task)
    if metric not in _SCORE:
        return Comparison(metric, float("nan"), None, reasons=[f"metric {metric!r} cannot compare models; kept"])
    score = _SCORE[metric]
    y = rows[new.signature.target].to_numpy()
    ours = np.asarray(new.model.predict(new.features(rows)))
    value = float(score(y, ours))
    if champion is None:
        return Comparison(metric, value, None, decision="promote", reasons=["there is no champion yet"])
    old = artifacts.load_bundle(champion)
    try:
        theirs = np.asarray(old.model.predict(old.features(rows)))
    except Exception as exc:
        return Comparison(
            metric, value, None, decision="promote", reasons=[f"the champion cannot score this data ({exc})"]
        )
    champion_value = float(score(y, theirs))
    higher = m.HIGHER_IS_BETTER.get(metric, True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(y), size=(BOOTSTRAP_RESAMPLES, len(y)))
    diffs = np.array([score(y[i], ours[i]) - score(y[i], theirs[i]) for i in draws], dtype=np.float64)
    low, high = (float(v) for v in np.percentile(diffs, [2.5, 97.5]))
    out = Comparison(metric, value, champion_value, value - champion_value, (low, high))
    gain = out.difference if higher else -out.difference
    significant = low > 0 if higher else high < 0
    better = "higher" if higher else "lower"
    out.reasons.append(
        f"{metric} {value:.4g} vs champion {champion_value:.4g} ({better} is better): "
        f"difference {out.difference:+.4g}, 95% CI [{low:+.4g}, {high:+.4g}]"
    )
    if gain < min_improvement or gain <= 0:
        out.reasons.append(f"improvement {gain:+.4g} is below the policy's minimum {min_improvement:g}")
    elif require_significant and not significant:
        out.reasons.append("the improvement is not significant: the interval includes 0")
    else:
        out.decision = "promote"
    return out
