"""What a client asks the monitor about one deployment: its counts, serving windows, drift and live
performance; and the ground-truth labels it sends for the last.

Every call answers NotFound for a deployment the tenant never had (:class:`~lepton_monitor.lookups.Deployments`)
and InvalidArgument, naming the field, for a bad argument.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lepton_core.bounds import check_version
from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_core.store import Store
from lepton_monitor import live as live_mod
from lepton_monitor.drift_check import DriftCheck, DriftOut
from lepton_monitor.drift_plot import drift_png
from lepton_monitor.live import LabelIn, LiveData, PerformancePoint
from lepton_monitor.lookups import Deployments, References, check_duration, check_name
from lepton_monitor.options import Options
from lepton_monitor.ports import Announcer, Clock, TritonProbe
from lepton_monitor.records import DeploymentInfo, JobInfo, StatsRecord, VersionInfo
from lepton_monitor.reference import ReferenceRecord
from lepton_monitor.triton import TritonSnapshot
from lepton_monitor.windows import WindowStats

#: The most labels one SendLabels call carries.
MAX_LABELS = 10_000
#: The most features a drift report is asked for.
MAX_FEATURES = 1000
#: The longest request id or feature name a request names.
MAX_TEXT = 256


@dataclass
class ServingOut:
    """A deployment's serving figures over a span, with the windows behind them and Triton's own counts."""

    deployment: str
    version: int
    serving_version: int
    versions: list[int]
    window_seconds: float
    window: WindowStats
    history: list[WindowStats]
    triton: TritonSnapshot | None


@dataclass
class PerformanceOut:
    """A deployment's accuracy (classification) or error (regression) on its labelled predictions."""

    deployment: str
    version: int
    task: str
    metric: str
    overall: PerformancePoint
    windows: list[PerformancePoint]
    slope_per_hour: float | None
    trend: str


def task_of(reference: ReferenceRecord | None, version: VersionInfo | None, job: JobInfo | None) -> str:
    """A model version's task: from its reference or its training job, else guessed from its metrics."""
    for task in (reference.task if reference else "", job.task if job else ""):
        if task in (live_mod.REGRESSION, live_mod.CLASSIFICATION):
            return task
    metrics = version.metrics if version else {}
    return live_mod.CLASSIFICATION if "accuracy" in metrics else live_mod.REGRESSION


class Queries:
    """Answers the per-deployment queries from memory and KV, and takes the labels clients send.

    Args:
        stats: The KV prediction counts (``<tenant>.<deployment>``).
        versions: The model versions (for a version's task).
        jobs: The training jobs (for a version's task).
        deployments: The known deployments.
        references: The model versions' drift references (for a version's task).
        drift: Computes drift reports.
        live: The in-memory logs and labels.
        announcer: Publishes the labels received.
        triton: Asks Triton for a model version's statistics.
        options: Settings.
        clock: Seconds since the epoch.
    """

    def __init__(
        self,
        stats: Store[StatsRecord],
        versions: Store[VersionInfo],
        jobs: Store[JobInfo],
        deployments: Deployments,
        references: References,
        drift: DriftCheck,
        live: LiveData,
        announcer: Announcer,
        triton: TritonProbe,
        options: Options,
        clock: Clock,
    ) -> None:
        self._stats = stats
        self._versions = versions
        self._jobs = jobs
        self._deployments = deployments
        self._references = references
        self._drift = drift
        self._live = live
        self._announcer = announcer
        self._triton = triton
        self._options = options
        self._clock = clock

    async def stats(self, tenant: str, deployment: str) -> StatsRecord:
        """The deployment's prediction counts since it first logged."""
        check_name(deployment, "deployment")
        found = await self._stats.get(f"{tenant}.{deployment}")
        if found is None:
            await self._deployments.get(tenant, deployment)  # NotFound for a deployment nobody has seen
            return StatsRecord(tenant=tenant, deployment=deployment)
        return found.value

    async def serving(
        self, tenant: str, deployment: str, version: int, last_seconds: float, history: bool, triton: bool
    ) -> ServingOut:
        """Serving figures of a version (0: every version) over the last seconds (0: the current window)."""
        check_name(deployment, "deployment")
        check_version(version, zero="every version")
        check_duration(last_seconds, "last_seconds")
        retention_s = self._options.retention_s
        if last_seconds > retention_s:
            raise InvalidArgument(
                f"{last_seconds:g} s is more than the {retention_s:g} s the monitor keeps", field="last_seconds"
            )
        info = await self._deployments.get(tenant, deployment)
        windows = self._live.serving(tenant)
        wanted = version or None
        at = self._clock()
        window = (
            windows.last(deployment, wanted, seconds=last_seconds, at=at)
            if last_seconds
            else windows.current(deployment, wanted, at=at)
        )
        snapshot = None
        if triton:
            if info is None:
                snapshot = TritonSnapshot(
                    reachable=False, url="", model="", version="", error="no deployment.ready seen for it"
                )
            else:
                triton_version = str(version) if version else info.triton_version or str(info.model_version)
                snapshot = await self._triton(info.triton_url, info.triton_model, triton_version)
        return ServingOut(
            deployment=deployment,
            version=version,
            serving_version=info.model_version if info else 0,
            versions=self._live.versions(tenant, deployment),
            window_seconds=float(self._options.window_s),
            window=window,
            history=windows.history(deployment, wanted) if history else [],
            triton=snapshot,
        )

    async def drift(
        self,
        tenant: str,
        deployment: str,
        version: int,
        last_seconds: float,
        features: Sequence[str] = (),
        png: bool = False,
    ) -> DriftOut:
        """The drift report of a version (0: the serving one) over the last seconds (0: the drift window)."""
        check_name(deployment, "deployment")
        check_version(version, zero="the serving version")
        check_duration(last_seconds, "last_seconds")
        if len(features) > MAX_FEATURES:
            raise InvalidArgument(f"{len(features)} features; at most {MAX_FEATURES} are allowed", field="features")
        for i, name in enumerate(features):
            if len(name) > MAX_TEXT:
                raise InvalidArgument(f"is longer than {MAX_TEXT} characters: {shown(name)}", field=f"features[{i}]")
        info, version = await self._deployments.serving_version(tenant, deployment, version)
        seconds = last_seconds or self._options.drift_window_s
        model = info.model_name if info else deployment
        out = await self._drift.run(tenant, deployment, model, version, seconds, self._clock(), list(features))
        if png:
            out.png = await asyncio.to_thread(
                drift_png, out.report, title=f"{deployment} v{version}: live vs training data"
            )
        return out

    async def send_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn]) -> tuple[int, int]:
        """Stores ground truth and announces it; returns (accepted, matched now)."""
        check_name(deployment, "deployment")
        if not labels:
            raise InvalidArgument("send at least one label", field="labels")
        if len(labels) > MAX_LABELS:
            raise InvalidArgument(f"{len(labels)} labels; at most {MAX_LABELS} per call", field="labels")
        for i, label in enumerate(labels):
            if not label.request_id:
                raise InvalidArgument("is required", field=f"labels[{i}].request_id")
            if len(label.request_id) > MAX_TEXT:
                raise InvalidArgument(f"is longer than {MAX_TEXT} characters", field=f"labels[{i}].request_id")
            if label.row < 0:
                raise InvalidArgument(f"must be >= 0, got {label.row}", field=f"labels[{i}].row")
            if not math.isfinite(label.value):
                raise InvalidArgument(f"must be a finite number, got {label.value}", field=f"labels[{i}].value")
        await self._deployments.get(tenant, deployment)
        at = self._clock()
        await self._announcer.labels(tenant, deployment, labels, at)
        matched = self._live.add_labels(tenant, deployment, labels, at)
        return len(labels), matched

    def apply_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        """Labels read back from the stream (after a restart)."""
        if at >= self._clock() - self._options.retention_s:
            self._live.add_labels(tenant, deployment, labels, at)

    async def performance(self, tenant: str, deployment: str, version: int, task: str) -> PerformanceOut:
        """Live performance of a version (0: the serving one); the task is the model's when empty."""
        if task not in ("", live_mod.REGRESSION, live_mod.CLASSIFICATION):
            raise InvalidArgument(f"must be empty, regression or classification, got {shown(task)}", field="task")
        info, version = await self._deployments.serving_version(tenant, deployment, version)
        if not task:
            task = await self._task(tenant, info.model_name if info else deployment, version, info)
        overall, points = self._live.performance(tenant, deployment, version, task)
        metric = "accuracy" if task == live_mod.CLASSIFICATION else "rmse"
        slope, direction = live_mod.trend(points, metric)
        return PerformanceOut(
            deployment=deployment,
            version=version,
            task=task,
            metric=metric,
            overall=overall,
            windows=points,
            slope_per_hour=slope,
            trend=direction,
        )

    async def _task(self, tenant: str, model: str, version: int, info: DeploymentInfo | None) -> str:
        reference = self._references.cached(tenant, model, version)
        stored = await self._versions.get(f"{tenant}.mv.{model}.{version}")
        v = stored.value if stored else None
        job = None
        if v is not None and v.training_job_id:
            found = await self._jobs.get(f"{tenant}.job.{v.training_job_id}")
            job = found.value if found else None
        return task_of(reference, v, job)


__all__ = ["PerformanceOut", "Queries", "ServingOut", "task_of"]
