"""Retraining policies: whether an incident asks the trainer to retrain the deployment's model.

A policy is per deployment (``<tenant>.policy.<deployment>``). When an incident it covers opens, the
retraining repeats the serving version's training job on the newest version of its dataset, unless a loop
guard says no: no newer data, the same version already asked on the same data, or the last request too
recent. The decision, either way, is written on the incident (:attr:`AlertRecord.retraining`).
"""

from __future__ import annotations

import hashlib
import math

from lepton_core.errors import InvalidArgument
from lepton_core.store import Store
from lepton_monitor.lookups import Deployments, check_name
from lepton_monitor.records import AlertRecord, DatasetIndex, DeploymentInfo, JobInfo, PolicyRecord, RetrainingRequest


def retraining_job_id(tenant: str, incident: str) -> str:
    """The trainer's job id for the retraining an incident asks for: one incident, one job."""
    return "job_rt_" + hashlib.sha256(f"{tenant}\x00{incident}".encode()).hexdigest()[:20]


class RetrainingPolicies:
    """Each deployment's retraining policy, and the decision it makes for an incident.

    Args:
        policies: The policies in KV.
        jobs: The training jobs (how the serving version was trained).
        datasets: The datasets' lists of versions (the newest data).
        deployments: The known deployments (whose records keep the last retraining asked).
    """

    def __init__(
        self,
        policies: Store[PolicyRecord],
        jobs: Store[JobInfo],
        datasets: Store[DatasetIndex],
        deployments: Deployments,
    ) -> None:
        self._policies = policies
        self._jobs = jobs
        self._datasets = datasets
        self._deployments = deployments

    async def set_policy(self, policy: PolicyRecord) -> PolicyRecord:
        """Stores a deployment's policy (``min_interval_seconds`` 0 becomes an hour) and returns it."""
        await self._deployments.get(policy.tenant, policy.deployment, "policy.deployment")
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
        await self._policies.put(f"{policy.tenant}.policy.{policy.deployment}", stored)
        return stored

    async def policy(self, tenant: str, deployment: str) -> PolicyRecord:
        """A deployment's policy (the default, which asks nothing, when none was set)."""
        await self._deployments.get(tenant, deployment)
        found = await self._policies.get(f"{tenant}.policy.{deployment}")
        return found.value if found else PolicyRecord(tenant=tenant, deployment=deployment)

    async def apply(self, info: DeploymentInfo, alert: AlertRecord) -> None:
        """Decides whether the incident asks for a retraining; records the decision on the alert.

        Nothing is written: once the alert (the outbox) is stored, :meth:`remember` notes the request
        on the deployment, so a monitor killed in between loses no retraining (at worst the next
        incident does not see this one's, which its min_interval and version checks still bound).
        """
        found = await self._policies.get(f"{info.tenant}.policy.{info.name}")
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
            stored_job = await self._jobs.get(f"{info.tenant}.job.{info.training_job_id}")
            job = stored_job.value if stored_job else None
        if job is None:
            alert.retraining = (
                f"skipped: the monitor has not seen how version {info.model_version} was trained "
                f"(training.completed of job {info.training_job_id or '?'})"
            )
            return
        dataset_id = job.dataset_id or info.dataset_id
        index = await self._datasets.get(f"{info.tenant}.ds.{dataset_id}")
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
        request = _request(info, alert, job, dataset_id, dataset_name, trained_on, newest)
        alert.retraining = "requested"
        alert.retraining_job_id = request.job_id
        alert.retraining_request = request

    async def remember(self, info: DeploymentInfo, alert: AlertRecord) -> None:
        """Notes on the deployment the retraining ``alert`` asked for (:meth:`apply`), once it is stored."""
        request = alert.retraining_request
        if request is None:
            return

        def change(current: DeploymentInfo | None) -> DeploymentInfo | None:
            if current is None:
                return None
            return current.model_copy(
                update={
                    "last_retraining_at": alert.fired_at,
                    "last_retraining_incident": alert.incident_id,
                    "last_retraining_from_version": info.model_version,
                    "last_retraining_dataset_version_id": request.dataset_version_id,
                }
            )

        await self._deployments.change(info.tenant, info.name, change)


def _request(
    info: DeploymentInfo,
    alert: AlertRecord,
    job: JobInfo,
    dataset_id: str,
    dataset_name: str,
    trained_on: str,
    newest: str,
) -> RetrainingRequest:
    """The retraining an incident asks for: the serving version's training job on the ``newest`` data."""
    reason = "drift" if alert.kind == "drift" else f"alert:{alert.rule}"
    detail = (
        f"features {', '.join(alert.drifted) or '(prediction only)'} drifted"
        if alert.kind == "drift"
        else f"{alert.metric} {alert.comparison} {alert.threshold:g} (value {alert.value:g})"
    )
    return RetrainingRequest(
        tenant=info.tenant,
        incident_id=alert.incident_id,
        job_id=retraining_job_id(info.tenant, alert.incident_id),
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


__all__ = ["RetrainingPolicies", "retraining_job_id"]
