"""A recipe's fitted preprocessing travels with the model: Triton takes raw rows.

Raw diabetes data with a text column and missing values goes in; a recipe fills,
standardises and one-hot encodes it into a new version; the platform trains on that
version, registers and deploys the model; then Triton is sent RAW rows (text and
NaN included) and must answer exactly what the same estimator, trained directly in
scikit-learn on the recipe's output, predicts for those rows after the recipe.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import numpy as np
import polars as pl
import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from lepton_core.bus import ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_from_pb
from lepton_ml import artifacts, recipes, splits
from lepton_platform.demo import infer, poll, settled
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RECIPE = {
    "steps": [
        {"op": "fill_nulls", "column": "bmi", "strategy": "mean"},
        {"op": "standardize", "columns": ["age", "bmi", "bp"]},
        {"op": "one_hot", "column": "region"},
    ]
}


def raw_frame() -> pl.DataFrame:
    frame = pl.from_pandas(load_diabetes(as_frame=True, scaled=False).frame)
    regions = np.array(["north", "south", "east"])[np.arange(frame.height) % 3]
    bmi = frame["bmi"].to_list()
    for i in range(0, frame.height, 11):
        bmi[i] = None  # missing values the recipe fills with the fitted mean
    return frame.with_columns(pl.Series("region", regions), pl.Series("bmi", bmi, dtype=pl.Float64))


async def test_serving_replays_the_recipe_on_raw_rows(platform: EmbeddedPlatform) -> None:
    raw = raw_frame()
    buf = io.BytesIO()
    raw.write_csv(buf)

    async def upload() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="diabetes-raw", format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

    key, a = platform.api_key, platform.addresses
    async with (
        client_channel(a["data"], key) as data_ch,
        client_channel(a["trainer"], key) as trainer_ch,
        client_channel(a["registry"], key) as reg_ch,
        client_channel(a["deployer"], key) as dep_ch,
    ):
        data = data_pb2_grpc.DataServiceStub(data_ch)
        v0 = await data.UploadDataset(upload(), timeout=60)
        v1 = await data.ApplyRecipe(
            data_pb2.ApplyRecipeRequest(version_id=v0.version_id, recipe_json=json.dumps(RECIPE))
        )
        trainer = trainer_pb2_grpc.TrainingServiceStub(trainer_ch)
        job = await trainer.SubmitTraining(
            trainer_pb2.SubmitTrainingRequest(
                dataset_version_id=v1.version_id,
                algorithm="ridge",
                target="target",
                params={"alpha": "0.5"},
                model_name="diabetes-prep",
                split_seed=3,
                test_fraction=0.25,
            )
        )
        version = await poll(
            "registration",
            lambda: registry_pb2_grpc.RegistryServiceStub(reg_ch).GetModelVersion(
                registry_pb2.GetModelVersionRequest(model_name="diabetes-prep")
            ),
            lambda v: v.lineage.training_job_id == job.job_id,
            180,
        )
        deployment = await poll(
            "deployment",
            lambda: deployer_pb2_grpc.DeploymentServiceStub(dep_ch).GetDeployment(
                deployer_pb2.GetDeploymentRequest(name="diabetes-prep")
            ),
            lambda d: settled(d, version.version),
            300,
        )
    assert deployment.state == deployer_pb2.DEPLOYMENT_STATE_READY, deployment.error
    assert list(deployment.text_columns) == ["region"]
    assert "target" not in deployment.feature_columns and "bmi" in deployment.feature_columns

    rows = raw.slice(0, 12).drop("target")  # rows 0 and 11 have no bmi
    served = await infer(platform.gateway_url, platform.api_key, deployment, rows)

    # The same estimator trained directly on the recipe's output, on the same rows.
    transformed, fitted = recipes.fit_transform(raw, recipes.parse_recipe(json.dumps(RECIPE)))
    features = list(version.features)
    train_idx, _ = splits.holdout_split(transformed.height, 3, 0.25)
    x = transformed.select(features).to_numpy()
    direct = Ridge(alpha=0.5).fit(x[train_idx], transformed["target"].to_numpy()[train_idx])
    expected = direct.predict(
        recipes.transform(rows, recipes.parse_recipe(json.dumps(RECIPE)), fitted).select(features).to_numpy()
    )
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)

    # And the artifact alone (what the SDK uses without Triton) agrees.
    nc = await admin_connect(platform.nats_url, "test-prep")
    try:
        assert platform.artifact_keys is not None
        signed = await ObjectStore(nc.jetstream()).get(ref_from_pb(version.artifact))
        bundle = artifacts.load_bundle(signed, platform.artifact_keys.trusted())
    finally:
        await nc.close()
    assert bundle.preprocess is not None and bundle.signature.text_inputs() == ["region"]
    np.testing.assert_allclose(bundle.predict(rows), expected, rtol=0, atol=1e-6)

    # The lineage of that version, gathered from every service: recipe'd dataset back to the upload.
    async with client_channel(a["registry"], key) as reg_ch:
        graph = await registry_pb2_grpc.RegistryServiceStub(reg_ch).GetLineage(
            registry_pb2.GetModelVersionRequest(model_name="diabetes-prep", version=version.version)
        )
    assert list(graph.warnings) == []
    assert [(d.version_id, d.origin) for d in graph.datasets] == [(v1.version_id, "recipe"), (v0.version_id, "upload")]
    assert graph.datasets[0].parent_version_id == v0.version_id and '"one_hot"' in graph.datasets[0].recipe_json
    assert (graph.job.job_id, graph.job.algorithm, graph.job.state) == (job.job_id, "ridge", "succeeded")
    assert graph.evaluations[0].metrics["r2"] == version.metrics["r2"]
    assert [(d.name, d.state) for d in graph.deployments] == [("diabetes-prep", "ready")]
