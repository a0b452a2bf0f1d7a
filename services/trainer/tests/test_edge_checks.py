"""Every field checked at the edge (issue 15): over real gRPC and real NATS, against the trainer process.

A refused request is INVALID_ARGUMENT naming the field (never INTERNAL from a KV key or subject that a
bad value broke), quotes a long value cut short, and stores and queues nothing. The trainer runs without
a worker: nothing here trains.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import polars as pl
import pytest
import pytest_asyncio
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService, expect_dead_lettered

pytestmark = pytest.mark.timeout(120)

KEY = "edge-trainer-key"
TENANT = "edge" + uuid.uuid4().hex[:8]
BAD_IDS = ["名字", "job_a b", "job_a.b", "job_*", "job_>", "job_a\x00", "job_a\n", "JOB_ABC", "job_"]


@pytest.fixture(scope="module")
def stack(service: StartService) -> dict[str, str]:
    keys = {KEY: TENANT}
    data = service("data", keys)
    return {"data": data, "trainer": service("trainer", keys, data_url=data, run_worker="false")}


@pytest_asyncio.fixture
async def trainer(stack: dict[str, str]) -> AsyncIterator[trainer_pb2_grpc.TrainingServiceStub]:
    async with client_channel(stack["trainer"], KEY) as ch:
        yield trainer_pb2_grpc.TrainingServiceStub(ch)


_VERSION: list[str] = []


async def version_id(stack: dict[str, str]) -> str:
    """A real dataset version (uploaded once), so a refusal is for the field under test only."""
    if not _VERSION:
        buf = io.BytesIO()
        pl.DataFrame({"x": [float(i) for i in range(40)], "target": [2.0 * i for i in range(40)]}).write_parquet(buf)

        async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
            yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="edge", format="parquet"))
            yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

        async with client_channel(stack["data"], KEY) as ch:
            _VERSION.append((await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts())).version_id)
    return _VERSION[0]


async def refused(call: Any, request: Any, field: str) -> str:
    """Calls, expects INVALID_ARGUMENT naming ``field``, returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        result = call(request)
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, details)
    assert details.startswith(f"{field}: "), (request, details)
    return details


async def assert_nothing_queued(trainer: trainer_pb2_grpc.TrainingServiceStub, nc: NATS) -> None:
    assert list((await trainer.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest())).jobs) == []
    sub = await nc.jetstream().subscribe(f"lepton.evt.{TENANT}.training.>", stream=EVENTS_STREAM, ordered_consumer=True)
    try:
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await sub.unsubscribe()


def submit(version: str, **fields: Any) -> trainer_pb2.SubmitTrainingRequest:
    values: dict[str, Any] = {"dataset_version_id": version, "algorithm": "ridge", "target": "target", **fields}
    return trainer_pb2.SubmitTrainingRequest(**values)


async def test_get_training_job_with_a_non_ascii_id_is_invalid_not_internal(
    trainer: trainer_pb2_grpc.TrainingServiceStub,
) -> None:
    for bad in BAD_IDS:
        request = trainer_pb2.GetTrainingJobRequest(job_id=bad)
        for call in (trainer.GetTrainingJob, trainer.CancelTrainingJob, trainer.WatchTrainingJob):
            await refused(call, request, "job_id")


async def test_a_well_formed_missing_job_is_still_not_found(trainer: trainer_pb2_grpc.TrainingServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id="job_" + "0" * 20))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_evaluation_id_is_not_a_training_job_id(trainer: trainer_pb2_grpc.TrainingServiceStub) -> None:
    details = await refused(trainer.GetTrainingJob, trainer_pb2.GetTrainingJobRequest(job_id="ev_0123abc"), "job_id")
    assert "evaluation id" in details


async def test_a_model_name_with_a_trailing_newline_is_refused(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str], nc: NATS
) -> None:
    version = await version_id(stack)
    for name in ("churn\n", "Churn", "churn.v2", "churn*", "churn>", "ch urn", "-churn", "ümlaut", "x" * 65):
        await refused(trainer.SubmitTraining, submit(version, model_name=name), "model_name")
    await assert_nothing_queued(trainer, nc)


async def test_a_negative_split_seed_is_refused_and_queues_nothing(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str], nc: NATS
) -> None:
    version = await version_id(stack)
    await refused(trainer.SubmitTraining, submit(version, split_seed=-1), "split_seed")
    await refused(trainer.SubmitTraining, submit(version, split_seed=2**32), "split_seed")
    await refused(trainer.SubmitTraining, submit(version, seed=-5), "seed")
    await refused(trainer.SubmitTraining, submit(version, seed=2**40), "seed")
    await assert_nothing_queued(trainer, nc)


async def test_fractions_limits_and_states_out_of_range_are_refused(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str], nc: NATS
) -> None:
    version = await version_id(stack)
    for fraction in (float("nan"), float("inf"), -0.1, 1.0, 1.5):
        await refused(trainer.SubmitTraining, submit(version, test_fraction=fraction), "test_fraction")
    await refused(trainer.ListTrainingJobs, trainer_pb2.ListTrainingJobsRequest(limit=10**6), "limit")
    await refused(trainer.ListTrainingJobs, trainer_pb2.ListTrainingJobsRequest(limit=-1), "limit")
    await refused(trainer.ListTrainingJobs, trainer_pb2.ListTrainingJobsRequest(state=99), "state")  # type: ignore[arg-type]
    await assert_nothing_queued(trainer, nc)


async def test_a_dataset_version_field_takes_only_a_dataset_version_id(
    trainer: trainer_pb2_grpc.TrainingServiceStub, nc: NATS
) -> None:
    for bad in ("ds_0123", "job_0123", "dv_a.b", "dv_名字", "dv_a\n"):
        await refused(trainer.SubmitTraining, submit(bad), "dataset_version_id")
    await assert_nothing_queued(trainer, nc)


async def test_a_huge_search_space_is_refused_before_it_is_built(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str], nc: NATS
) -> None:
    version = await version_id(stack)
    values = trainer_pb2.ParamValues(values=[str(i) for i in range(1, 41)])
    space = {name: values for name in ("alpha", "tol", "max_iter", "solver", "fit_intercept")}  # 40**5 candidates
    started = time.monotonic()
    details = await refused(
        trainer.SubmitTraining, submit(version, search=trainer_pb2.SearchSpec(kind="grid", space=space)), "search.space"
    )
    assert "combinations" in details and time.monotonic() - started < 5
    await assert_nothing_queued(trainer, nc)


async def test_a_10kb_value_is_cut_in_the_error(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str]
) -> None:
    version = await version_id(stack)
    big = "x" * 10_240
    for request, field in [
        (submit(version, algorithm=big), "algorithm"),
        (submit(version, target=big), "target"),
        (submit(version, model_name=big), "model_name"),
        (submit(version, params={big: "1"}), "params"),
        (submit(version, params={"alpha": big}), "params.alpha"),
        (submit(big), "dataset_version_id"),
    ]:
        details = await refused(trainer.SubmitTraining, request, field)
        assert len(details) < 400 and "10240 characters" in details, details
    details = await refused(trainer.GetTrainingJob, trainer_pb2.GetTrainingJobRequest(job_id="job_" + big), "job_id")
    assert len(details) < 400


async def test_a_retraining_request_with_a_bad_job_id_is_dead_lettered_and_creates_nothing(
    trainer: trainer_pb2_grpc.TrainingServiceStub, stack: dict[str, str], nc: NATS
) -> None:
    version = await version_id(stack)
    js = nc.jetstream()
    sent = {}
    for job_id, field in (("ev_0123", "job_id"), ("job_0123", "job_id"), ("job_rt_a.b", "job_id")):
        event_id = f"edge-retrain:{uuid.uuid4().hex}"
        sent[event_id] = field
        await events.publish(
            js,
            events_pb2.RetrainingRequested(
                tenant=TENANT,
                lineage=common_pb2.Lineage(model_name="edge-model"),
                job_id=job_id,
                algorithm="ridge",
                target="target",
                model_name="edge-model",
                dataset_version_id=version,
                split_seed=1,
                test_fraction=0.2,
            ),
            tenant=TENANT,
            event_id=event_id,
            source="/lepton/monitor",
        )
    await expect_dead_lettered(js, "trainer-retrain", sent)
    assert list((await trainer.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest())).jobs) == []
