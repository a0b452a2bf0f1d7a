"""More trainer processes on one platform (``EmbeddedPlatform.add_worker``), as the pipeline load bench
(``bench/load/pipelines.py``) scales the trainer: an added process serves the trainer's API on a port of
its own, takes jobs from the shared work queue, and stops with the platform."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import polars as pl
import pytest
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)


async def train_through(platform: EmbeddedPlatform, address: str, version_id: str) -> trainer_pb2.TrainingJob:
    """A Ridge job submitted to the trainer process at ``address``, once it has ended."""
    async with client_channel(address, platform.api_key) as channel:
        stub = trainer_pb2_grpc.TrainingServiceStub(channel)
        request = trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=version_id, algorithm="ridge", target="target", model_name="workers"
        )
        job: trainer_pb2.TrainingJob = await stub.SubmitTraining(request)
        deadline = time.monotonic() + 120
        while job.state not in DONE and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            job = await stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
        return job


def test_an_added_trainer_takes_jobs_from_the_shared_queue_and_stops_with_the_platform(tmp_path: Path) -> None:
    services = ("data", "trainer", "evaluator", "registry")
    key = secrets.token_urlsafe(16)
    with EmbeddedPlatform(tmp_path, api_key=key, services=services, triton=False) as platform:
        with la.Client(key, platform.url) as client:
            frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
            version_id = client.datasets.upload(frame, name="workers", progress=False).version_id
        added = platform.add_worker("trainer")
        assert added == "trainer-2"
        assert platform.addresses[added] != platform.addresses["trainer"]
        extra = platform.processes[added]
        # With the first trainer gone, only the added one serves the API and pulls from the queue.
        platform.kill("trainer")
        job = asyncio.run(train_through(platform, platform.addresses[added], version_id))
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
        assert job.worker_id.endswith(f"-{extra.pid}")
        # The first trainer comes back as it was, beside the added one.
        platform.restart("trainer")
        assert (tmp_path / "logs" / "trainer.log").exists() and (tmp_path / "logs" / added / "trainer.log").exists()
    assert not extra.alive()
