"""The monitor's logic, independent of gRPC and protobuf.

:class:`Monitor` takes prediction logs and platform events (already decoded by :mod:`lepton_monitor.api`),
answers queries, and runs the evaluation loop (:meth:`Monitor.tick`) that turns rules and drift into
incidents, incidents into events, and incidents under a retraining policy into retraining requests.

It is the one surface the adapters call; the work is done by the parts it builds and owns:

* :class:`~lepton_monitor.intake.Intake`: prediction logs and platform events in;
* :class:`~lepton_monitor.lookups.Deployments` and :class:`~lepton_monitor.lookups.References`: what a
  deployment serves, and the drift reference of each model version;
* :class:`~lepton_monitor.queries.Queries` and :class:`~lepton_monitor.log_search.LogSearch`: what clients ask;
* :class:`~lepton_monitor.incidents.RuleBook` and :class:`~lepton_monitor.incidents.Incidents`: alert rules
  and the incidents they open;
* :class:`~lepton_monitor.retraining.RetrainingPolicies`: whether an incident asks for a retraining;
* :class:`~lepton_monitor.evaluation.Evaluator`: the evaluation loop;
* :class:`~lepton_monitor.metrics.MonitorMetrics`: what the Prometheus endpoint shows.

State: recent logs live in memory (:class:`~lepton_monitor.live.LiveData`) and are read back from the
PREDICTIONS stream at start-up; everything else is in KV ``monitor`` (:mod:`lepton_monitor.records`).
One monitor process evaluates rules (rule states have one writer); see docs/monitoring.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from lepton_monitor.drift_check import DriftCheck, DriftOut
from lepton_monitor.evaluation import Evaluator
from lepton_monitor.incidents import RULE_METRICS, Incidents, RuleBook, RuleStatus, incident_id, parse_rule
from lepton_monitor.intake import Intake
from lepton_monitor.live import LabelIn, LiveData, LogEntry
from lepton_monitor.log_search import FeatureRange, LogPage, LogQuery, LogSearch, LogSummary, matches
from lepton_monitor.lookups import Deployments, References, check_name
from lepton_monitor.metrics import MonitorMetrics, Observations
from lepton_monitor.options import Options
from lepton_monitor.ports import Announcer, Clock, LogSource, ObjectReader, Stores, TritonProbe
from lepton_monitor.prometheus import MetricFamily
from lepton_monitor.queries import PerformanceOut, Queries, ServingOut
from lepton_monitor.records import (
    AlertRecord,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    StatsRecord,
    VersionInfo,
    drop_tenant,
)
from lepton_monitor.reference import ReferenceRecord
from lepton_monitor.retraining import RetrainingPolicies, retraining_job_id
from lepton_monitor.rules import Rule


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
        clock: Clock = time.time,
    ) -> None:
        self.stores = stores
        self.options = options
        self.live = LiveData(
            options.window_s, options.retention_windows, options.max_samples, options.drift_rows_per_window
        )
        self.observations = Observations()
        self.deployments = Deployments(stores.deployments, self.live)
        self.references = References(
            stores.references,
            stores.versions,
            stores.dataset_versions,
            objects,
            options.reference_max_rows,
            clock,
            options.artifact_keys,
        )
        drift = DriftCheck(self.live, self.references, options.thresholds)
        self.intake = Intake(stores, self.live, self.deployments, self.references, logs, options.retention_s, clock)
        self.queries = Queries(
            stores.stats,
            stores.versions,
            stores.jobs,
            self.deployments,
            self.references,
            drift,
            self.live,
            announcer,
            triton,
            options,
            clock,
        )
        self.log_search = LogSearch(logs, self.deployments, options.log_scan_limit)
        self.rulebook = RuleBook(stores.rules, stores.states, self.deployments, options.retention_s)
        self.retraining = RetrainingPolicies(stores.policies, stores.jobs, stores.datasets, self.deployments)
        self.incidents = Incidents(
            stores.alerts, announcer, self.retraining, self.deployments, options.alert_history, self.observations
        )
        self.evaluator = Evaluator(
            self.deployments,
            self.rulebook,
            self.incidents,
            drift,
            self.live,
            triton,
            self.observations,
            options,
            clock,
        )
        self.metrics = MonitorMetrics(self.live, self.observations, options.window_s, clock)

    @property
    def retention_s(self) -> float:
        """How far back the in-memory windows reach, in seconds."""
        return self.options.retention_s

    @property
    def triton_snapshots(self) -> bool:
        """Whether each evaluation also asks Triton for its statistics (for the Prometheus endpoint)."""
        return self.evaluator.triton_snapshots

    @triton_snapshots.setter
    def triton_snapshots(self, value: bool) -> None:
        self.evaluator.triton_snapshots = value

    async def record_log(self, entry: LogEntry, *, persist: bool = True) -> bool:
        """See :meth:`Intake.record_log <lepton_monitor.intake.Intake.record_log>`."""
        return await self.intake.record_log(entry, persist=persist)

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
        """See :meth:`Intake.record_logs <lepton_monitor.intake.Intake.record_logs>`."""
        return await self.intake.record_logs(
            entries, message_id=message_id, persist=persist, unlogged=unlogged, tenant=tenant, deployment=deployment
        )

    def replay_start(self) -> float:
        """The oldest time the windows keep: where reading back starts after a restart."""
        return self.intake.replay_start()

    async def replay(self, since: float | None = None) -> int:
        """Reads the logs of the retention span back from the stream into memory; returns how many counted."""
        return await self.intake.replay(since)

    async def on_dataset_version(self, info: DatasetVersionInfo) -> None:
        """From ``dataset.version.created``."""
        await self.intake.on_dataset_version(info)

    async def on_training_completed(self, job: JobInfo) -> None:
        """From ``training.completed``."""
        await self.intake.on_training_completed(job)

    async def on_version_created(self, version: VersionInfo) -> None:
        """From ``registry.version.created``."""
        await self.intake.on_version_created(version)

    async def on_dataset_deleted(self, tenant: str, dataset_id: str, version_ids: list[str]) -> None:
        """From ``dataset.deleted``."""
        await self.intake.on_dataset_deleted(tenant, dataset_id, version_ids)

    async def on_version_deleted(self, tenant: str, model: str, version: int, job_id: str) -> None:
        """From ``registry.version.deleted``."""
        await self.intake.on_version_deleted(tenant, model, version, job_id)

    def forget_tenant(self, tenant: str) -> None:
        """From ``registry.tenant.deleted``: drops what memory holds of the tenant (its records,
        objects and logs in NATS are erased by :mod:`lepton_core.tenant_deletion`)."""
        self.live.forget_tenant(tenant)
        self.deployments.forget_tenant(tenant)
        self.references.forget_tenant(tenant)
        self.rulebook.forget_tenant(tenant)
        drop_tenant(tenant, self.observations.last_drift, self.observations.last_triton, self.observations.firing)

    async def on_deployment_ready(self, ready: DeploymentInfo) -> DeploymentInfo:
        """From ``deployment.ready``: records what the deployment serves and builds its drift reference."""
        return await self.intake.on_deployment_ready(ready)

    async def deployment(self, tenant: str, name: str, field: str = "deployment") -> DeploymentInfo | None:
        """See :meth:`Deployments.get <lepton_monitor.lookups.Deployments.get>`."""
        return await self.deployments.get(tenant, name, field)

    async def reference(self, tenant: str, model: str, version: int) -> ReferenceRecord:
        """See :meth:`References.get <lepton_monitor.lookups.References.get>`."""
        return await self.references.get(tenant, model, version)

    async def stats(self, tenant: str, deployment: str) -> StatsRecord:
        """See :meth:`Queries.stats <lepton_monitor.queries.Queries.stats>`."""
        return await self.queries.stats(tenant, deployment)

    async def serving(
        self, tenant: str, deployment: str, version: int, last_seconds: float, history: bool, triton: bool
    ) -> ServingOut:
        """See :meth:`Queries.serving <lepton_monitor.queries.Queries.serving>`."""
        return await self.queries.serving(tenant, deployment, version, last_seconds, history, triton)

    async def drift(
        self,
        tenant: str,
        deployment: str,
        version: int,
        last_seconds: float,
        features: Sequence[str] = (),
        png: bool = False,
    ) -> DriftOut:
        """See :meth:`Queries.drift <lepton_monitor.queries.Queries.drift>`."""
        return await self.queries.drift(tenant, deployment, version, last_seconds, features, png)

    async def send_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn]) -> tuple[int, int]:
        """Stores ground truth and announces it; returns (accepted, matched now)."""
        return await self.queries.send_labels(tenant, deployment, labels)

    def apply_labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        """Labels read back from the stream (after a restart)."""
        self.queries.apply_labels(tenant, deployment, labels, at)

    async def performance(self, tenant: str, deployment: str, version: int, task: str) -> PerformanceOut:
        """See :meth:`Queries.performance <lepton_monitor.queries.Queries.performance>`."""
        return await self.queries.performance(tenant, deployment, version, task)

    async def set_rules(self, tenant: str, deployment: str, rules: Sequence[Rule]) -> list[RuleStatus]:
        """See :meth:`RuleBook.set_rules <lepton_monitor.incidents.RuleBook.set_rules>`."""
        return await self.rulebook.set_rules(tenant, deployment, rules)

    async def list_rules(self, tenant: str, deployment: str) -> list[RuleStatus]:
        """See :meth:`RuleBook.list_rules <lepton_monitor.incidents.RuleBook.list_rules>`."""
        return await self.rulebook.list_rules(tenant, deployment)

    async def alerts(self, tenant: str, deployment: str, firing_only: bool, limit: int) -> list[AlertRecord]:
        """See :meth:`Incidents.list_alerts <lepton_monitor.incidents.Incidents.list_alerts>`."""
        return await self.incidents.list_alerts(tenant, deployment, firing_only, limit)

    async def set_policy(self, policy: PolicyRecord) -> PolicyRecord:
        """See :meth:`RetrainingPolicies.set_policy <lepton_monitor.retraining.RetrainingPolicies.set_policy>`."""
        return await self.retraining.set_policy(policy)

    async def policy(self, tenant: str, deployment: str) -> PolicyRecord:
        """See :meth:`RetrainingPolicies.policy <lepton_monitor.retraining.RetrainingPolicies.policy>`."""
        return await self.retraining.policy(tenant, deployment)

    async def query_logs(self, tenant: str, q: LogQuery, page_size: int, page_token: str) -> LogPage:
        """See :meth:`LogSearch.query_logs <lepton_monitor.log_search.LogSearch.query_logs>`."""
        return await self.log_search.query_logs(tenant, q, page_size, page_token)

    async def summarize_logs(self, tenant: str, q: LogQuery, top: int) -> LogSummary:
        """See :meth:`LogSearch.summarize_logs <lepton_monitor.log_search.LogSearch.summarize_logs>`."""
        return await self.log_search.summarize_logs(tenant, q, top)

    async def tick(self) -> None:
        """One evaluation of every known deployment: drift, rules, incidents, retraining, the outbox."""
        await self.evaluator.tick()

    def metric_families(self) -> list[MetricFamily]:
        """Everything the Prometheus endpoint shows, computed now from memory."""
        return self.metrics.families()


# The names this module has always offered, now defined beside it, stay importable from here.
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
