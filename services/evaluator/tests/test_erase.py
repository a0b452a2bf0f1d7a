"""A deleted model version's evaluations leave the store: records (history included) and plots."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client as NATS

from lepton_core.bus import ObjectStore, RecordStore
from lepton_core.errors import NotFound
from lepton_core.wire import now
from lepton_evaluator.core import EvaluationRecord, Evaluations
from lepton_platform.testing import artifact_keys

pytestmark = pytest.mark.timeout(60)


async def test_erase_version_takes_every_evaluation_of_the_job_and_its_plots_and_nothing_else(nc: NATS) -> None:
    js = nc.jetstream()
    tenant = "t" + uuid.uuid4().hex[:10]
    objects = ObjectStore(js)
    store = await RecordStore.open(js, "evaluations", EvaluationRecord)
    evaluations = Evaluations(store, objects, artifact_keys().trusted())

    async def evaluation(evaluation_id: str, job_id: str, version: int) -> EvaluationRecord:
        plot = await objects.put("artifacts", f"{tenant}/plots/{evaluation_id}/residuals.png", uuid.uuid4().bytes)
        record = EvaluationRecord(
            tenant=tenant,
            evaluation_id=evaluation_id,
            training_job_id=job_id,
            dataset_id="ds_1",
            dataset_version_id="dv_1",
            model_name="churn",
            model_version=version,
            metrics={"r2": 0.5},
            test_rows=10,
            created_at=now(),
            plots={"residuals": plot},
        )
        await store.put(f"{tenant}.{evaluation_id}", record)
        return record

    automatic = await evaluation("ev_auto", "job_gone", 0)
    await store.put(f"{tenant}.job_gone", automatic)  # the automatic one is kept under its job id too
    requested = await evaluation("ev_asked", "job_gone", 2)
    other = await evaluation("ev_other", "job_kept", 1)

    assert await evaluations.erase_version(tenant, "churn", "job_gone") == 2
    assert await store.keys(f"{tenant}.*") == [f"{tenant}.ev_other"]  # no tombstone of the others
    for record in (automatic, requested):
        with pytest.raises(NotFound):
            await objects.get(record.plots["residuals"])
    assert await objects.get(other.plots["residuals"])
    assert await evaluations.erase_version(tenant, "churn", "job_gone") == 0  # a redelivery
