"""A torch MLP trained by the platform serves from Triton with the same predictions."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
import polars as pl
import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from sklearn.datasets import load_breast_cancer

from lepton_core.bus import ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_from_pb
from lepton_ml import artifacts
from lepton_platform.demo import infer, poll, settled
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_mlp_from_upload_to_triton(platform: EmbeddedPlatform) -> None:
    frame = pl.from_pandas(load_breast_cancer(as_frame=True).frame)
    buf = io.BytesIO()
    frame.write_parquet(buf)

    async def upload() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="cancer", format="parquet"))
        yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

    key, a = platform.api_key, platform.addresses
    async with (
        client_channel(a["data"], key) as data_ch,
        client_channel(a["trainer"], key) as trainer_ch,
        client_channel(a["evaluator"], key) as eval_ch,
        client_channel(a["registry"], key) as reg_ch,
        client_channel(a["deployer"], key) as dep_ch,
    ):
        version = await data_pb2_grpc.DataServiceStub(data_ch).UploadDataset(upload(), timeout=60)
        job = await trainer_pb2_grpc.TrainingServiceStub(trainer_ch).SubmitTraining(
            trainer_pb2.SubmitTrainingRequest(
                dataset_version_id=version.version_id,
                algorithm="mlp_classifier",
                target="target",
                params={"epochs": "40", "hidden_layers": "32,16"},
                model_name="cancer-mlp",
            )
        )
        evaluation = await poll(
            "evaluation",
            lambda: evaluator_pb2_grpc.EvaluationServiceStub(eval_ch).GetEvaluation(
                evaluator_pb2.GetEvaluationRequest(training_job_id=job.job_id)
            ),
            lambda e: True,
            240,
        )
        model_version = await poll(
            "registration",
            lambda: registry_pb2_grpc.RegistryServiceStub(reg_ch).GetModelVersion(
                registry_pb2.GetModelVersionRequest(model_name="cancer-mlp")
            ),
            lambda v: v.lineage.training_job_id == job.job_id,
            120,
        )
        deployment = await poll(
            "deployment",
            lambda: deployer_pb2_grpc.DeploymentServiceStub(dep_ch).GetDeployment(
                deployer_pb2.GetDeploymentRequest(name="cancer-mlp")
            ),
            settled,
            300,
        )
    assert deployment.state == deployer_pb2.DEPLOYMENT_STATE_READY, deployment.error
    assert evaluation.metrics["accuracy"] >= 0.9
    rows = frame.drop("target").slice(0, 20)
    served = await infer(platform.gateway_url, platform.api_key, deployment, rows)
    nc = await admin_connect(platform.nats_url, "test-mlp")
    try:
        raw = await ObjectStore(nc.jetstream()).get(ref_from_pb(model_version.artifact))
    finally:
        await nc.close()
    assert platform.artifact_keys is not None
    bundle = artifacts.load_bundle(raw, platform.artifact_keys.trusted())
    assert sorted(artifacts.unpack_files(raw, platform.artifact_keys.trusted())) == [
        "architecture.json",
        "model.onnx",
        "model.safetensors",
        "signature.json",
    ]
    np.testing.assert_array_equal(served, bundle.predict(rows).astype(np.float64))
