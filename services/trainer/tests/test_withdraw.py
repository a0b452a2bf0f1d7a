"""A job whose queueing failed is not left queued: ``Jobs.withdraw`` fails it with the reason, or erases it
when the store will not take even that (it is full)."""

from __future__ import annotations

from typing import cast

from nats.js import errors as js_errors

from lepton_core.bus import ObjectStore
from lepton_core.store import MemoryStore
from lepton_ml.signing import Signer
from lepton_trainer.core import JobRecord, Jobs, JobState, job_key

from .test_fit import job

FULL = js_errors.APIError(code=400, err_code=10047, description="insufficient storage resources available")


class FullStore(MemoryStore[JobRecord]):
    """A store that has just taken the job's record and now refuses every write: full to the byte."""

    async def update(self, key: str, value: JobRecord, revision: int) -> int:
        raise FULL


def jobs(store: MemoryStore[JobRecord]) -> Jobs:
    return Jobs(store, objects=cast(ObjectStore, None), signer=Signer.generate())  # no object is stored here


async def test_a_job_whose_events_the_store_refused_is_failed_saying_why() -> None:
    store = MemoryStore(JobRecord)
    queued, trial = job(state=JobState.QUEUED), job(job_id="job_2", state=JobState.QUEUED, kind="trial")
    for record in (queued, trial):
        await store.create(job_key(record.tenant, record.job_id), record)
    await jobs(store).withdraw(queued, [trial], FULL)
    for record in (queued, trial):
        found = await store.get(job_key(record.tenant, record.job_id))
        assert found is not None and found.value.state == JobState.FAILED
        assert "could not be queued" in found.value.error and "store is full" in found.value.error
        assert found.value.finished_at is not None


async def test_a_job_the_store_will_not_even_fail_is_erased() -> None:
    store = FullStore(JobRecord)
    queued = job(state=JobState.QUEUED)
    await store.create(job_key(queued.tenant, queued.job_id), queued)
    await jobs(store).withdraw(queued, [], FULL)
    assert await store.get(job_key(queued.tenant, queued.job_id)) is None
