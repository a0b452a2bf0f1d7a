"""Retraining asked for by the monitor: ``monitor.retraining.requested`` becomes a training job.

The monitor holds no user's API key and never calls the trainer's gRPC API; it announces the retraining as
an event and this handler submits it exactly as ``SubmitTraining`` does (the data service is asked for the
dataset version and its recipe chain, :func:`~lepton_trainer.core.plan_job` validates, the job is created
and queued by :func:`~lepton_trainer.api.submit`), so the rest of the chain (train, evaluate, register,
compare, promote, deploy) follows from the usual events.

Idempotent: the job id is the one the event carries, which the monitor derives from the incident, so a
redelivered (or re-published) request finds its job and creates nothing twice. A job that exists but is
still queued is queued again with the same event ids, which finishes a submission a crash cut short (the
broker drops the repeat inside its duplicate window).
"""

from __future__ import annotations

import logging

from lepton.events.v1 import events_pb2

from lepton_core import events
from lepton_core.access import SERVICE_TOKEN_HEADER
from lepton_core.errors import Conflict, FailedPrecondition
from lepton_core.names import check_name
from lepton_core.service import Runtime
from lepton_core.tls import Peer
from lepton_trainer.api import fetch_dataset, submit
from lepton_trainer.checks import check_retraining_job_id, check_submission
from lepton_trainer.core import Jobs, JobState, job_key, plan_job

log = logging.getLogger(__name__)


class RetrainingHandler:
    """Turns ``monitor.retraining.requested`` into a training job; see the module docstring.

    Args:
        rt: The service runtime (publishing).
        jobs: The job records.
        data_url: The data service's address.

    The trainer holds no tenant's key: it reads the dataset as itself (``service:trainer``,
    role viewer, in the request's tenant), with a token it signs (:mod:`lepton_core.access`).
    """

    def __init__(self, rt: Runtime, jobs: Jobs, data_url: Peer) -> None:
        self._rt = rt
        self._jobs = jobs
        self._data_url = data_url

    async def __call__(self, event: events.Event[events_pb2.RetrainingRequested]) -> None:
        req = event.data
        tenant = req.tenant
        # Every value that names a key, a subject or a peer's lookup is checked before the first read or
        # write; a refusal is permanent (the consumer dead-letters the request).
        check_name(tenant, "tenant", what="a tenant name")
        check_retraining_job_id(req.job_id)
        check_submission(
            dataset_version_id=req.dataset_version_id,
            algorithm=req.algorithm,
            target=req.target,
            params=req.params,
            model_name=req.model_name,
            split_seed=req.split_seed,
            test_fraction=req.test_fraction,
            seed=None,
        )
        existing = await self._jobs.store.get(job_key(tenant, req.job_id))
        if existing is not None:
            if existing.value.state == JobState.QUEUED:
                await submit(self._rt, self._jobs, existing.value)
            return
        signer = self._rt.access.signer
        if signer is None:
            raise FailedPrecondition("the trainer has no service identity (nats_nkey_seed_file) to read datasets with")
        token = signer.token(signer.acting_as(tenant, "viewer", "retraining policy"))
        dataset = await fetch_dataset(self._data_url, req.dataset_version_id, [(SERVICE_TOKEN_HEADER, token)])
        job = plan_job(
            tenant,
            dataset,
            req.algorithm,
            req.target,
            dict(req.params),
            req.model_name,
            req.split_seed or 42,
            req.test_fraction or 0.2,
        ).model_copy(update={"job_id": req.job_id})
        try:
            # Within the tenant's plan, as SubmitTraining: past a limit the request is dead-lettered, naming it.
            await self._jobs.admit(job)
        except Conflict:
            return  # another delivery created it a moment ago and submits it
        log.info(
            "retraining %s of %s v%d on %s (incident %s: %s)",
            job.job_id,
            req.model_name,
            req.lineage.model_version,
            req.dataset_version_id,
            req.incident_id,
            req.reason,
        )
        await submit(self._rt, self._jobs, job)


__all__ = ["RetrainingHandler"]
