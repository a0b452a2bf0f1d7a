"""Evaluations on request, registry metadata, tenant isolation and tampered artifacts, end to end.

Runs on the session's platform after the demo pipeline (``pipeline`` fixture): real
NATS, the six services as processes, gRPC over loopback.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import grpc
import numpy as np
import polars as pl
import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from sklearn import datasets
from sklearn import metrics as skm

from lepton_core.rpc import client_channel
from lepton_ml import artifacts
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect, find_event

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def _upload(platform: EmbeddedPlatform, name: str, frame: pl.DataFrame) -> data_pb2.DatasetVersion:
    buf = io.BytesIO()
    frame.write_csv(buf)

    async def chunks() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=buf.getvalue())

    async with client_channel(platform.addresses["data"], platform.api_key) as ch:
        return await data_pb2_grpc.DataServiceStub(ch).UploadDataset(chunks())


async def _artifact(platform: EmbeddedPlatform, key: str, name: str, version: int) -> bytes:
    async with client_channel(platform.addresses["registry"], key) as ch:
        stream = registry_pb2_grpc.RegistryServiceStub(ch).DownloadArtifact(
            registry_pb2.GetModelVersionRequest(model_name=name, version=version)
        )
        return b"".join([chunk.data async for chunk in stream])


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value.code(), err.value.details() or ""


async def test_evaluate_on_request_on_any_dataset_version_with_cross_validation(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    diabetes = pl.from_pandas(datasets.load_diabetes(as_frame=True, scaled=False).frame)
    fresh = await _upload(platform, "diabetes-later", diabetes.tail(150))
    async with client_channel(platform.addresses["evaluator"], platform.api_key) as ch:
        stub = evaluator_pb2_grpc.EvaluationServiceStub(ch)
        # On the training data's held-out rows, it reproduces the automatic evaluation.
        again = await stub.Evaluate(evaluator_pb2.EvaluateRequest(model_name=name, model_version=version))
        assert again.rows == "holdout" and again.trigger == "request"
        assert dict(again.metrics) == pytest.approx(dict(pipeline.evaluation.metrics), abs=1e-12)
        assert again.evaluation_id != pipeline.evaluation.evaluation_id
        # On another dataset version: every row of it, and 3-fold cross-validation.
        other = await stub.Evaluate(
            evaluator_pb2.EvaluateRequest(model_name=name, dataset_version_id=fresh.version_id, cv_folds=3)
        )
        assert (other.rows, other.test_rows, other.lineage.dataset_version_id) == ("all", 150, fresh.version_id)
        assert other.lineage.model_version == version and other.cross_validation.folds == 3
        assert set(other.cross_validation.mean) == {"r2", "rmse"} and other.cross_validation.std["r2"] >= 0
        # The same request again is the stored evaluation, not a new one.
        repeat = await stub.Evaluate(
            evaluator_pb2.EvaluateRequest(model_name=name, dataset_version_id=fresh.version_id, cv_folds=3)
        )
        assert repeat.evaluation_id == other.evaluation_id and repeat.created_at == other.created_at
        listed = await stub.ListEvaluations(
            evaluator_pb2.ListEvaluationsRequest(model_name=name, model_version=version)
        )
        assert {other.evaluation_id, again.evaluation_id} <= {e.evaluation_id for e in listed.evaluations}
        plot = await stub.GetPlot(evaluator_pb2.GetPlotRequest(evaluation_id=other.evaluation_id, name="residuals"))
        assert plot.png.startswith(b"\x89PNG\r\n\x1a\n")
        by_id = await stub.GetEvaluation(evaluator_pb2.GetEvaluationRequest(evaluation_id=other.evaluation_id))
        assert by_id.metrics == other.metrics
    # The metrics are scikit-learn's on the model's own predictions for those rows.
    bundle = artifacts.load_bundle(
        await _artifact(platform, platform.api_key, name, version), platform.artifact_keys.trusted()
    )
    rows = diabetes.tail(150)
    predicted = bundle.predict(rows)
    truth = rows[bundle.signature.target].to_numpy().astype(np.float64)
    assert other.metrics["r2"] == pytest.approx(skm.r2_score(truth, predicted), abs=1e-9)
    assert other.metrics["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted), abs=1e-9)
    # The lineage lists the training's evaluation and the requested ones.
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        graph = await registry_pb2_grpc.RegistryServiceStub(ch).GetLineage(
            registry_pb2.GetModelVersionRequest(model_name=name, version=version)
        )
    triggers = {e.evaluation_id: (e.trigger, e.dataset_version_id) for e in graph.evaluations}
    assert triggers[pipeline.evaluation.evaluation_id][0] == "training"
    assert triggers[other.evaluation_id] == ("request", fresh.version_id)


async def test_bad_evaluation_requests_say_which_field(pipeline: PipelineResult, platform: EmbeddedPlatform) -> None:
    name = pipeline.model_version.model_name
    iris = await _upload(platform, "iris-not-diabetes", pl.from_pandas(datasets.load_iris(as_frame=True).frame))
    async with client_channel(platform.addresses["evaluator"], platform.api_key) as ch:
        stub = evaluator_pb2_grpc.EvaluationServiceStub(ch)
        cases = [
            (evaluator_pb2.EvaluateRequest(), grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
            (evaluator_pb2.EvaluateRequest(model_name=name, rows="some"), grpc.StatusCode.INVALID_ARGUMENT, "rows"),
            (evaluator_pb2.EvaluateRequest(model_name=name, cv_folds=1), grpc.StatusCode.INVALID_ARGUMENT, "cv_folds"),
            (evaluator_pb2.EvaluateRequest(model_name="no-such-model"), grpc.StatusCode.NOT_FOUND, "model"),
            (
                evaluator_pb2.EvaluateRequest(model_name=name, dataset_version_id="dv_missing"),
                grpc.StatusCode.NOT_FOUND,
                "dv_missing",
            ),
            (
                evaluator_pb2.EvaluateRequest(model_name=name, dataset_version_id=iris.version_id),
                grpc.StatusCode.FAILED_PRECONDITION,
                "dataset_version_id",
            ),
        ]
        for request, code, mentioned in cases:
            got, details = await _code(stub.Evaluate(request))
            assert (got, mentioned in details) == (code, True), (request, got, details)
        got, details = await _code(stub.GetEvaluation(evaluator_pb2.GetEvaluationRequest()))
        assert got == grpc.StatusCode.INVALID_ARGUMENT


async def test_model_metadata_changes_are_events_and_searchable(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        stub = registry_pb2_grpc.RegistryServiceStub(ch)
        model = await stub.UpdateModel(
            registry_pb2.UpdateModelRequest(name=name, description="diabetes progression", set_tags={"team": "care"})
        )
        assert (model.description, dict(model.tags), model.owner, model.task) == (
            "diabetes progression",
            {"team": "care"},
            platform.tenant,
            "regression",
        )
        tagged = await stub.UpdateModelVersion(
            registry_pb2.UpdateModelVersionRequest(model_name=name, version=version, set_tags={"reviewed": "yes"})
        )
        assert dict(tagged.tags) == {"reviewed": "yes"} and tagged.status == "ready"
        assert tagged.task == "regression" and set(tagged.plots) == set(pipeline.evaluation.plots)
        found = await stub.SearchModelVersions(
            registry_pb2.SearchModelVersionsRequest(tags={"team": "care", "reviewed": "yes"})
        )
        assert [(v.model_name, v.version) for v in found.versions] == [(name, version)]
        none = await stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(tags={"team": "other"}))
        assert list(none.versions) == []
        # A version an alias points at cannot be archived.
        await stub.SetAlias(registry_pb2.SetAliasRequest(model_name=name, alias="under-review", version=version))
        code, details = await _code(
            stub.UpdateModelVersion(
                registry_pb2.UpdateModelVersionRequest(model_name=name, version=version, status="archived")
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "under-review" in details
        await stub.DeleteAlias(registry_pb2.DeleteAliasRequest(model_name=name, alias="under-review"))
        code, details = await _code(
            stub.UpdateModel(registry_pb2.UpdateModelRequest(name=name, set_tags={"no spaces": "x"}))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("set_tags:")
    prefix = f"lepton.evt.{platform.tenant}.registry"
    seen = [
        (await find_event(platform.nats_url, f"{prefix}.model.updated", lambda e: e.lineage.model_name == name)).data,
        (await find_event(platform.nats_url, f"{prefix}.version.updated", lambda e: e.lineage.model_name == name)).data,
    ]
    model_event, version_event = seen
    assert isinstance(model_event, events_pb2.ModelUpdated) and list(model_event.changed) == ["description", "tags"]
    assert isinstance(version_event, events_pb2.ModelVersionUpdated)
    assert version_event.lineage.model_version == version and dict(version_event.tags) == {"reviewed": "yes"}


async def test_another_tenants_model_is_not_found(pipeline: PipelineResult, platform: EmbeddedPlatform) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    intruder = platform.key_for("intruder")
    version_request = registry_pb2.GetModelVersionRequest(model_name=name, version=version)
    async with (
        client_channel(platform.addresses["registry"], intruder) as r,
        client_channel(platform.addresses["evaluator"], intruder) as e,
    ):
        registry = registry_pb2_grpc.RegistryServiceStub(r)
        calls = {
            "GetModel": registry.GetModel(registry_pb2.GetModelRequest(name=name)),
            "GetModelVersion": registry.GetModelVersion(version_request),
            "GetLineage": registry.GetLineage(version_request),
            "SetAlias": registry.SetAlias(registry_pb2.SetAliasRequest(model_name=name, alias="champion", version=1)),
            "UpdateModel": registry.UpdateModel(registry_pb2.UpdateModelRequest(name=name, description="mine")),
            "Evaluate": evaluator_pb2_grpc.EvaluationServiceStub(e).Evaluate(
                evaluator_pb2.EvaluateRequest(model_name=name)
            ),
            "GetEvaluation": evaluator_pb2_grpc.EvaluationServiceStub(e).GetEvaluation(
                evaluator_pb2.GetEvaluationRequest(training_job_id=pipeline.job.job_id)
            ),
        }
        for what, call in calls.items():
            code, _ = await _code(call)
            assert code == grpc.StatusCode.NOT_FOUND, what
        code, _ = await _code(_artifact(platform, intruder, name, version))
        assert code == grpc.StatusCode.NOT_FOUND
        assert list((await registry.ListModels(registry_pb2.ListModelsRequest())).models) == []
        found = await registry.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(name_contains=name))
        assert list(found.versions) == []
    # Nothing the intruder tried changed the owner's model.
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        model = await registry_pb2_grpc.RegistryServiceStub(ch).GetModel(registry_pb2.GetModelRequest(name=name))
    assert model.description != "mine"


async def test_a_tampered_artifact_is_refused(pipeline: PipelineResult, platform: EmbeddedPlatform) -> None:
    """Bytes changed in the object store after registration: every read through the registry refuses them."""
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    ref = pipeline.model_version.artifact
    nc = await admin_connect(platform.nats_url, "test-tamper")
    obs = await nc.jetstream().object_store(ref.bucket)
    original = (await obs.get(ref.name)).data
    assert original is not None
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    try:
        await obs.put(ref.name, bytes(tampered))
        code, details = await _code(_artifact(platform, platform.api_key, name, version))
        assert code == grpc.StatusCode.DATA_LOSS and ref.digest in details, details
        async with client_channel(platform.addresses["evaluator"], platform.api_key) as ch:
            code, details = await _code(
                evaluator_pb2_grpc.EvaluationServiceStub(ch).Evaluate(
                    evaluator_pb2.EvaluateRequest(model_name=name, model_version=version, rows="all")
                )
            )
        assert code == grpc.StatusCode.DATA_LOSS, details
    finally:
        await obs.put(ref.name, original)
        await nc.close()
    assert await _artifact(platform, platform.api_key, name, version) == original
