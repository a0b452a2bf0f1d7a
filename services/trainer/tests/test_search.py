"""Hyper-parameter search: trials fan out over the work queue; more workers, less wall time."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np
import polars as pl
import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(600)

KEY = "search-key"
TENANT = "se" + uuid.uuid4().hex[:8]
DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
SPACE = {"n_estimators": ["40", "80"], "max_depth": ["4", "none"]}


async def upload(address: str) -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 8))
    frame = pl.DataFrame({f"x{i}": x[:, i] for i in range(8)}).with_columns(
        target=pl.Series(x[:, 0] * 3 + np.sin(x[:, 1]) * 2 + rng.normal(size=6000) * 0.3)
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)

    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="synthetic", format="parquet"))
        yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

    async with client_channel(address, KEY) as ch:
        return (await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts())).version_id


async def run_search(trainer_address: str, version_id: str, name: str) -> tuple[trainer_pb2.TrainingJob, float]:
    async with client_channel(trainer_address, KEY) as ch:
        trainer = trainer_pb2_grpc.TrainingServiceStub(ch)
        start = time.monotonic()
        job = await trainer.SubmitTraining(
            trainer_pb2.SubmitTrainingRequest(
                dataset_version_id=version_id,
                algorithm="random_forest_regressor",
                target="target",
                model_name=name,
                search=trainer_pb2.SearchSpec(
                    kind="grid", space={k: trainer_pb2.ParamValues(values=v) for k, v in SPACE.items()}
                ),
            )
        )
        assert job.kind == "search" and len(job.trials) == 4
        while job.state not in DONE:
            await asyncio.sleep(0.2)
            job = await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
        return job, time.monotonic() - start


async def test_search_fans_out_and_scales_with_workers(
    service: StartService, nc: NATS, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {KEY: TENANT}
    data = service("data", keys)
    first = service("trainer", keys, data_url=data, worker_id="w1")
    version_id = await upload(data)
    one, one_s = await run_search(first, version_id, "search-one")
    service("trainer", keys, data_url=data, worker_id="w2")
    two, two_s = await run_search(first, version_id, "search-two")
    with capsys.disabled():  # the ratio is reported in every run's output, never asserted
        print(f"\n4-trial grid search: 1 worker {one_s:.1f} s, 2 workers {two_s:.1f} s, ratio {two_s / one_s:.2f}")

    for job in (one, two):
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
        assert all(t.state == trainer_pb2.JOB_STATE_SUCCEEDED and t.HasField("score") for t in job.trials)
        best = max(job.trials, key=lambda t: t.score)
        assert job.best_trial_id == best.job_id and job.search_metric == "r2"
        assert dict(job.params) == dict(best.params) and job.artifact.digest
    assert {t.params["n_estimators"] for t in two.trials} == {"40", "80"}
    assert {t.job_id.rsplit("_", 1)[0] for t in two.trials} == {two.job_id}
    # Only the search's final fit is announced as trained: trials never reach the registry.
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{TENANT}.training.completed", stream=EVENTS_STREAM, ordered_consumer=True
    )
    completed = []
    while True:
        try:
            completed.append(events.decode(await sub.next_msg(timeout=1)).data.lineage.training_job_id)
        except TimeoutError:
            break
    await sub.unsubscribe()
    assert sorted(completed) == sorted([one.job_id, two.job_id])


@pytest.mark.parametrize(
    ("search", "field"),
    [
        (trainer_pb2.SearchSpec(kind="bayes", space={"alpha": trainer_pb2.ParamValues(values=["1"])}), "search.kind"),
        (trainer_pb2.SearchSpec(kind="grid"), "search.space"),
        (trainer_pb2.SearchSpec(kind="grid", space={"alpha": trainer_pb2.ParamValues(values=["-1"])}), "params.alpha"),
        (
            trainer_pb2.SearchSpec(
                kind="random", trials=5, space={"alpha": trainer_pb2.ParamValues(values=["1", "2"])}
            ),
            "search.trials",
        ),
        (
            trainer_pb2.SearchSpec(
                kind="grid", metric="accuracy", space={"alpha": trainer_pb2.ParamValues(values=["1"])}
            ),
            "search.metric",
        ),
    ],
)
async def test_bad_searches_are_refused(service: StartService, search: trainer_pb2.SearchSpec, field: str) -> None:
    keys = {KEY: TENANT}
    if not hasattr(test_bad_searches_are_refused, "addresses"):
        data = service("data", keys)
        test_bad_searches_are_refused.addresses = (data, service("trainer", keys, data_url=data, run_worker="false"))  # type: ignore[attr-defined]
    data, trainer_address = test_bad_searches_are_refused.addresses  # type: ignore[attr-defined]
    version_id = await upload(data)
    async with client_channel(trainer_address, KEY) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await trainer_pb2_grpc.TrainingServiceStub(ch).SubmitTraining(
                trainer_pb2.SubmitTrainingRequest(
                    dataset_version_id=version_id, algorithm="ridge", target="target", search=search
                )
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field + ":"), err.value.details()
