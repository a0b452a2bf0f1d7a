"""Evaluation of a trained model on the rows its training held out."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import BaseModel, Field
from sklearn import metrics as skm
from sklearn.base import clone

from lepton_core.bus import ObjectRefRecord, ObjectStore
from lepton_core.errors import FailedPrecondition, InvalidArgument, NotFound
from lepton_core.store import Store
from lepton_core.wire import now
from lepton_evaluator import metrics as m
from lepton_evaluator import plots
from lepton_ml import artifacts, splits
from lepton_ml.scoring import SCORERS
from lepton_ml.signing import TrustedKeys

HOLDOUT = "holdout"
ALL_ROWS = "all"
MAX_FOLDS = 20
#: Resamples behind each headline confidence interval.
BOOTSTRAP_RESAMPLES = 1000
# The scikit-learn functions themselves, not wrappers: bootstrap_ci evaluates these for all
# resamples at once (0.5 ms instead of ~200 ms of 1000 calls).
_HEADLINE_FN = {
    "r2": skm.r2_score,
    "accuracy": skm.accuracy_score,
}


class EvaluationRecord(BaseModel):
    """One evaluation in KV ``evaluations``, keyed ``<tenant>.<evaluation_id>``.

    The automatic evaluation after training is also kept at ``<tenant>.<training_job_id>``.
    """

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
    model_version: int = 0
    rows: str = HOLDOUT
    cv_folds: int = 0
    cv_mean: dict[str, float] = Field(default_factory=dict)
    cv_std: dict[str, float] = Field(default_factory=dict)
    trigger: str = "training"


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
    cv: dict[str, tuple[float, float]] = field(default_factory=dict)


def design(bundle: artifacts.Bundle, frame: pl.DataFrame) -> tuple[npt.NDArray[np.float64], npt.NDArray[Any] | None]:
    """The estimator's input matrix and the target (None for clustering) for a dataset version's rows.

    A version with the model's feature columns (the training data, or another version of it)
    is used as it is; a raw version with the model's input columns goes through the model's
    own fitted preprocessing first, as a serving request would.
    """
    sig = bundle.signature
    target = sig.target if sig.task != "clustering" else ""
    if all(c in frame.columns for c in sig.features):
        prepared = frame
    elif bundle.preprocess is not None and all(c in frame.columns for c in sig.numeric_inputs() + sig.text_inputs()):
        prepared = bundle.preprocess.apply(frame)
    else:
        wanted = sig.numeric_inputs() + sig.text_inputs() if bundle.preprocess is not None else sig.features
        missing = [c for c in wanted if c not in frame.columns]
        raise FailedPrecondition(
            f"the dataset version lacks the model's columns {missing[:10]}", field="dataset_version_id"
        )
    if target and target not in frame.columns:
        raise FailedPrecondition(f"the dataset version has no target column {target!r}", field="dataset_version_id")
    x = prepared.select(sig.features).to_numpy().astype(np.float64)
    y = prepared[target].to_numpy() if target else None
    return x, y


def evaluate_artifact(
    artifact: bytes,
    dataset: bytes,
    seed: int,
    test_fraction: float,
    rows: str = HOLDOUT,
    cv_folds: int = 0,
    *,
    trusted: TrustedKeys,
) -> Outcome:
    """Metrics, a confidence interval and plots of ``artifact`` on ``dataset``.

    ``rows`` is ``"holdout"`` (the deterministic split training held out) or ``"all"``.
    With ``cv_folds`` >= 2, a fresh copy of the estimator (``sklearn.base.clone``: same
    parameters, unfitted) is also cross-validated on the same rows; the model's fitted
    preprocessing is kept fixed, as it is part of the model. The artifact's signature is
    checked against ``trusted`` before a byte of it is read.
    """
    bundle = artifacts.load_bundle(artifact, trusted)
    model, signature = bundle.model, bundle.signature
    frame = pl.read_parquet(io.BytesIO(dataset))
    x, y_all = design(bundle, frame)
    if rows == HOLDOUT:
        _, idx = splits.holdout_split(len(x), seed, test_fraction)
    else:
        idx = np.arange(len(x))
    if len(idx) == 0:
        raise FailedPrecondition("no rows to evaluate on", field="dataset_version_id")
    x_test = x[idx]
    predicted = np.asarray(model.predict(x_test))
    headline = m.headline(signature.task)
    cv = _cross_validate(model, x_test, None if y_all is None else y_all[idx], signature.task, cv_folds, seed)
    if signature.task == "clustering":
        return Outcome(m.clustering_metrics(x_test, predicted), len(idx), headline, cv=cv)
    assert y_all is not None
    y = y_all[idx]
    out = Outcome({}, len(idx), headline, cv=cv)
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


def _cross_validate(
    model: Any, x: npt.NDArray[np.float64], y: npt.NDArray[Any] | None, task: str, folds: int, seed: int
) -> dict[str, tuple[float, float]]:
    if folds == 0:
        return {}
    try:
        fresh = clone(model)
    except TypeError:
        raise FailedPrecondition(
            f"cross-validation refits the estimator, and a {type(model).__name__} cannot be copied unfitted "
            "(it is not a scikit-learn estimator)",
            field="cv_folds",
        ) from None
    if len(x) < folds:
        raise FailedPrecondition(f"{folds} folds need at least {folds} rows, there are {len(x)}", field="cv_folds")
    if task == "classification" and y is not None:
        smallest = int(np.unique(y, return_counts=True)[1].min())
        if smallest < folds:
            raise FailedPrecondition(
                f"{folds} stratified folds need every class at least {folds} times; the rarest has {smallest}",
                field="cv_folds",
            )
    return m.cross_validate(lambda: clone(fresh), x, y, task, k=folds, seed=seed)


class Evaluations:
    def __init__(self, store: Store[EvaluationRecord], objects: ObjectStore, trusted: TrustedKeys) -> None:
        self.store = store
        self.objects = objects
        self.trusted = trusted

    async def get(self, tenant: str, job_id: str) -> EvaluationRecord | None:
        """The automatic evaluation of a training job, or any evaluation by its id."""
        found = await self.store.get(f"{tenant}.{job_id}")
        return found.value if found else None

    async def require(self, tenant: str, *, job_id: str = "", evaluation_id: str = "") -> EvaluationRecord:
        if not job_id and not evaluation_id:
            raise InvalidArgument("a training job id or an evaluation id is required", field="training_job_id")
        record = await self.get(tenant, evaluation_id or job_id)
        if record is None:
            what = f"evaluation {evaluation_id!r}" if evaluation_id else f"evaluation for training job {job_id!r}"
            raise NotFound(f"no {what} (yet)", field="evaluation_id" if evaluation_id else "training_job_id")
        return record

    async def list(
        self, tenant: str, model_name: str, model_version: int = 0, also: str = ""
    ) -> list[EvaluationRecord]:
        """A model's evaluations (one version's, when given, plus evaluation ``also``), newest first."""
        seen: dict[str, EvaluationRecord] = {}
        for record in await self.store.values(f"{tenant}.*"):
            if record.model_name != model_name:
                continue
            if model_version in (0, record.model_version) or record.evaluation_id == also:
                seen[record.evaluation_id] = record
        return sorted(seen.values(), key=lambda r: r.created_at, reverse=True)

    async def plot(self, tenant: str, name: str, *, job_id: str = "", evaluation_id: str = "") -> bytes:
        record = await self.require(tenant, job_id=job_id, evaluation_id=evaluation_id)
        if name not in record.plots:
            raise NotFound(
                f"no plot {name!r}; this evaluation has {', '.join(sorted(record.plots)) or 'none'}", field="name"
            )
        return await self.objects.get(record.plots[name])

    async def erase_version(self, tenant: str, model_name: str, job_id: str) -> int:
        """Erases every evaluation of the model version its training job ``job_id`` made, with their plots.

        Records (``<tenant>.<evaluation_id>``, and ``<tenant>.<job_id>`` for the automatic one)
        and plot objects are erased from the store, history included. Idempotent.

        Returns:
            The evaluations erased.
        """
        found = [
            r
            for r in await self.store.values(f"{tenant}.*")
            if r.training_job_id == job_id and r.model_name == model_name
        ]
        for record in found:
            for ref in record.plots.values():
                await self.objects.erase(ref)
            await self.store.erase(f"{tenant}.{record.evaluation_id}")
        await self.store.erase(f"{tenant}.{job_id}")
        return len({r.evaluation_id for r in found})

    async def evaluate(self, run: Run) -> EvaluationRecord:
        """Evaluates once: a repeat of the same run (same id) returns the stored result."""
        existing = await self.get(run.tenant, run.evaluation_id)
        if existing is not None:
            return existing
        outcome = await asyncio.to_thread(
            partial(evaluate_artifact, trusted=self.trusted),
            await self.objects.get(run.artifact),
            await self.objects.get(run.dataset),
            run.seed,
            run.test_fraction,
            run.rows,
            run.cv_folds,
        )
        refs = {
            name: await self.objects.put("artifacts", f"{run.tenant}/plots/{run.evaluation_id}/{name}.png", png)
            for name, png in outcome.plots.items()
        }
        record = EvaluationRecord(
            tenant=run.tenant,
            evaluation_id=run.evaluation_id,
            training_job_id=run.job_id,
            dataset_id=run.dataset_id,
            dataset_version_id=run.dataset_version_id,
            model_name=run.model_name,
            model_version=run.model_version,
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
            rows=run.rows,
            cv_folds=run.cv_folds,
            cv_mean={k: v[0] for k, v in outcome.cv.items()},
            cv_std={k: v[1] for k, v in outcome.cv.items()},
            trigger=run.trigger,
        )
        await self.store.put(f"{run.tenant}.{run.evaluation_id}", record)
        if run.trigger == "training":
            await self.store.put(f"{run.tenant}.{run.job_id}", record)
        return record


@dataclass(frozen=True)
class Run:
    """What one evaluation needs: the model, the rows and how to score them."""

    tenant: str
    job_id: str
    dataset_id: str
    dataset_version_id: str
    model_name: str
    artifact: ObjectRefRecord
    dataset: ObjectRefRecord
    seed: int
    test_fraction: float
    model_version: int = 0
    rows: str = HOLDOUT
    cv_folds: int = 0
    trigger: str = "training"

    @property
    def evaluation_id(self) -> str:
        """``ev_<job>`` for the automatic evaluation; for a request, a digest of everything
        that decides the result, so the same request finds the stored evaluation."""
        if self.trigger == "training":
            return f"ev_{self.job_id.removeprefix('job_')}"
        key = "|".join(
            [
                self.model_name,
                str(self.model_version),
                self.artifact.digest,
                self.dataset.digest,
                self.rows,
                str(self.cv_folds),
                str(self.seed),
                str(self.test_fraction),
            ]
        )
        return "ev_r" + hashlib.sha256(key.encode()).hexdigest()[:20]


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


def compare(
    challenger: bytes,
    champion: bytes | None,
    dataset: bytes,
    seed: int,
    test_fraction: float,
    metric: str,
    min_improvement: float,
    require_significant: bool,
    *,
    trusted: TrustedKeys,
) -> Comparison:
    """Scores both models on the same held-out rows and decides whether to promote.

    The difference's 95% interval comes from a paired bootstrap (the same resampled
    rows score both models), so a shared hard subset does not look like a difference.
    Both artifacts' signatures are checked against ``trusted`` before they are read.
    """
    new = artifacts.load_bundle(challenger, trusted)
    frame = pl.read_parquet(io.BytesIO(dataset))
    _, test_idx = splits.holdout_split(frame.height, seed, test_fraction)
    rows = frame[test_idx.tolist()]
    metric = metric or m.headline(new.signature.task)
    scorer = SCORERS.get(metric)
    if scorer is None or not scorer.supervised:
        return Comparison(metric, float("nan"), None, reasons=[f"metric {metric!r} cannot compare models; kept"])
    score = scorer.fn
    y = rows[new.signature.target].to_numpy()
    ours = np.asarray(new.model.predict(new.features(rows)))
    value = float(score(y, ours))
    if champion is None:
        return Comparison(metric, value, None, decision="promote", reasons=["there is no champion yet"])
    old = artifacts.load_bundle(champion, trusted)
    try:
        theirs = np.asarray(old.model.predict(old.features(rows)))
    except Exception as exc:
        return Comparison(
            metric, value, None, decision="promote", reasons=[f"the champion cannot score this data ({exc})"]
        )
    champion_value = float(score(y, theirs))
    higher = scorer.higher_is_better
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
