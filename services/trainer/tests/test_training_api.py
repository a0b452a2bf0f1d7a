"""Training through the service on real NATS: every algorithm, jobs, cancel, crash recovery.

A data service and trainer processes run on the session's nats-server. Every
prediction check trains the same estimator directly in scikit-learn on the same
rows with the same seed and compares predictions on the held-out rows.
"""

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
import pytest_asyncio
import torch
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.aio.client import Client as NATS
from sklearn import datasets

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM, ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_from_pb
from lepton_ml import artifacts, splits
from lepton_platform.testing import StartService, artifact_keys
from lepton_trainer.catalogue import CATALOGUE, CLASSIFICATION, CLUSTERING, REGRESSION

pytestmark = pytest.mark.timeout(600)

KEY = "trainer-test-key"
TENANT = "tr" + uuid.uuid4().hex[:8]
DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
# Which bundled dataset each task trains on, and quick parameters for slow defaults.
DATASET_FOR = {REGRESSION: "diabetes", CLASSIFICATION: "breast-cancer", CLUSTERING: "iris"}
PARAMS = {
    "logistic_regression": {"max_iter": "5000"},
    "random_forest_classifier": {"n_estimators": "20"},
    "random_forest_regressor": {"n_estimators": "20"},
    "gradient_boosting_classifier": {"max_iter": "30"},
    "gradient_boosting_regressor": {"max_iter": "30"},
    "lasso": {"alpha": "0.1"},
    "elastic_net": {"alpha": "0.01"},
    "kmeans": {"n_clusters": "3"},
    "mlp_classifier": {"epochs": "60"},
    "mlp_regressor": {"epochs": "60", "hidden_layers": "32"},
}


@pytest.fixture(scope="module")
def stack(service: StartService) -> dict[str, str]:
    keys = {KEY: TENANT}
    data = service("data", keys)
    workers = {
        name: service("trainer", keys, data_url=data, worker_id=name, job_ack_wait_s="3")
        for name in ("worker-a", "worker-b")
    }
    return {"data": data, **workers}


@pytest_asyncio.fixture
async def stubs(
    stack: dict[str, str],
) -> AsyncIterator[tuple[data_pb2_grpc.DataServiceStub, trainer_pb2_grpc.TrainingServiceStub]]:
    async with client_channel(stack["data"], KEY) as d, client_channel(stack["worker-a"], KEY) as t:
        yield data_pb2_grpc.DataServiceStub(d), trainer_pb2_grpc.TrainingServiceStub(t)


def bundled(name: str) -> pl.DataFrame:
    loader = {
        "diabetes": datasets.load_diabetes,
        "breast-cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
    }[name]
    return pl.from_pandas(loader(as_frame=True).frame)


_VERSIONS: dict[str, str] = {}


async def version_of(data: data_pb2_grpc.DataServiceStub, name: str) -> str:
    if name not in _VERSIONS:
        buf = io.BytesIO()
        bundled(name).write_parquet(buf)

        async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
            yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="parquet"))
            yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

        _VERSIONS[name] = (await data.UploadDataset(parts())).version_id
    return _VERSIONS[name]


async def wait_done(
    trainer: trainer_pb2_grpc.TrainingServiceStub, job_id: str, timeout: float = 300
) -> trainer_pb2.TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job_id))
        if job.state in DONE:
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish")


async def test_every_algorithm_matches_scikit_learn(stubs: tuple, nc: NATS) -> None:  # type: ignore[type-arg]
    data, trainer = stubs
    submitted = {}
    for name, algo in CATALOGUE.items():
        dataset = DATASET_FOR[algo.task]
        job = await trainer.SubmitTraining(
            trainer_pb2.SubmitTrainingRequest(
                dataset_version_id=await version_of(data, dataset),
                algorithm=name,
                target="target",  # for k-means: the label column, kept out of the features
                params=PARAMS.get(name, {}),
                split_seed=11,
                test_fraction=0.25,
                seed=5,
            )
        )
        assert job.task == algo.task and job.seed == 5
        submitted[name] = job.job_id
    objects = ObjectStore(nc.jetstream())
    torch.set_num_threads(1)  # as in the fit process: float32 sums in the same order, bit-equal results
    for name, job_id in submitted.items():
        job = await wait_done(trainer, job_id)
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, (name, job.error)
        algo = CATALOGUE[name]
        frame = bundled(DATASET_FOR[algo.task])
        features = [c for c in frame.columns if c != "target"]
        x = frame.select(features).to_numpy().astype(np.float64)
        y = frame["target"].to_numpy().astype(np.float64)
        train, test = splits.holdout_split(len(x), 11, 0.25)
        direct, _ = algo.make(PARAMS.get(name, {}), seed=5)
        direct.fit(x[train]) if algo.task == CLUSTERING else direct.fit(x[train], y[train])
        model, signature = artifacts.unpack(await objects.get(ref_from_pb(job.artifact)), artifact_keys().trusted())
        assert signature.task == algo.task and list(job.features) == features
        np.testing.assert_allclose(model.predict(x[test]), direct.predict(x[test]), rtol=0, atol=1e-9, err_msg=name)
        if name == "mlp_classifier":
            assert (model.predict(x[test]) == y[test]).mean() >= 0.9  # breast cancer
            assert job.metrics["epoch"] >= 1 and "train_loss" in job.metrics


async def test_list_watch_and_catalogue(stubs: tuple) -> None:  # type: ignore[type-arg]
    data, trainer = stubs
    catalogue = await trainer.ListAlgorithms(trainer_pb2.ListAlgorithmsRequest())
    by_name = {a.name: a for a in catalogue.algorithms}
    assert set(by_name) == set(CATALOGUE)
    alpha = next(p for p in by_name["ridge"].params if p.name == "alpha")
    assert (alpha.type, alpha.default, alpha.min) == ("float", "1.0", 0.0)
    kernel = next(p for p in by_name["svc"].params if p.name == "kernel")
    assert list(kernel.choices) == ["linear", "rbf", "poly", "sigmoid"]
    job = await trainer.SubmitTraining(
        trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=await version_of(data, "wine"), algorithm="knn_classifier", target="target"
        )
    )
    states = [j.state async for j in trainer.WatchTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))]
    assert states[-1] == trainer_pb2.JOB_STATE_SUCCEEDED and trainer_pb2.JOB_STATE_RUNNING in states
    listed = await trainer.ListTrainingJobs(
        trainer_pb2.ListTrainingJobsRequest(state=trainer_pb2.JOB_STATE_SUCCEEDED, limit=3)
    )
    assert len(listed.jobs) == 3 and listed.jobs[0].job_id == job.job_id


async def test_a_running_job_is_cancelled(stubs: tuple, nc: NATS) -> None:  # type: ignore[type-arg]
    data, trainer = stubs
    job = await trainer.SubmitTraining(
        trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=await version_of(data, "breast-cancer"),
            algorithm="random_forest_classifier",
            target="target",
            params={"n_estimators": "10000"},
        )
    )
    deadline = time.monotonic() + 60
    while (await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))).stage != "fitting":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    asked = time.monotonic()
    await trainer.CancelTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
    final = await wait_done(trainer, job.job_id, 30)
    assert final.state == trainer_pb2.JOB_STATE_CANCELLED
    assert time.monotonic() - asked < 10
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await trainer.CancelTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_killed_worker_s_job_finishes_once_elsewhere(
    stubs: tuple,
    stack: dict[str, str],
    service: StartService,
    nc: NATS,  # type: ignore[type-arg]
) -> None:
    data, trainer = stubs
    job = await trainer.SubmitTraining(
        trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=await version_of(data, "diabetes"),
            algorithm="random_forest_regressor",
            target="target",
            params={"n_estimators": "1500"},
            model_name="crash-test",
        )
    )
    deadline = time.monotonic() + 60
    while True:
        current = await trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
        if current.stage == "fitting":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    victim = current.worker_id
    survivor = "worker-b" if victim == "worker-a" else "worker-a"
    service.process(stack[victim]).proc.kill()  # kill -9, mid-fit
    async with client_channel(stack[survivor], KEY) as channel:
        other = trainer_pb2_grpc.TrainingServiceStub(channel)
        final = await wait_done(other, job.job_id, 240)
    assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED, final.error
    assert final.worker_id == survivor and final.attempts == 2
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{TENANT}.training.completed", stream=EVENTS_STREAM, ordered_consumer=True
    )
    completed = []
    while True:
        try:
            event = events.decode(await sub.next_msg(timeout=2))
        except TimeoutError:
            break
        assert isinstance(event.data, events_pb2.TrainingCompleted)
        if event.data.lineage.training_job_id == job.job_id:
            completed.append(event)
    await sub.unsubscribe()
    assert len(completed) == 1
