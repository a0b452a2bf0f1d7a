"""The monitor's logic, independent of gRPC and protobuf.

:class:`Monitor` takes prediction logs and platform events (already decoded by :mod:`lepton_monitor.api`),
answers queries, and runs the evaluation loop (:meth:`Monitor.tick`) that turns rules and drift into
incidents, incidents into events, and incidents under a retraining policy into retraining requests.

State: recent logs live in memory (:class:`~lepton_monitor.live.LiveData`) and are read back from the
PREDICTIONS stream at start-up; everything else is in KV ``monitor`` (:mod:`lepton_monitor.records`).
One monitor process evaluates rules (rule states have one writer); see docs/monitoring.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import math
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from lepton_core.store import Store
from lepton_core.telemetry import extract_context, inject_context
from lepton_core.validation import invalid_argument_from
from lepton_monitor import live as live_mod
from lepton_monitor.drift import DRIFT, INSUFFICIENT_DATA, DriftReport, DriftThresholds, drift_report
from lepton_monitor.drift_plot import drift_png
from lepton_monitor.live import LabelIn, LiveData, LogEntry, PerformancePoint
from lepton_monitor.prometheus import MetricFamily
from lepton_monitor.records import (
    AlertKind,
    AlertRecord,
    AlertsRecord,
    DatasetIndex,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    RetrainingRequest,
    RulesRecord,
    RuleStatesRecord,
    StatsRecord,
    VersionInfo,
)
from lepton_monitor.reference import PREDICTION, ReferenceRecord, build_reference
from lepton_monitor.rules import Rule, RuleState, Transition
from lepton_monitor.triton import TritonSnapshot
from lepton_monitor.windows import METRICS, WindowStats

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("lepton.monitor")

#: How long a call naming an unknown deployment waits for its deployment.ready event.
UNKNOWN_DEPLOYMENT_WAIT_S = 1.0
#: How many recent message ids (a batch's, or a single log's) a stats record keeps for redelivery
#: de-duplication.
RECENT_IDS = 512
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DRIFT_METRICS = {
    "drifted_features": "features (and the prediction) whose drift verdict is drift",
    "psi_max": "the greatest PSI over the features",
}
LIVE_METRICS = {
    "live_accuracy": "accuracy of labelled predictions (classification)",
    "live_rmse": "root mean squared error of labelled predictions (regression)",
    "live_mae": "mean absolute error of labelled predictions (regression)",
}
#: Every metric a rule may name.
RULE_METRICS: dict[str, str] = {**METRICS, **DRIFT_METRICS, **LIVE_METRICS}
DRIFT_RULE_NAME = "drift"
#: How long a failed reference build is remembered before the next try.
REFERENCE_RETRY_S = 60.0
MAX_PAGE = 500
DEFAULT_PAGE = 50
#: Slack between a log's time and when the stream stored it, for time-range scans.
STREAM_SLACK_S = 60.0
#: Most rules per deployment.
MAX_RULES = 100

R = TypeVar("R", bound=BaseModel)
#: Parts of the rule states that change on every evaluation; a state is written to KV only when the rest does.
_VOLATILE: Any = {
    "states": {"__all__": {"last_value", "last_evaluated_at"}},
    "drift": {"last_value", "last_evaluated_at"},
}


# ------------------------------------------------------------------------------------------------ ports


class Announcer(Protocol):
    """Publishes what the monitor decides (implemented with events in :mod:`lepton_monitor.api`)."""

    async def incident(self, alert: AlertRecord, transition: Literal["fired", "resolved"]) -> None:
        """``monitor.alert.fired/resolved`` or ``monitor.drift.detected/resolved``, id from the incident."""

    async def retraining(self, request: RetrainingRequest) -> None:
        """``monitor.retraining.requested``, id from the incident."""

    async def labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        """``monitor.labels.received``: the labels, so a restarted monitor can read them back."""


class LogSource(Protocol):
    """Reads prediction logs back from the PREDICTIONS stream."""

    def scan(
        self, tenant: str, deployment: str | None, *, start_sequence: int | None, start_time: float | None
    ) -> AsyncGenerator[LogEntry, None]:
        """Logs in stream order from a sequence or a time (or the start); tenant ``*`` reads every tenant's."""


ObjectReader = Callable[[ObjectRefRecord], Awaitable[bytes]]
TritonProbe = Callable[[str, str, str], Awaitable[TritonSnapshot]]


@dataclass
class Stores:
    """The typed views of KV ``monitor`` (one record type each; the keys never overlap)."""

    stats: Store[StatsRecord]
    deployments: Store[DeploymentInfo]
    versions: Store[VersionInfo]
    jobs: Store[JobInfo]
    dataset_versions: Store[DatasetVersionInfo]
    datasets: Store[DatasetIndex]
    references: Store[ReferenceRecord]
    rules: Store[RulesRecord]
    states: Store[RuleStatesRecord]
    policies: Store[PolicyRecord]
    alerts: Store[AlertsRecord]


@dataclass(frozen=True)
class Options:
    """The settings the core uses (built from :class:`~lepton_monitor.settings.MonitorSettings`)."""

    window_s: int = 60
    retention_windows: int = 60
    max_samples: int = 10_000
    drift_rows_per_window: int = 2_000
    drift_window_s: float = 900.0
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    drift_for_evaluations: int = 2
    drift_cooldown_s: float = 600.0
    reference_max_rows: int = 100_000
    log_scan_limit: int = 100_000
    alert_history: int = 500


# ------------------------------------------------------------------------------------------------ outputs


@dataclass
class ServingOut:
    deployment: str
    version: int
    serving_version: int
    versions: list[int]
    window_seconds: float
    window: WindowStats
    history: list[WindowStats]
    triton: TritonSnapshot | None


@dataclass
class DriftOut:
    deployment: str
    version: int
    start: float
    end: float
    report: DriftReport
    reference_dataset_version_id: str
    png: bytes = b""


@dataclass
class PerformanceOut:
    deployment: str
    version: int
    task: str
    metric: str
    overall: PerformancePoint
    windows: list[PerformancePoint]
    slope_per_hour: float | None
    trend: str


@dataclass
class RuleStatus:
    rule: Rule
    state: RuleState


@dataclass
class FeatureRange:
    feature: str
    low: float | None = None
    high: float | None = None


@dataclass
class LogQuery:
    """A filter over prediction logs; None or empty means no condition."""

    deployment: str | None = None
    version: int | None = None
    start: float | None = None
    end: float | None = None
    errors_only: bool = False
    trace_id: str = ""
    request_id: str = ""
    ranges: list[FeatureRange] = field(default_factory=list)


@dataclass
class LogPage:
    logs: list[LogEntry]
    next_token: str
    scanned: int


@dataclass
class LogSummary:
    logs: int = 0
    errors: int = 0
    rows: int = 0
    latencies: list[float] = field(default_factory=list)
    by_version: dict[int, int] = field(default_factory=dict)
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    slowest: list[LogEntry] = field(default_factory=list)
    truncated: bool = False

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) if self.latencies else None


# ------------------------------------------------------------------------------------------------ helpers


def check_name(value: str, field: str) -> str:
    """A deployment or rule name: 1-64 lower-case letters, digits, '-' or '_'."""
    if not value:
        raise InvalidArgument("is required", field=field)
    if not NAME_RE.match(value):
        raise InvalidArgument(
            f"{value!r} is not a valid name: use 1-64 lower-case letters, digits, '-' or '_'", field=field
        )
    return value


def incident_id(tenant: str, deployment: str, rule: str, fired_at: float) -> str:
    digest = hashlib.sha256(f"{tenant}\x00{deployment}\x00{rule}\x00{fired_at!r}".encode()).hexdigest()
    return f"inc_{digest[:20]}"


def retraining_job_id(tenant: str, incident: str) -> str:
    """The trainer's job id for the retraining an incident asks for: one incident, one job."""
    return "job_rt_" + hashlib.sha256(f"{tenant}\x00{incident}".encode()).hexdigest()[:20]


async def mutate(store: Store[R], key: str, change: Callable[[R | None], R | None]) -> R | None:
    """Applies ``change`` to a record with compare-and-set, re-reading on a concurrent write.

    ``change`` gets the current value (None when absent) and returns the new one, or None to write nothing.
    """
    for attempt in range(50):
        current = await store.get(key)
        updated = change(current.value if current else None)
        if updated is None:
            return current.value if current else None
        try:
            if current is None:
                await store.create(key, updated)
            else:
                await store.update(key, updated, current.revision)
            return updated
        except Conflict:
            await asyncio.sleep(0.005 * (attempt + 1))
    raise Conflict(f"{key} kept changing; will retry")


def _drifted_count(report: DriftReport | None) -> float | None:
    if report is None:
        return None
    results = [*report.features, *([report.prediction] if report.prediction else [])]
    if not any(r.verdict != INSUFFICIENT_DATA for r in results):
        return None
    return float(len(report.drifted))


def _psi_max(report: DriftReport | None) -> float | None:
    if report is None:
        return None
    values = [f.psi for f in report.features if f.psi is not None]
    return max(values) if values else None


def _psi_map(report: DriftReport) -> dict[str, float]:
    out = {f.name: f.psi for f in report.features if f.psi is not None}
    if report.prediction is not None and report.prediction.psi is not None:
        out[PREDICTION] = report.prediction.psi
    return out


def _task_of(reference: ReferenceRecord | None, version: VersionInfo | None, job: JobInfo | None) -> str:
    for task in (reference.task if reference else "", job.task if job else ""):
        if task in (live_mod.REGRESSION, live_mod.CLASSIFICATION):
            return task
    metrics = version.metrics if version else {}
    return live_mod.CLASSIFICATION if "accuracy" in metrics else live_mod.REGRESSION


def matches(entry: LogEntry, q: LogQuery) -> bool:
    """Whether a log passes every condition of ``q`` (a feature range holds when one logged row is in all)."""
    if q.deployment and entry.deployment != q.deployment:
        return False
    if q.version and entry.version != q.version:
        return False
    if q.start is not None and entry.time < q.start:
        return False
    if q.end is not None and entry.time > q.end:
        return False
    if q.errors_only and not entry.error:
        return False
    if q.trace_id and entry.trace_id != q.trace_id:
        return False
    if q.request_id and entry.request_id != q.request_id:
        return False
    if q.ranges:
        index = {name: j for j, name in enumerate(entry.feature_names)}
        if any(r.feature not in index for r in q.ranges):
            return False
        return any(
            all(
                (r.low is None or row[index[r.feature]] >= r.low)
                and (r.high is None or row[index[r.feature]] <= r.high)
                for r in q.ranges
            )
            for row in entry.rows
        )
    return True


# ------------------------------------------------------------------------------------------------ monitor


class Monitor:
    """The monitor; see the module docstring.

    Args:
        stores: KV views.
        objects: Reads a digest-verified object (training data, artifacts).
        announcer: Publishes incidents, retraining requests and labels.
        logs: Reads prediction logs back from the stream.
        triton: Asks Triton for a model version's statistics (url, model, version).
        options: Settings.
        clock: Seconds since the epoch (a test may pass its own).
    """

    def __init__(
        self,
        stores: Stores,
        objects: ObjectReader,
        announcer: Announcer,
        logs: LogSource,
        triton: TritonProbe,
        options: Options,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = stores
        self._objects = objects
        self._announcer = announcer
        self._logs = logs
        self._triton = triton
        self.options = options
        self._clock = clock
        self.live = LiveData(
            options.window_s, options.retention_windows, options.max_samples, options.drift_rows_per_window
        )
        self._references: dict[tuple[str, str, int], ReferenceRecord] = {}
        self._reference_failures: dict[tuple[str, str, int], tuple[float, str]] = {}
        self._reference_locks: dict[tuple[str, str, int], asyncio.Lock] = {}
        self._states: dict[tuple[str, str], RuleStatesRecord] = {}
        self._known: dict[tuple[str, str], DeploymentInfo] = {}
        self.last_drift: dict[tuple[str, str], tuple[int, DriftReport]] = {}
        self.last_triton: dict[tuple[str, str], TritonSnapshot] = {}
        self.firing: dict[tuple[str, str], list[AlertRecord]] = {}
        self._tick_lock = asyncio.Lock()
        self.triton_snapshots = False
        """Whether each evaluation also asks Triton for its statistics (for the Prometheus endpoint)."""

    @property
    def retention_s(self) -> float:
        return float(self.options.window_s * self.options.retention_windows)

    # ------------------------------------------------------------------------------------------ intake

    async def record_log(self, entry: LogEntry, *, persist: bool = True) -> bool:
        """Counts one prediction log in memory (and, with ``persist``, in the KV stats), once per log id.

        Returns:
            Whether the in-memory windows counted it (False: seen before, or older than the retention).
        """
        return await self.record_logs([entry], message_id=entry.log_id, persist=persist) == 1

    async def record_logs(
        self,
        entries: list[LogEntry],
        *,
        message_id: str,
        persist: bool = True,
        unlogged: int = 0,
        tenant: str = "",
        deployment: str = "",
    ) -> int:
        """Counts the logs of one stream message: in memory, and with ``persist`` in the KV stats.

        The KV stats take the whole message in one compare-and-set per deployment, once per
        ``message_id`` (a redelivered message is not counted twice); the in-memory windows count each log
        once per log id. ``unlogged`` requests (served, not logged: sample rate, rate cap) of ``tenant``'s
        ``deployment`` are counted in its stats too.

        Returns:
            How many logs the in-memory windows counted.
        """
        if persist:
            groups: dict[tuple[str, str], list[LogEntry]] = {}
            if unlogged and tenant and deployment:
                groups[(tenant, deployment)] = []
            for entry in entries:
                groups.setdefault((entry.tenant, entry.deployment), []).append(entry)
            for (t, d), group in groups.items():
                extra = unlogged if (t, d) == (tenant, deployment) else 0
                await self._count(t, d, group, message_id, extra)
        return sum(self.live.add(entry) for entry in entries)

    async def _count(
        self, tenant: str, deployment: str, entries: list[LogEntry], message_id: str, unlogged: int
    ) -> None:
        def change(stats: StatsRecord | None) -> StatsRecord | None:
            stats = stats or StatsRecord(tenant=tenant, deployment=deployment)
            if message_id in stats.recent_log_ids:
                return None
            by_version = dict(stats.requests_by_version)
            for entry in entries:
                by_version[entry.version] = by_version.get(entry.version, 0) + 1
            return stats.model_copy(
                update={
                    "logged_requests": stats.logged_requests + len(entries),
                    "logged_rows": stats.logged_rows + sum(e.batch_rows for e in entries),
                    "errors": stats.errors + sum(1 for e in entries if e.error),
                    "unlogged_requests": stats.unlogged_requests + unlogged,
                    "requests_by_version": by_version,
                    "recent_log_ids": [*stats.recent_log_ids, message_id][-RECENT_IDS:],
                }
            )

        await mutate(self.s.stats, f"{tenant}.{deployment}", change)

    def replay_start(self) -> float:
        """The oldest time the windows keep: where reading back starts after a restart."""
        return self._clock() - self.retention_s

    async def replay(self, since: float | None = None) -> int:
        """Reads the logs of the retention span back from the stream into memory (at start-up).

        Returns:
            Logs counted.
        """
        start = self.replay_start() if since is None else since
        counted = 0
        async with contextlib.aclosing(
            self._logs.scan("*", None, start_sequence=None, start_time=start - STREAM_SLACK_S)
        ) as logs:
            async for entry in logs:
                counted += int(self.live.add(entry))
        return counted

    async def on_dataset_version(self, info: DatasetVersionInfo) -> None:
        await self.s.dataset_versions.put(f"{info.tenant}.dsv.{info.version_id}", info)

        def change(index: DatasetIndex | None) -> DatasetIndex | None:
            index = index or DatasetIndex(
                tenant=info.tenant, dataset_id=info.dataset_id, dataset_name=info.dataset_name
            )
            if info.version_id in index.version_ids:
                return None
            return index.model_copy(update={"version_ids": [*index.version_ids, info.version_id]})

        await mutate(self.s.datasets, f"{info.tenant}.ds.{info.dataset_id}", change)

    async def on_training_completed(self, job: JobInfo) -> None:
        await self.s.jobs.put(f"{job.tenant}.job.{job.job_id}", job)

    async def on_version_created(self, version: VersionInfo) -> None:
        await self.s.versions.put(f"{version.tenant}.mv.{version.model_name}.{version.version}", version)

    async def on_deployment_ready(self, ready: DeploymentInfo) -> DeploymentInfo:
        """Records what a deployment serves now (keeping its retraining history), then builds the reference."""

        def change(info: DeploymentInfo | None) -> DeploymentInfo:
            history = (
                {}
                if info is None
                else info.model_dump(
                    include={
                        "last_retraining_at",
                        "last_retraining_incident",
                        "last_retraining_from_version",
                        "last_retraining_dataset_version_id",
                    }
                )
            )
            return ready.model_copy(update=history)

        stored = await mutate(self.s.deployments, f"{ready.tenant}.dep.{ready.name}", change)
        assert stored is not None
        self._known[(stored.tenant, stored.name)] = stored
        try:
            await self.reference(stored.tenant, stored.model_name, stored.model_version)
        except FailedPrecondition as exc:
            log.warning("no drift reference yet for %s v%d: %s", stored.model_name, stored.model_version, exc)
        return stored

    # ------------------------------------------------------------------------------------------ lookups

    async def deployment(self, tenant: str, name: str, field: str = "deployment") -> DeploymentInfo | None:
        """What a deployment of ``tenant`` serves; NotFound when the monitor knows nothing of it.

        A deployment is known from its ``deployment.ready`` event or from prediction logs; None means only
        the logs are known (no deployment event seen).
        """
        check_name(name, field)
        deadline = asyncio.get_running_loop().time() + UNKNOWN_DEPLOYMENT_WAIT_S
        while True:
            found = self._known.get((tenant, name))
            if found is None:
                stored = await self.s.deployments.get(f"{tenant}.dep.{name}")
                if stored is not None:
                    found = self._known[(tenant, name)] = stored.value
            if found is not None or name in self.live.deployments(tenant):
                return found
            # A call right after the deployment became ready can beat its deployment.ready event
            # here: give the event a moment before saying the deployment does not exist.
            if asyncio.get_running_loop().time() >= deadline:
                raise NotFound(f"deployment {name!r} does not exist (no deployment event or prediction log seen)")
            await asyncio.sleep(0.05)

    async def _serving_version(self, tenant: str, name: str, version: int) -> tuple[DeploymentInfo | None, int]:
        info = await self.deployment(tenant, name)
        if version < 0:
            raise InvalidArgument(
                f"must be 0 (the serving version) or a version number, got {version}", field="version"
            )
        if version:
            return info, version
        if info is not None:
            return info, info.model_version
        versions = self.live.versions(tenant, name)
        if not versions:
            raise FailedPrecondition(f"deployment {name!r} has no serving version yet", field="version")
        return info, versions[-1]

    async def reference(self, tenant: str, model: str, version: int) -> ReferenceRecord:
        """The drift reference of a model version: from memory, KV, or built now from the training data.

        Raises:
            FailedPrecondition: When it cannot be built (yet): the version or its data is unknown or unreadable.
        """
        key = (tenant, model, version)
        found = self._references.get(key)
        if found is not None:
            return found
        lock = self._reference_locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._references.get(key)
            if found is not None:
                return found
            kv_key = f"{tenant}.ref.{model}.{version}"
            stored = await self.s.references.get(kv_key)
            if stored is not None:
                self._references[key] = stored.value
                return stored.value
            failed = self._reference_failures.get(key)
            if failed is not None and self._clock() - failed[0] < REFERENCE_RETRY_S:
                raise FailedPrecondition(failed[1], field="version")
            try:
                built = await self._build_reference(tenant, model, version)
            except FailedPrecondition as exc:
                self._reference_failures[key] = (self._clock(), exc.message)
                raise
            await self.s.references.put(kv_key, built)
            self._references[key] = built
            self._reference_failures.pop(key, None)
            return built

    async def _build_reference(self, tenant: str, model: str, version: int) -> ReferenceRecord:
        stored = await self.s.versions.get(f"{tenant}.mv.{model}.{version}")
        if stored is None:
            raise FailedPrecondition(
                f"{model} version {version} is unknown to the monitor (no registry.version.created seen), "
                "so it has no drift reference"
            )
        v = stored.value
        try:
            training = await self._objects(v.dataset_object)
        except Exception as exc:
            raise FailedPrecondition(f"the training data of {model} v{version} cannot be read: {exc}") from exc
        try:
            artifact: bytes | None = await self._objects(v.artifact)
        except Exception as exc:
            log.warning("artifact of %s v%d not readable: %s", model, version, exc)
            artifact = None
        raw, raw_id = await self._raw_upload(tenant, v.dataset_version_id)
        return await asyncio.to_thread(
            build_reference,
            tenant=tenant,
            model_name=model,
            version=version,
            features=v.features,
            training=training,
            training_version_id=v.dataset_version_id,
            artifact=artifact,
            raw=raw,
            raw_version_id=raw_id,
            max_rows=self.options.reference_max_rows,
            built_at=self._clock(),
        )

    async def _raw_upload(self, tenant: str, version_id: str) -> tuple[bytes | None, str]:
        """The Parquet bytes of the upload a recipe-made version derives from (None for an upload)."""
        current = version_id
        for _ in range(50):
            found = await self.s.dataset_versions.get(f"{tenant}.dsv.{current}")
            if found is None:
                return None, ""
            info = found.value
            if info.origin == "upload" or not info.parent_version_id:
                if current == version_id:
                    return None, ""
                try:
                    return await self._objects(info.object), current
                except Exception as exc:
                    log.warning("raw upload %s not readable: %s", current, exc)
                    return None, ""
            current = info.parent_version_id
        return None, ""

    # ------------------------------------------------------------------------------------------ queries

    async def stats(self, tenant: str, deployment: str) -> StatsRecord:
        check_name(deployment, "deployment")
        found = await self.s.stats.get(f"{tenant}.{deployment}")
        if found is None:
            await self.deployment(tenant, deployment)  # NotFound for a deployment nobody has seen
            return StatsRecord(tenant=tenant, deployment=deployment)
        return found.value

    async def serving(
        self, tenant: str, deployment: str, version: int, last_seconds: float, history: bool, triton: bool
    ) -> ServingOut:
        info = await self.deployment(tenant, deployment)
        if version < 0:
            raise InvalidArgument(f"must be 0 (every version) or a version number, got {version}", field="version")
        if not (math.isfinite(last_seconds) and last_seconds >= 0):
            raise InvalidArgument(
                f"must be 0 or a positive number of seconds, got {last_seconds}", field="last_seconds"
            )
        if last_seconds > self.retention_s:
            raise InvalidArgument(
                f"{last_seconds:g} s is more than the {self.retention_s:g} s the monitor keeps", field="last_seconds"
            )
        windows = self.live.serving(tenant)
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
            versions=self.live.versions(tenant, deployment),
            window_seconds=float(self.options.window_s),
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
        info, version = await self._serving_version(tenant, deployment, version)
        if not (math.isfinite(last_seconds) and last_seconds >= 0):
            raise InvalidArgument(
                f"must be 0 or a positive number of seconds, got {last_seconds}", field="last_seconds"
            )
        seconds = last_seconds or self.options.drift_window_s
        model = info.model_name if info else deployment
        out = await self._drift(tenant, deployment, model, version, seconds, self._clock(), list(features))
        if png:
            out.png = await asyncio.to_thread(
                drift_png, out.report, title=f"{deployment} v{version}: live vs training data"
            )
        return out

    async def _drift(
        self, tenant: str, deployment: str, model: str, version: int, seconds: float, at: float, features: list[str]
    ) -> DriftOut:
        reference = await self.reference(tenant, model, version)
        columns = {c["name"]: c for c in reference.columns}
        sample = self.live.drift_sample(tenant, deployment, version, seconds=seconds, at=at)
        if features:
            if len(set(features)) != len(features):
                raise InvalidArgument("lists a feature twice", field="features")
            unknown = [f for f in features if f not in columns]
            if unknown:
                raise InvalidArgument(
                    f"unknown feature(s) {unknown}; the reference has {sorted(columns)}", field="features"
                )
            names = list(features)
        else:
            names = [n for n in reference.features if n in columns]
        empty = np.empty(0, dtype=np.float64)
        live: dict[str, Any] = {n: sample.columns.get(n, empty) for n in names}
        live[PREDICTION] = sample.predictions
        report = drift_report(
            columns,
            live,
            names,
            prediction_reference=reference.prediction,
            prediction_column=PREDICTION,
            thresholds=self.options.thresholds,
        )
        return DriftOut(
            deployment=deployment,
            version=version,
            start=sample.start,
            end=sample.end,
            report=report,
            reference_dataset_version_id=reference.dataset_version_id,
        )

    async def send_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn]) -> tuple[int, int]:
        """Stores ground truth and announces it; returns (accepted, matched now)."""
        await self.deployment(tenant, deployment)
        if not labels:
            raise InvalidArgument("send at least one label", field="labels")
        for i, label in enumerate(labels):
            if not label.request_id:
                raise InvalidArgument("is required", field=f"labels[{i}].request_id")
            if len(label.request_id) > 256:
                raise InvalidArgument("is longer than 256 characters", field=f"labels[{i}].request_id")
            if label.row < 0:
                raise InvalidArgument(f"must be >= 0, got {label.row}", field=f"labels[{i}].row")
            if not math.isfinite(label.value):
                raise InvalidArgument(f"must be a finite number, got {label.value}", field=f"labels[{i}].value")
        at = self._clock()
        await self._announcer.labels(tenant, deployment, labels, at)
        matched = self.live.add_labels(tenant, deployment, labels, at)
        return len(labels), matched

    def apply_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        """Labels read back from the stream (after a restart)."""
        if at >= self._clock() - self.retention_s:
            self.live.add_labels(tenant, deployment, labels, at)

    async def performance(self, tenant: str, deployment: str, version: int, task: str) -> PerformanceOut:
        info, version = await self._serving_version(tenant, deployment, version)
        if task not in ("", live_mod.REGRESSION, live_mod.CLASSIFICATION):
            raise InvalidArgument(f"must be empty, regression or classification, got {task!r}", field="task")
        if not task:
            task = await self._task(tenant, info.model_name if info else deployment, version, info)
        overall, points = self.live.performance(tenant, deployment, version, task)
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
        reference = self._references.get((tenant, model, version))
        stored = await self.s.versions.get(f"{tenant}.mv.{model}.{version}")
        v = stored.value if stored else None
        job = None
        if v is not None and v.training_job_id:
            found = await self.s.jobs.get(f"{tenant}.job.{v.training_job_id}")
            job = found.value if found else None
        return _task_of(reference, v, job)

    # ------------------------------------------------------------------------------------------ rules

    async def set_rules(self, tenant: str, deployment: str, rules: Sequence[Rule]) -> list[RuleStatus]:
        await self.deployment(tenant, deployment)
        if len(rules) > MAX_RULES:
            raise InvalidArgument(f"{len(rules)} rules; at most {MAX_RULES} are allowed", field="rules")
        names = [r.name for r in rules]
        for i, rule in enumerate(rules):
            check_name(rule.name, f"rules[{i}].name")
            if rule.name == DRIFT_RULE_NAME:
                raise InvalidArgument(
                    f"{DRIFT_RULE_NAME!r} is the built-in drift check's name", field=f"rules[{i}].name"
                )
            if rule.name in names[:i]:
                raise InvalidArgument(f"{rule.name!r} names two rules", field=f"rules[{i}].name")
            if rule.metric not in RULE_METRICS:
                raise InvalidArgument(
                    f"unknown metric {rule.metric!r}; use one of {sorted(RULE_METRICS)}", field=f"rules[{i}].metric"
                )
            if rule.window_seconds > self.retention_s:
                raise InvalidArgument(
                    f"{rule.window_seconds:g} s is more than the {self.retention_s:g} s the monitor keeps",
                    field=f"rules[{i}].window_seconds",
                )
        await self.s.rules.put(
            f"{tenant}.rules.{deployment}", RulesRecord(tenant=tenant, deployment=deployment, rules=list(rules))
        )
        return await self.list_rules(tenant, deployment)

    async def list_rules(self, tenant: str, deployment: str) -> list[RuleStatus]:
        await self.deployment(tenant, deployment)
        found = await self.s.rules.get(f"{tenant}.rules.{deployment}")
        states = await self._load_states(tenant, deployment)
        out = []
        for rule in found.value.rules if found else []:
            state = states.states.get(rule.name)
            if state is None or state.rule != rule:
                state = RuleState.for_rule(rule)
            out.append(RuleStatus(rule=rule, state=state))
        return out

    async def alerts(self, tenant: str, deployment: str, firing_only: bool, limit: int) -> list[AlertRecord]:
        if limit < 0:
            raise InvalidArgument(f"must be >= 0, got {limit}", field="limit")
        if deployment:
            await self.deployment(tenant, deployment)
            keys = [f"{tenant}.alerts.{deployment}"]
        else:
            keys = await self.s.alerts.keys(f"{tenant}.alerts.*")
        found: list[AlertRecord] = []
        for key in keys:
            record = await self.s.alerts.get(key)
            if record is not None:
                found.extend(a for a in record.value.alerts if not firing_only or a.state == "firing")
        found.sort(key=lambda a: a.fired_at, reverse=True)
        return found[: limit or 100]

    async def set_policy(self, policy: PolicyRecord) -> PolicyRecord:
        await self.deployment(policy.tenant, policy.deployment, "policy.deployment")
        if not (math.isfinite(policy.min_interval_seconds) and policy.min_interval_seconds >= 0):
            raise InvalidArgument(
                f"must be 0 or a positive number of seconds, got {policy.min_interval_seconds}",
                field="policy.min_interval_seconds",
            )
        for i, name in enumerate(policy.alert_rules):
            check_name(name, f"policy.alert_rules[{i}]")
        if policy.alert_rules and not policy.on_alert:
            raise InvalidArgument("names rules but on_alert is off", field="policy.alert_rules")
        stored = policy.model_copy(update={"min_interval_seconds": policy.min_interval_seconds or 3600.0})
        await self.s.policies.put(f"{policy.tenant}.policy.{policy.deployment}", stored)
        return stored

    async def policy(self, tenant: str, deployment: str) -> PolicyRecord:
        await self.deployment(tenant, deployment)
        found = await self.s.policies.get(f"{tenant}.policy.{deployment}")
        return found.value if found else PolicyRecord(tenant=tenant, deployment=deployment)

    # ------------------------------------------------------------------------------------------ logs

    def _check_query(self, q: LogQuery) -> None:
        if q.version is not None and q.version < 0:
            raise InvalidArgument(f"must be >= 0, got {q.version}", field="version")
        if q.start is not None and q.end is not None and q.end < q.start:
            raise InvalidArgument("is before start_time", field="end_time")
        if q.trace_id and not re.fullmatch(r"[0-9a-f]{32}", q.trace_id):
            raise InvalidArgument("must be 32 lower-case hex digits (a W3C trace id)", field="trace_id")
        for i, r in enumerate(q.ranges):
            if not r.feature:
                raise InvalidArgument("is required", field=f"feature_ranges[{i}].feature")
            if r.low is None and r.high is None:
                raise InvalidArgument("needs a min, a max or both", field=f"feature_ranges[{i}]")
            for bound, name in ((r.low, "min"), (r.high, "max")):
                if bound is not None and not math.isfinite(bound):
                    raise InvalidArgument("must be a finite number", field=f"feature_ranges[{i}].{name}")
            if r.low is not None and r.high is not None and r.high < r.low:
                raise InvalidArgument("is below min", field=f"feature_ranges[{i}].max")

    async def query_logs(self, tenant: str, q: LogQuery, page_size: int, page_token: str) -> LogPage:
        if q.deployment:
            await self.deployment(tenant, q.deployment)
        self._check_query(q)
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"must be between 0 and {MAX_PAGE}, got {page_size}", field="page_size")
        size = page_size or DEFAULT_PAGE
        start_sequence, skip = None, 0
        if page_token:
            seq, _, index = page_token.partition(".")
            if not seq.isdigit() or int(seq) < 1 or (index and not index.isdigit()):
                raise InvalidArgument("is not a token this call returned", field="page_token")
            start_sequence, skip = int(seq), int(index or 0)
        out: list[LogEntry] = []
        scanned = 0
        next_token = ""
        start_time = None if q.start is None or start_sequence else q.start - STREAM_SLACK_S
        async with contextlib.aclosing(
            self._logs.scan(tenant, q.deployment or None, start_sequence=start_sequence, start_time=start_time)
        ) as logs:
            async for entry in logs:
                if entry.sequence == start_sequence and entry.index < skip:
                    continue  # returned by the previous page (the token points into a batch)
                scanned += 1
                if q.end is not None and entry.time > q.end + STREAM_SLACK_S:
                    break
                if matches(entry, q):
                    out.append(entry)
                    if len(out) >= size:
                        next_token = f"{entry.sequence}.{entry.index + 1}"
                        break
                if scanned >= self.options.log_scan_limit:
                    next_token = f"{entry.sequence}.{entry.index + 1}"
                    break
        return LogPage(logs=out, next_token=next_token, scanned=scanned)

    async def summarize_logs(self, tenant: str, q: LogQuery, top: int) -> LogSummary:
        if q.deployment:
            await self.deployment(tenant, q.deployment)
        self._check_query(q)
        if top < 0 or top > 100:
            raise InvalidArgument(f"must be between 0 and 100, got {top}", field="top")
        top = top or 5
        summary = LogSummary()
        errors: Counter[str] = Counter()
        slowest: list[tuple[float, int, LogEntry]] = []
        scanned = 0
        start_time = None if q.start is None else q.start - STREAM_SLACK_S
        async with contextlib.aclosing(
            self._logs.scan(tenant, q.deployment or None, start_sequence=None, start_time=start_time)
        ) as logs:
            async for entry in logs:
                scanned += 1
                if q.end is not None and entry.time > q.end + STREAM_SLACK_S:
                    break
                if matches(entry, q):
                    summary.logs += 1
                    summary.rows += entry.batch_rows
                    summary.by_version[entry.version] = summary.by_version.get(entry.version, 0) + 1
                    if entry.error:
                        summary.errors += 1
                        errors[entry.error] += 1
                    if entry.latency_ms is not None:
                        summary.latencies.append(entry.latency_ms)
                        item = (entry.latency_ms, -entry.sequence, entry)
                        if len(slowest) < top:
                            heapq.heappush(slowest, item)
                        elif item[:2] > slowest[0][:2]:
                            heapq.heapreplace(slowest, item)
                if scanned >= self.options.log_scan_limit:
                    summary.truncated = True
                    break
        summary.top_errors = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        summary.slowest = [e for _, _, e in sorted(slowest, key=lambda t: t[:2], reverse=True)]
        return summary

    # ------------------------------------------------------------------------------------------ evaluation

    async def tick(self) -> None:
        """One evaluation of every known deployment: drift, rules, incidents, retraining, the outbox."""
        async with self._tick_lock:
            at = self._clock()
            for key in await self.s.deployments.keys("*.dep.*"):
                found = await self.s.deployments.get(key)
                if found is None:
                    continue
                info = found.value
                self._known[(info.tenant, info.name)] = info
                try:
                    await self._evaluate(info, at)
                except Exception:
                    log.exception("evaluation of %s/%s failed", info.tenant, info.name)
            self.live.forget_labels(at - self.retention_s)

    async def _load_states(self, tenant: str, deployment: str) -> RuleStatesRecord:
        found = self._states.get((tenant, deployment))
        if found is None:
            stored = await self.s.states.get(f"{tenant}.rulestate.{deployment}")
            found = stored.value if stored else RuleStatesRecord(tenant=tenant, deployment=deployment)
            self._states[(tenant, deployment)] = found
        return found

    def _drift_rule(self) -> Rule:
        return Rule(
            name=DRIFT_RULE_NAME,
            metric="drifted_features",
            comparison=">",
            threshold=0.5,
            window_seconds=self.options.drift_window_s,
            severity="warning",
            for_evaluations=self.options.drift_for_evaluations,
            resolve_margin=0.5,
            cooldown_seconds=self.options.drift_cooldown_s,
        )

    async def _evaluate(self, info: DeploymentInfo, at: float) -> None:
        tenant, name = info.tenant, info.name
        reports: dict[float, DriftOut | None] = {}

        async def drift_for(seconds: float) -> DriftOut | None:
            if seconds not in reports:
                try:
                    reports[seconds] = await self._drift(
                        tenant, name, info.model_name, info.model_version, seconds, at, []
                    )
                except FailedPrecondition:
                    reports[seconds] = None
            return reports[seconds]

        states = await self._load_states(tenant, name)
        before = states.model_dump_json(exclude=_VOLATILE)
        rules_found = await self.s.rules.get(f"{tenant}.rules.{name}")
        rules = rules_found.value.rules if rules_found else []

        drift_rule = self._drift_rule()
        if states.drift_version != info.model_version:
            # Drift is a model version's fit to the live data: a new version ends the old one's incident
            # and starts a fresh check against its own reference.
            incident = states.open.pop(DRIFT_RULE_NAME, "")
            if incident:
                await self._close(info, incident, None, at)
            states.drift, states.drift_version = None, info.model_version
        drift_state = states.drift if states.drift is not None and states.drift.rule == drift_rule else None
        if drift_state is None:
            drift_state = RuleState.for_rule(drift_rule)
            if states.drift is not None:  # settings changed: keep whether it fires
                drift_state.firing = states.drift.firing
                drift_state.resolved_at = states.drift.resolved_at
            states.drift = drift_state
        current = await drift_for(self.options.drift_window_s)
        if current is not None:
            self.last_drift[(tenant, name)] = (info.model_version, current.report)
        transitions: list[tuple[Transition, AlertKind, DriftOut | None]] = []
        t = drift_state.evaluate(_drifted_count(current.report if current else None), at)
        if t is not None:
            transitions.append((t, "drift", current))

        kept: dict[str, RuleState] = {}
        for rule in rules:
            state = states.states.get(rule.name)
            if state is None or state.rule != rule:
                previous = state
                state = RuleState.for_rule(rule)
                if previous is not None and previous.firing:
                    state.firing, state.fired_at = True, previous.fired_at
            kept[rule.name] = state
            value = await self._metric(info, rule, at, drift_for)
            t = state.evaluate(value, at)
            if t is not None:
                transitions.append((t, "alert", None))
        removed = [r for r in states.states if r not in kept]
        states.states = kept
        for rule_name in removed:  # a deleted rule's incident ends with it
            incident = states.open.pop(rule_name, "")
            if incident:
                await self._close(info, incident, None, at)

        for transition, kind, drift in transitions:
            if transition.kind == "fired":
                await self._open(info, states, transition, kind, drift)
            else:
                incident = states.open.pop(transition.rule, "")
                if incident:
                    await self._close(info, incident, transition.value, transition.at)
        after = states.model_dump_json(exclude=_VOLATILE)
        if after != before or transitions:
            await self.s.states.put(f"{tenant}.rulestate.{name}", states)
        await self._flush(info)
        if self.triton_snapshots:
            self.last_triton[(tenant, name)] = await self._triton(
                info.triton_url, info.triton_model, info.triton_version or str(info.model_version)
            )

    async def _metric(
        self,
        info: DeploymentInfo,
        rule: Rule,
        at: float,
        drift_for: Callable[[float], Awaitable[DriftOut | None]],
    ) -> float | None:
        if rule.metric in METRICS:
            stats = self.live.serving(info.tenant).last(
                info.name, info.model_version, seconds=rule.window_seconds, at=at
            )
            return stats.metric(rule.metric)
        if rule.metric in DRIFT_METRICS:
            found = await drift_for(rule.window_seconds)
            report = found.report if found else None
            return _drifted_count(report) if rule.metric == "drifted_features" else _psi_max(report)
        task = live_mod.CLASSIFICATION if rule.metric == "live_accuracy" else live_mod.REGRESSION
        overall, _ = self.live.performance(
            info.tenant, info.name, info.model_version, task, seconds=rule.window_seconds, at=at
        )
        value = {"live_accuracy": overall.accuracy, "live_rmse": overall.rmse, "live_mae": overall.mae}[rule.metric]
        return value

    async def _open(
        self,
        info: DeploymentInfo,
        states: RuleStatesRecord,
        t: Transition,
        kind: AlertKind,
        drift: DriftOut | None,
    ) -> None:
        incident = incident_id(info.tenant, info.name, t.rule, t.at)
        rule = states.drift.rule if kind == "drift" and states.drift else states.states[t.rule].rule
        alert = AlertRecord(
            incident_id=incident,
            tenant=info.tenant,
            deployment=info.name,
            model_name=info.model_name,
            model_version=info.model_version,
            kind=kind,
            rule=t.rule,
            metric=t.metric,
            comparison=t.comparison,
            threshold=t.threshold,
            severity=t.severity,
            window_seconds=rule.window_seconds,
            value=t.value,
            fired_at=t.at,
        )
        if drift is not None:
            report = drift.report
            alert.drifted = [f.name for f in report.features if f.verdict == DRIFT]
            alert.prediction_drifted = report.prediction is not None and report.prediction.verdict == DRIFT
            alert.psi = _psi_map(report)
            alert.live_rows = max((f.n_live for f in report.features), default=0)
            alert.reference_dataset_version_id = drift.reference_dataset_version_id
        with _tracer.start_as_current_span(
            f"monitor {kind} incident", context=otel_context.Context(), attributes={"lepton.incident": incident}
        ):
            alert.traceparent = inject_context({}).get("traceparent", "")
        await self._apply_policy(info, alert)
        await self._append_alert(alert)
        states.open[t.rule] = incident
        log.info(
            "%s %s on %s/%s: %s %s %g (value %g)",
            kind,
            incident,
            info.tenant,
            info.name,
            t.metric,
            t.comparison,
            t.threshold,
            t.value,
        )

    async def _append_alert(self, alert: AlertRecord) -> None:
        limit = self.options.alert_history

        def change(record: AlertsRecord | None) -> AlertsRecord:
            record = record or AlertsRecord(tenant=alert.tenant, deployment=alert.deployment)
            if any(a.incident_id == alert.incident_id for a in record.alerts):
                return record
            alerts = [*record.alerts, alert]
            # Drop the oldest resolved ones first; a firing incident stays until it resolves.
            while len(alerts) > limit:
                oldest = next((a for a in alerts if a.state == "resolved"), alerts[0])
                alerts.remove(oldest)
            return record.model_copy(update={"alerts": alerts})

        await mutate(self.s.alerts, f"{alert.tenant}.alerts.{alert.deployment}", change)

    async def _close(self, info: DeploymentInfo, incident: str, value: float | None, at: float) -> None:
        def change(record: AlertsRecord | None) -> AlertsRecord | None:
            if record is None:
                return None
            alerts = []
            changed = False
            for a in record.alerts:
                if a.incident_id == incident and a.state == "firing":
                    a = a.model_copy(update={"state": "resolved", "resolved_at": at, "resolved_value": value})
                    changed = True
                alerts.append(a)
            return record.model_copy(update={"alerts": alerts}) if changed else None

        await mutate(self.s.alerts, f"{info.tenant}.alerts.{info.name}", change)

    async def _announce(self, a: AlertRecord, done: dict[str, bool]) -> None:
        if not a.announced_fired:
            await self._announcer.incident(a, "fired")
            done["announced_fired"] = True
        if a.retraining_request is not None and not a.announced_retraining:
            await self._announcer.retraining(a.retraining_request)
            done["announced_retraining"] = True
        if a.state == "resolved" and not a.announced_resolved:
            await self._announcer.incident(a, "resolved")
            done["announced_resolved"] = True

    async def _flush(self, info: DeploymentInfo) -> None:
        """Publishes every unannounced fire, resolve and retraining of a deployment (the outbox)."""
        key = f"{info.tenant}.alerts.{info.name}"
        found = await self.s.alerts.get(key)
        if found is None:
            return
        marks: dict[str, dict[str, bool]] = {}
        for a in found.value.alerts:
            done: dict[str, bool] = {}
            token = otel_context.attach(extract_context({"traceparent": a.traceparent} if a.traceparent else {}))
            try:
                await self._announce(a, done)
            finally:
                otel_context.detach(token)
            if done:
                marks[a.incident_id] = done
        self.firing[(info.tenant, info.name)] = [a for a in found.value.alerts if a.state == "firing"]
        if not marks:
            return

        def change(record: AlertsRecord | None) -> AlertsRecord | None:
            if record is None:
                return None
            return record.model_copy(
                update={"alerts": [a.model_copy(update=marks.get(a.incident_id, {})) for a in record.alerts]}
            )

        await mutate(self.s.alerts, key, change)

    # ------------------------------------------------------------------------------------------ retraining

    async def _apply_policy(self, info: DeploymentInfo, alert: AlertRecord) -> None:
        """Decides whether the incident asks for a retraining; records the decision on the alert."""
        found = await self.s.policies.get(f"{info.tenant}.policy.{info.name}")
        if found is None:
            return
        policy = found.value
        applies = (alert.kind == "drift" and policy.on_drift) or (
            alert.kind == "alert" and policy.on_alert and (not policy.alert_rules or alert.rule in policy.alert_rules)
        )
        if not applies:
            return
        job = None
        if info.training_job_id:
            stored_job = await self.s.jobs.get(f"{info.tenant}.job.{info.training_job_id}")
            job = stored_job.value if stored_job else None
        if job is None:
            alert.retraining = (
                f"skipped: the monitor has not seen how version {info.model_version} was trained "
                f"(training.completed of job {info.training_job_id or '?'})"
            )
            return
        dataset_id = job.dataset_id or info.dataset_id
        index = await self.s.datasets.get(f"{info.tenant}.ds.{dataset_id}")
        newest = index.value.version_ids[-1] if index and index.value.version_ids else job.dataset_version_id
        dataset_name = index.value.dataset_name if index else ""
        trained_on = info.dataset_version_id or job.dataset_version_id
        if newest == trained_on and not policy.allow_same_dataset_version:
            alert.retraining = f"skipped: dataset {dataset_name or dataset_id} has no version newer than {trained_on}"
            return
        same_version = info.last_retraining_from_version == info.model_version
        if same_version and info.last_retraining_dataset_version_id == newest:
            alert.retraining = (
                f"skipped: incident {info.last_retraining_incident} already asked to retrain version "
                f"{info.model_version} on {newest}"
            )
            return
        at = alert.fired_at
        if info.last_retraining_at is not None and at - info.last_retraining_at < policy.min_interval_seconds:
            alert.retraining = (
                f"skipped: the last retraining was asked {at - info.last_retraining_at:.0f} s ago "
                f"(min_interval_seconds {policy.min_interval_seconds:g})"
            )
            return
        job_id = retraining_job_id(info.tenant, alert.incident_id)
        reason = "drift" if alert.kind == "drift" else f"alert:{alert.rule}"
        detail = (
            f"features {', '.join(alert.drifted) or '(prediction only)'} drifted"
            if alert.kind == "drift"
            else f"{alert.metric} {alert.comparison} {alert.threshold:g} (value {alert.value:g})"
        )
        request = RetrainingRequest(
            tenant=info.tenant,
            incident_id=alert.incident_id,
            job_id=job_id,
            reason=reason,
            detail=detail,
            deployment=info.name,
            model_name=info.model_name,
            model_version=info.model_version,
            training_job_id=job.job_id,
            trained_dataset_version_id=trained_on,
            algorithm=job.algorithm,
            params=job.params,
            target=job.target,
            split_seed=job.split_seed,
            test_fraction=job.test_fraction,
            dataset_id=dataset_id,
            dataset_name=dataset_name,
            dataset_version_id=newest,
        )

        def change(current: DeploymentInfo | None) -> DeploymentInfo | None:
            if current is None:
                return None
            return current.model_copy(
                update={
                    "last_retraining_at": at,
                    "last_retraining_incident": alert.incident_id,
                    "last_retraining_from_version": info.model_version,
                    "last_retraining_dataset_version_id": newest,
                }
            )

        updated = await mutate(self.s.deployments, f"{info.tenant}.dep.{info.name}", change)
        if updated is not None:
            self._known[(info.tenant, info.name)] = updated
        alert.retraining = "requested"
        alert.retraining_job_id = job_id
        alert.retraining_request = request

    # ------------------------------------------------------------------------------------------ prometheus

    def metric_families(self) -> list[MetricFamily]:
        """Everything the Prometheus endpoint shows, computed now from memory."""
        at = self._clock()
        requests = MetricFamily("lepton_monitor_requests_total", "Prediction logs counted since start.", "counter")
        errors = MetricFamily("lepton_monitor_errors_total", "Failed requests among them.", "counter")
        rows = MetricFamily("lepton_monitor_rows_total", "Rows predicted by the logged requests.", "counter")
        latency_sum = MetricFamily(
            "lepton_monitor_latency_ms_sum_total", "Sum of the logged latencies in milliseconds.", "counter"
        )
        for (tenant, deployment, version), c in sorted(self.live.counters.items()):
            labels = {"tenant": tenant, "deployment": deployment, "version": str(version)}
            requests.add(labels, c.requests)
            errors.add(labels, c.errors)
            rows.add(labels, c.rows)
            latency_sum.add(labels, c.latency_ms_sum)
        window = MetricFamily(
            "lepton_monitor_window_seconds", "Span of the gauges below (the current and previous windows).", "gauge"
        )
        window.add({}, 2 * self.options.window_s)
        rate = MetricFamily("lepton_monitor_error_rate", "Errors / requests over the recent span.", "gauge")
        latency = MetricFamily(
            "lepton_monitor_latency_ms", "Latency percentiles of the logged requests over the recent span.", "gauge"
        )
        for tenant, windows in self.live.serving_windows():
            for deployment, version in windows.keys():  # noqa: SIM118 (a method, not a dict)
                stats = windows.last(deployment, version, seconds=self.options.window_s, at=at)
                labels = {"tenant": tenant, "deployment": deployment, "version": str(version)}
                if stats.error_rate is not None:
                    rate.add(labels, stats.error_rate)
                for q, value in (
                    ("0.5", stats.latency_p50_ms),
                    ("0.95", stats.latency_p95_ms),
                    ("0.99", stats.latency_p99_ms),
                ):
                    if value is not None:
                        latency.add({**labels, "quantile": q}, value)
        psi = MetricFamily("lepton_monitor_drift_psi", "PSI of each feature at the last drift check.", "gauge")
        drifted = MetricFamily(
            "lepton_monitor_drift_detected", "1 when the feature's drift verdict is drift at the last check.", "gauge"
        )
        for (tenant, deployment), (version, report) in sorted(self.last_drift.items()):
            results = [*report.features, *([report.prediction] if report.prediction else [])]
            for f in results:
                if f.psi is None:
                    continue
                labels = {"tenant": tenant, "deployment": deployment, "version": str(version), "feature": f.name}
                psi.add(labels, f.psi)
                drifted.add(labels, 1.0 if f.verdict == DRIFT else 0.0)
        firing = MetricFamily("lepton_monitor_alerts_firing", "1 for each incident firing now.", "gauge")
        for (tenant, deployment), alerts in sorted(self.firing.items()):
            for a in alerts:
                firing.add(
                    {
                        "tenant": tenant,
                        "deployment": deployment,
                        "rule": a.rule,
                        "kind": a.kind,
                        "severity": a.severity,
                    },
                    1.0,
                )
        triton_requests = MetricFamily(
            "lepton_triton_requests_total", "Triton's requests of the serving version, by outcome.", "counter"
        )
        triton_seconds = MetricFamily(
            "lepton_triton_duration_seconds_total", "Triton's cumulative request durations, by phase.", "counter"
        )
        for (tenant, deployment), snap in sorted(self.last_triton.items()):
            if not snap.reachable:
                continue
            labels = {"tenant": tenant, "deployment": deployment, "version": snap.version}
            triton_requests.add({**labels, "outcome": "success"}, snap.success_count)
            triton_requests.add({**labels, "outcome": "failure"}, snap.failure_count)
            for phase, ns in (
                ("request", snap.success_ns),
                ("queue", snap.queue_ns),
                ("compute_infer", snap.compute_infer_ns),
            ):
                triton_seconds.add({**labels, "phase": phase}, ns / 1e9)
        return [
            requests,
            errors,
            rows,
            latency_sum,
            window,
            rate,
            latency,
            psi,
            drifted,
            firing,
            triton_requests,
            triton_seconds,
        ]


def parse_rule(values: dict[str, Any], index: int) -> Rule:
    """A :class:`Rule` from request values; InvalidArgument naming ``rules[i].<field>`` when one is wrong."""
    try:
        return Rule.model_validate(values)
    except ValidationError as e:
        raise invalid_argument_from(e, f"rules[{index}]") from None


__all__ = [
    "RULE_METRICS",
    "Announcer",
    "DriftOut",
    "FeatureRange",
    "LogPage",
    "LogQuery",
    "LogSource",
    "LogSummary",
    "Monitor",
    "Options",
    "PerformanceOut",
    "RuleStatus",
    "ServingOut",
    "Stores",
    "check_name",
    "incident_id",
    "matches",
    "parse_rule",
    "retraining_job_id",
]
