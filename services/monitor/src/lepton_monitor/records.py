"""The records the monitor keeps in KV bucket ``monitor``, and the domain inputs its adapters build.

Keys (``<tenant>`` first, so a tenant's keys never meet another's):

====================================  =====================================================================
``<tenant>.<deployment>``             :class:`StatsRecord`: counts of every log received (GetPredictionStats)
``<tenant>.dep.<deployment>``         :class:`DeploymentInfo`: what the deployment serves, its retrainings
``<tenant>.mv.<model>.<version>``     :class:`VersionInfo`: a registered version (``registry.version.created``)
``<tenant>.job.<job_id>``             :class:`JobInfo`: how a version was trained (``training.completed``)
``<tenant>.dsv.<version_id>``         :class:`DatasetVersionInfo`: a dataset version (``dataset.version.created``)
``<tenant>.ds.<dataset_id>``          :class:`DatasetIndex`: a dataset's versions in the order announced
``<tenant>.ref.<model>.<version>``    :class:`~lepton_monitor.reference.ReferenceRecord`: the drift reference
``<tenant>.rules.<deployment>``       :class:`RulesRecord`: alert rules (SetRules)
``<tenant>.rulestate.<deployment>``   :class:`RuleStatesRecord`: where each rule and the drift check stand
``<tenant>.policy.<deployment>``      :class:`PolicyRecord`: the retraining policy
``<tenant>.alerts.<deployment>``      :class:`AlertsRecord`: incidents, newest last
====================================  =====================================================================
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from lepton_core.bus import ObjectRefRecord
from lepton_monitor.rules import Rule, RuleState


def drop_tenant(tenant: str, *caches: dict) -> None:  # type: ignore[type-arg]
    """Removes ``tenant``'s entries from in-memory caches keyed by the tenant or by a tuple that starts with it."""
    for cache in caches:
        for key in [k for k in cache if k == tenant or (isinstance(k, tuple) and k and k[0] == tenant)]:
            del cache[key]


AlertKind = Literal["alert", "drift"]
AlertState = Literal["firing", "resolved"]


class StatsRecord(BaseModel):
    """Counts of the prediction logs of one deployment, each log counted once among recent ones."""

    tenant: str
    deployment: str
    logged_requests: int = 0
    logged_rows: int = 0
    errors: int = 0
    #: Requests the serving model left unlogged (sample rate, rate cap).
    unlogged_requests: int = 0
    requests_by_version: dict[int, int] = Field(default_factory=dict)
    recent_log_ids: list[str] = Field(default_factory=list)


class DeploymentInfo(BaseModel):
    """What a deployment serves (from ``deployment.ready``) and its retraining history.

    Attributes:
        last_retraining_at: When the monitor last asked for a retraining of this deployment.
        last_retraining_incident: The incident that asked.
        last_retraining_from_version: The version that served then.
        last_retraining_dataset_version_id: The dataset version that retraining was to learn from.
    """

    tenant: str
    name: str
    model_name: str
    model_version: int
    triton_model: str = ""
    triton_version: str = ""
    triton_url: str = ""
    dataset_id: str = ""
    dataset_version_id: str = ""
    training_job_id: str = ""
    ready_at: float = 0.0
    last_retraining_at: float | None = None
    last_retraining_incident: str = ""
    last_retraining_from_version: int = 0
    last_retraining_dataset_version_id: str = ""


class VersionInfo(BaseModel):
    """A registered model version, as ``registry.version.created`` announced it."""

    tenant: str
    model_name: str
    version: int
    features: list[str]
    target: str
    algorithm: str
    artifact: ObjectRefRecord
    dataset_object: ObjectRefRecord
    dataset_id: str = ""
    dataset_version_id: str = ""
    training_job_id: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)


class JobInfo(BaseModel):
    """How a model was trained, as ``training.completed`` announced it: what a retraining repeats."""

    tenant: str
    job_id: str
    algorithm: str
    params: dict[str, str]
    target: str
    model_name: str
    split_seed: int
    test_fraction: float
    task: str = ""
    dataset_id: str = ""
    dataset_version_id: str = ""


class DatasetVersionInfo(BaseModel):
    """A dataset version, as ``dataset.version.created`` announced it."""

    tenant: str
    dataset_id: str
    dataset_name: str
    version_id: str
    object: ObjectRefRecord
    origin: str = "upload"
    parent_version_id: str = ""
    columns: dict[str, str] = Field(default_factory=dict)
    row_count: int = 0


class DatasetIndex(BaseModel):
    """A dataset's versions in the order they were announced; the last is the newest."""

    tenant: str
    dataset_id: str
    dataset_name: str
    version_ids: list[str] = Field(default_factory=list)


class RulesRecord(BaseModel):
    tenant: str
    deployment: str
    rules: list[Rule] = Field(default_factory=list)


class RuleStatesRecord(BaseModel):
    """Where each rule stands, the built-in drift check's state, and each firing rule's incident."""

    tenant: str
    deployment: str
    states: dict[str, RuleState] = Field(default_factory=dict)
    drift: RuleState | None = None
    #: The model version the drift state is about: a new serving version starts a fresh check.
    drift_version: int = 0
    open: dict[str, str] = Field(default_factory=dict)


class PolicyRecord(BaseModel):
    """When to ask for a retraining (see docs/monitoring.md)."""

    tenant: str
    deployment: str
    on_drift: bool = False
    on_alert: bool = False
    alert_rules: list[str] = Field(default_factory=list)
    min_interval_seconds: float = 3600.0
    allow_same_dataset_version: bool = False


class AlertRecord(BaseModel):
    """One incident: an alert rule or the drift check fired, and perhaps resolved.

    ``announced_*`` form an outbox: the record is written before its event is published, and the
    evaluation loop publishes whatever is still unannounced (with the same event id, so the broker drops a
    repeat), so a crash between the two loses nothing.
    """

    incident_id: str
    tenant: str
    deployment: str
    model_name: str
    model_version: int
    kind: AlertKind
    rule: str
    metric: str
    comparison: str
    threshold: float
    severity: str
    window_seconds: float
    state: AlertState = "firing"
    value: float
    fired_at: float
    resolved_at: float | None = None
    resolved_value: float | None = None
    drifted: list[str] = Field(default_factory=list)
    prediction_drifted: bool = False
    psi: dict[str, float] = Field(default_factory=dict)
    live_rows: int = 0
    reference_dataset_version_id: str = ""
    retraining: str = ""
    retraining_job_id: str = ""
    retraining_request: RetrainingRequest | None = None
    announced_fired: bool = False
    announced_resolved: bool = False
    announced_retraining: bool = False
    #: W3C trace context of the incident's own trace: every event it causes (fired,
    #: retraining, resolved) and everything those cause downstream is one trace.
    traceparent: str = ""


class AlertsRecord(BaseModel):
    tenant: str
    deployment: str
    alerts: list[AlertRecord] = Field(default_factory=list)


class RetrainingRequest(BaseModel):
    """What ``monitor.retraining.requested`` carries: the serving version's training, to repeat on newer data."""

    tenant: str
    incident_id: str
    job_id: str
    reason: str
    detail: str
    deployment: str
    model_name: str
    model_version: int
    training_job_id: str
    trained_dataset_version_id: str
    algorithm: str
    params: dict[str, str]
    target: str
    split_seed: int
    test_fraction: float
    dataset_id: str
    dataset_name: str
    dataset_version_id: str


AlertRecord.model_rebuild()

__all__ = [
    "AlertKind",
    "AlertRecord",
    "AlertState",
    "AlertsRecord",
    "DatasetIndex",
    "DatasetVersionInfo",
    "DeploymentInfo",
    "JobInfo",
    "PolicyRecord",
    "RetrainingRequest",
    "RuleStatesRecord",
    "RulesRecord",
    "StatsRecord",
    "VersionInfo",
]
