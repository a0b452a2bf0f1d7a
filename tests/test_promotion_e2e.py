"""Champion/challenger: each new version is compared with the champion and the policy decides."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from sklearn.datasets import load_diabetes

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL = "cc-diabetes"


async def test_a_better_challenger_is_promoted_and_a_worse_one_is_not(platform: EmbeddedPlatform) -> None:
    buf = io.BytesIO()
    load_diabetes(as_frame=True).frame.to_csv(buf, index=False)

    async def upload() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="cc-data", format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

    key, a = platform.api_key, platform.addresses
    async with (
        client_channel(a["data"], key) as d,
        client_channel(a["trainer"], key) as t,
        client_channel(a["registry"], key) as r,
    ):
        version_id = (await data_pb2_grpc.DataServiceStub(d).UploadDataset(upload())).version_id
        trainer, registry = trainer_pb2_grpc.TrainingServiceStub(t), registry_pb2_grpc.RegistryServiceStub(r)

        async def train(algorithm: str, params: dict[str, str]) -> int:
            job = await trainer.SubmitTraining(
                trainer_pb2.SubmitTrainingRequest(
                    dataset_version_id=version_id, algorithm=algorithm, target="target", params=params, model_name=MODEL
                )
            )
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    versions = await registry.ListModelVersions(registry_pb2.ListModelVersionsRequest(model_name=MODEL))
                    for v in versions.versions:
                        if v.lineage.training_job_id == job.job_id:
                            return v.version
                except Exception:
                    pass
                await asyncio.sleep(0.2)
            raise TimeoutError(f"{algorithm} was not registered")

        async def champion(wanted: int) -> int:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                current = dict((await registry.GetModel(registry_pb2.GetModelRequest(name=MODEL))).aliases).get(
                    "champion", 0
                )
                if current == wanted:
                    return current
                await asyncio.sleep(0.2)
            return current

        v1 = await train("ridge", {"alpha": "1000"})  # nearly a constant: a poor model
        await registry.SetPromotionPolicy(
            registry_pb2.SetPromotionPolicyRequest(
                model_name=MODEL,
                policy=events_pb2.PromotionPolicy(metric="r2", min_improvement=0.01, auto_promote=True),
            )
        )
        await registry.SetAlias(
            registry_pb2.SetAliasRequest(model_name=MODEL, alias="champion", version=v1, expected_version=0)
        )
        v2 = await train("linear_regression", {})
        assert await champion(v2) == v2
        v3 = await train("ridge", {"alpha": "100000"})  # worse than the champion
        await asyncio.sleep(3)  # give a wrong promotion the chance to happen
        assert await champion(v2) == v2

    nc = await admin_connect(platform.nats_url, "test-promotion")
    try:
        sub = await nc.jetstream().subscribe(
            f"lepton.evt.{platform.tenant}.evaluation.comparison.completed", stream=EVENTS_STREAM, ordered_consumer=True
        )
        decided: dict[int, events_pb2.EvaluationComparisonCompleted] = {}
        deadline = time.monotonic() + 30
        while {v2, v3} - set(decided) and time.monotonic() < deadline:
            try:
                event = events.decode(await sub.next_msg(timeout=2))
            except TimeoutError:
                continue
            if event.data.lineage.model_name == MODEL:
                decided[event.data.lineage.model_version] = event.data
        await sub.unsubscribe()
    finally:
        await nc.close()
    better, worse = decided[v2], decided[v3]
    assert better.decision == "promote" and better.champion_version == v1 and better.difference > 0.01
    assert better.ci_low <= better.difference <= better.ci_high
    assert worse.decision == "keep" and worse.champion_version == v2 and worse.difference < 0
    assert any("below the policy's minimum" in reason for reason in worse.reasons)
