"""End to end: the walking skeleton through real NATS, real Triton and six service processes.

One session-scoped platform (see ``lepton_platform.testing``) runs the same pipeline
``make demo`` runs; these tests assert what the demo only prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from nats.js import api as js_api

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM, PREDICTIONS_STREAM, ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.wire import ref_from_pb
from lepton_ml import artifacts
from lepton_platform.demo import PipelineResult, write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import SERVICES
from lepton_platform.testing import admin_connect, find_event
from lepton_platform.tracesink import TraceSink

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


async def test_triton_predictions_equal_in_process_predictions(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    nc = await admin_connect(platform.nats_url, "test-artifact")
    try:
        artifact = await ObjectStore(nc.jetstream()).get(ref_from_pb(pipeline.model_version.artifact))
    finally:
        await nc.close()
    assert platform.artifact_keys is not None
    model, signature = artifacts.unpack(artifact, platform.artifact_keys.trusted())
    assert signature.features == list(pipeline.model_version.features)
    expected = model.predict(pipeline.rows)
    np.testing.assert_allclose(pipeline.predictions, expected, rtol=0, atol=1e-6)
    assert pipeline.predictions.shape == (5,)


async def test_lineage_points_to_dataset_version_and_job(pipeline: PipelineResult, platform: EmbeddedPlatform) -> None:
    lin = pipeline.model_version.lineage
    assert lin.dataset_version_id == pipeline.dataset_version.version_id
    assert lin.dataset_id == pipeline.dataset_version.dataset_id
    assert lin.training_job_id == pipeline.job.job_id
    assert lin.evaluation_id == pipeline.evaluation.evaluation_id
    assert pipeline.deployment.lineage.model_version == pipeline.model_version.version
    assert pipeline.deployment.lineage.dataset_version_id == pipeline.dataset_version.version_id
    assert pipeline.model_version.metrics == pipeline.evaluation.metrics
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        versions = await registry_pb2_grpc.RegistryServiceStub(ch).ListModelVersions(
            registry_pb2.ListModelVersionsRequest(model_name=pipeline.model_version.model_name)
        )
    assert [v.lineage.training_job_id for v in versions.versions] == [pipeline.job.job_id]


def test_metrics_are_those_of_the_held_out_rows(pipeline: PipelineResult) -> None:
    m = pipeline.evaluation.metrics
    assert {"r2", "mse", "rmse", "mae", "mape", "explained_variance"} <= set(m)
    assert pipeline.evaluation.test_rows == round(442 * 0.2)
    assert m["rmse"] == pytest.approx(m["mse"] ** 0.5)
    # A linear model on diabetes explains a fair share of the variance, not all of it.
    assert 0.2 < m["r2"] < 0.7


def test_one_trace_covers_all_six_services(pipeline: PipelineResult, trace_sink: TraceSink) -> None:
    assert len(pipeline.trace_id) == 32
    assert {f"lepton-{s}" for s in SERVICES} <= pipeline.services_in_trace
    assert pipeline.services_in_trace == trace_sink.services(pipeline.trace_id)


def test_monitor_counted_the_prediction_log(pipeline: PipelineResult) -> None:
    assert pipeline.monitor.logged_requests >= 1
    assert pipeline.monitor.logged_rows >= 5
    assert pipeline.monitor.requests_by_version[pipeline.model_version.version] >= 1


async def _all_messages(js: object, stream: str) -> list[object]:
    sub = await js.subscribe(  # type: ignore[attr-defined]
        f"{'lepton.evt' if stream == EVENTS_STREAM else 'lepton.pred'}.>",
        stream=stream,
        ordered_consumer=True,
        deliver_policy=js_api.DeliverPolicy.ALL,
    )
    info = await js.stream_info(stream)  # type: ignore[attr-defined]
    out = []
    for _ in range(info.state.messages):
        out.append(await sub.next_msg(timeout=5))
    await sub.unsubscribe()
    return out


async def test_every_event_on_the_bus_is_a_cloudevent_with_a_protobuf_payload(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    nc = await admin_connect(platform.nats_url, "test-events")
    try:
        js = nc.jetstream()
        msgs = await _all_messages(js, EVENTS_STREAM) + await _all_messages(js, PREDICTIONS_STREAM)
    finally:
        await nc.close()
    assert msgs
    seen_types = set()
    for msg in msgs:
        event = events.decode(msg)  # type: ignore[arg-type]
        assert event.headers["content-type"].startswith("application/protobuf; proto=lepton.events.v1.")
        assert event.headers.get("traceparent", "").startswith("00-"), (msg.subject, event.headers)
        # Other tests' tenants (the "intruder" key) publish too: each event is its subject's tenant's.
        assert event.data.tenant == msg.subject.split(".")[2]
        assert event.headers["Nats-Msg-Id"] == event.id
        seen_types.add(type(event.data))
    assert {
        events_pb2.DatasetVersionCreated,
        events_pb2.TrainingQueued,
        events_pb2.TrainingStarted,
        events_pb2.TrainingCompleted,
        events_pb2.EvaluationCompleted,
        events_pb2.ModelVersionCreated,
        events_pb2.DeploymentReady,
        events_pb2.PredictionLogBatch,
    } <= seen_types


@pytest_asyncio.fixture
async def channels(platform: EmbeddedPlatform) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    chans = {name: client_channel(addr, platform.api_key) for name, addr in platform.addresses.items()}
    try:
        yield chans
    finally:
        await asyncio.gather(*(c.close() for c in chans.values()))


async def test_every_service_answers_health_serving(platform: EmbeddedPlatform) -> None:
    for name, address in platform.addresses.items():
        async with grpc.aio.insecure_channel(address) as ch:
            resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, name


@pytest.mark.parametrize("key", [None, "not-a-key"])
async def test_calls_without_a_valid_api_key_are_unauthenticated(platform: EmbeddedPlatform, key: str | None) -> None:
    calls = {
        "data": lambda ch: data_pb2_grpc.DataServiceStub(ch).ListDatasetVersions(data_pb2.ListDatasetVersionsRequest()),
        "trainer": lambda ch: trainer_pb2_grpc.TrainingServiceStub(ch).GetTrainingJob(
            trainer_pb2.GetTrainingJobRequest(job_id="x")
        ),
        "registry": lambda ch: registry_pb2_grpc.RegistryServiceStub(ch).ListModels(registry_pb2.ListModelsRequest()),
        "deployer": lambda ch: deployer_pb2_grpc.DeploymentServiceStub(ch).ListDeployments(
            deployer_pb2.ListDeploymentsRequest()
        ),
    }
    from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
    from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc

    calls["evaluator"] = lambda ch: evaluator_pb2_grpc.EvaluationServiceStub(ch).GetEvaluation(
        evaluator_pb2.GetEvaluationRequest(training_job_id="x")
    )
    calls["monitor"] = lambda ch: monitor_pb2_grpc.MonitorServiceStub(ch).GetPredictionStats(
        monitor_pb2.GetPredictionStatsRequest(deployment="x")
    )
    assert set(calls) == set(SERVICES)
    for name, call in calls.items():
        async with client_channel(platform.addresses[name], key) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(ch)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert "API key" in (err.value.details() or "")


async def _upload(ch: grpc.aio.Channel, name: str, raw: bytes, chunk: int = 1000) -> data_pb2.DatasetVersion:
    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="csv"))
        for i in range(0, len(raw), chunk):
            yield data_pb2.UploadDatasetRequest(chunk=raw[i : i + chunk])

    return await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts(), timeout=30)


async def test_same_bytes_give_the_same_version_and_no_second_copy(
    channels: dict[str, grpc.aio.Channel], tmp_path: Path
) -> None:
    raw = write_diabetes_csv(tmp_path / "d.csv").read_bytes()
    first = await _upload(channels["data"], "dedupe-check", raw)
    second = await _upload(channels["data"], "dedupe-check", raw, chunk=7777)
    assert first.version_id == second.version_id
    assert not first.deduplicated and second.deduplicated
    assert first.object.digest == second.object.digest
    listed = await data_pb2_grpc.DataServiceStub(channels["data"]).ListDatasetVersions(
        data_pb2.ListDatasetVersionsRequest(dataset_name="dedupe-check")
    )
    assert [v.version_id for v in listed.versions] == [first.version_id]


@pytest.mark.parametrize(
    ("name", "raw", "field", "words"),
    [
        ("empty", b"", "chunk", "empty"),
        ("header-only", b"a,b,c\n", "chunk", "no data rows"),
        ("garbage", bytes(range(256)) * 4, "chunk", "binary, not CSV"),
        ("ragged", b"a,b\n1,2\n3,4,5,6\n", "chunk", "could not be parsed"),
        ("dup-cols", b"a,a\n1,2\n", "chunk", "duplicate column names: a"),
        ("bad-quoting", b'a,b\n1,"2\n', "chunk", "could not be parsed"),
        ("../../etc/passwd", b"a\n1\n", "header.dataset_name", "expected a dataset name"),
        ("path-col", b"../../etc/passwd,b\n1,2\n", "chunk", "path-like"),
    ],
)
async def test_bad_uploads_are_invalid_argument_and_store_nothing(
    channels: dict[str, grpc.aio.Channel], name: str, raw: bytes, field: str, words: str
) -> None:
    stub = data_pb2_grpc.DataServiceStub(channels["data"])
    before = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _upload(channels["data"], name, raw)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith(field + ":"), details
    assert words in details, details
    after = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
    assert len(after.versions) == len(before.versions)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"algorithm": "quantum_forest"}, grpc.StatusCode.INVALID_ARGUMENT, "algorithm"),
        ({"params": {"alpha": "-1"}, "algorithm": "ridge"}, grpc.StatusCode.INVALID_ARGUMENT, "params.alpha"),
        ({"params": {"alpha": "lots"}, "algorithm": "ridge"}, grpc.StatusCode.INVALID_ARGUMENT, "params.alpha"),
        ({"params": {"depth": "3"}}, grpc.StatusCode.INVALID_ARGUMENT, "params.depth"),
        ({"target": "no_such_column"}, grpc.StatusCode.INVALID_ARGUMENT, "target"),
        ({"dataset_version_id": "dv_missing"}, grpc.StatusCode.NOT_FOUND, "dataset_version_id"),
        ({"model_name": "Bad Name!"}, grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
    ],
)
async def test_bad_training_requests_are_refused_with_the_field(
    pipeline: PipelineResult,
    channels: dict[str, grpc.aio.Channel],
    change: dict[str, object],
    code: grpc.StatusCode,
    field: str,
) -> None:
    fields: dict[str, object] = {
        "dataset_version_id": pipeline.dataset_version.version_id,
        "algorithm": "linear_regression",
        "target": "target",
    }
    fields.update(change)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await trainer_pb2_grpc.TrainingServiceStub(channels["trainer"]).SubmitTraining(
            trainer_pb2.SubmitTrainingRequest(**fields)  # type: ignore[arg-type]
        )
    assert err.value.code() == code
    assert (err.value.details() or "").startswith(field + ":"), err.value.details()


async def test_aliases_over_grpc_compare_and_set_and_an_event(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    name, version = pipeline.model_version.model_name, pipeline.model_version.version
    async with client_channel(platform.addresses["registry"], platform.api_key) as ch:
        registry = registry_pb2_grpc.RegistryServiceStub(ch)
        moved = await registry.SetAlias(
            registry_pb2.SetAliasRequest(model_name=name, alias="champion", version=version, expected_version=0)
        )
        assert (moved.version, moved.previous_version) == (version, 0)
        by_alias = await registry.GetModelVersion(
            registry_pb2.GetModelVersionRequest(model_name=name, alias="champion")
        )
        assert by_alias.version == version
        assert dict((await registry.GetModel(registry_pb2.GetModelRequest(name=name))).aliases) == {"champion": version}
        found = await registry.SearchModelVersions(
            registry_pb2.SearchModelVersionsRequest(alias="champion", metric="r2", min_value=0.2, name_contains=name)
        )
        assert [(v.model_name, v.version) for v in found.versions] == [(name, version)] and not found.next_page_token
        # A move from a state the alias is no longer in loses (the race itself is in the registry's tests).
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await registry.SetAlias(
                registry_pb2.SetAliasRequest(model_name=name, alias="champion", version=version, expected_version=0)
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert (stale.value.details() or "").startswith("expected_version:")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await registry.SetAlias(registry_pb2.SetAliasRequest(model_name=name, alias="champion", version=99))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    event = await find_event(
        platform.nats_url, f"lepton.evt.{platform.tenant}.registry.alias.moved", lambda e: e.alias == "champion"
    )
    assert isinstance(event.data, events_pb2.ModelAliasMoved)
    assert event.data.alias == "champion" and event.data.lineage.model_version == version


async def test_evaluation_has_a_confidence_interval_and_png_plots(
    pipeline: PipelineResult, platform: EmbeddedPlatform
) -> None:
    from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc

    ev = pipeline.evaluation
    assert ev.headline_metric == "r2"
    assert ev.ci_low < ev.metrics["r2"] < ev.ci_high
    assert {"mape", "explained_variance", "residual_std"} <= set(ev.metrics)
    assert set(ev.plots) == {"predicted_vs_actual", "residuals", "feature_importance"}
    async with client_channel(platform.addresses["evaluator"], platform.api_key) as ch:
        stub = evaluator_pb2_grpc.EvaluationServiceStub(ch)
        plot = await stub.GetPlot(evaluator_pb2.GetPlotRequest(training_job_id=pipeline.job.job_id, name="residuals"))
        assert plot.png.startswith(b"\x89PNG\r\n\x1a\n")
        assert int.from_bytes(plot.png[16:20], "big") == 640 and int.from_bytes(plot.png[20:24], "big") == 480
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetPlot(evaluator_pb2.GetPlotRequest(training_job_id=pipeline.job.job_id, name="roc"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "residuals" in (err.value.details() or "")
