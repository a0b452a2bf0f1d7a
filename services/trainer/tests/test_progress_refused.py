"""A progress report the store refuses (full) is skipped: the fit goes on and its job ends. Before, the
refusal stopped the trainer reading the fit process's reports, and the job's wait never ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from lepton_core.store import MemoryStore
from lepton_trainer.core import JobRecord, job_key

from .test_fit import job
from .test_withdraw import FullStore, jobs


async def test_a_fit_whose_progress_reports_the_store_refuses_still_ends(tmp_path: Path) -> None:
    store: MemoryStore[JobRecord] = FullStore(JobRecord)  # takes the record, then refuses every update
    record = job(params={"epochs": "5"})
    await store.create(job_key(record.tenant, record.job_id), record)
    (tmp_path / "job.json").write_text(record.model_dump_json())
    load_breast_cancer(as_frame=True).frame.to_parquet(tmp_path / "data.parquet")
    worker = jobs(store)
    try:
        outcome, _ = await asyncio.wait_for(worker._fit_process(record, tmp_path, None), timeout=120)
    finally:
        await worker._kill()
    assert outcome == "ok"
    assert (tmp_path / "artifact.zip").stat().st_size > 0
