"""Every field checked at the edge (issue 15): over real gRPC and real NATS, against the evaluator process.

A refused request is INVALID_ARGUMENT naming the field (never INTERNAL from a KV key a bad value broke),
quotes a long value cut short, and stores and emits nothing. Every refusal here comes before the
evaluator would ask the registry or the data service, so neither runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from lepton.common.v1 import common_pb2
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService, expect_dead_lettered

pytestmark = pytest.mark.timeout(120)

KEY = "edge-evaluator-key"
TENANT = "edge" + uuid.uuid4().hex[:8]
BAD = ["名字", "a b", "a.b", "a*", "a>", "a\x00", "a\n"]


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("evaluator", {KEY: TENANT})


@pytest_asyncio.fixture
async def evaluator(address: str) -> AsyncIterator[evaluator_pb2_grpc.EvaluationServiceStub]:
    async with client_channel(address, KEY) as ch:
        yield evaluator_pb2_grpc.EvaluationServiceStub(ch)


async def refused(call: Any, request: Any, field: str) -> str:
    """Calls, expects INVALID_ARGUMENT naming ``field``, returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, details)
    assert details.startswith(f"{field}: "), (request, details)
    return details


async def assert_nothing_emitted(nc: NATS) -> None:
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{TENANT}.evaluation.>", stream=EVENTS_STREAM, ordered_consumer=True
    )
    try:
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await sub.unsubscribe()


async def test_get_evaluation_with_a_non_ascii_id_is_invalid_not_internal(
    evaluator: evaluator_pb2_grpc.EvaluationServiceStub,
) -> None:
    for bad in BAD:
        e = evaluator_pb2
        await refused(evaluator.GetEvaluation, e.GetEvaluationRequest(training_job_id=f"job_{bad}"), "training_job_id")
        await refused(evaluator.GetEvaluation, e.GetEvaluationRequest(evaluation_id=f"ev_{bad}"), "evaluation_id")
        await refused(evaluator.GetPlot, e.GetPlotRequest(training_job_id=f"job_{bad}", name="roc"), "training_job_id")
        await refused(evaluator.GetPlot, e.GetPlotRequest(evaluation_id="ev_0123", name=bad), "name")


async def test_a_well_formed_missing_evaluation_is_still_not_found(
    evaluator: evaluator_pb2_grpc.EvaluationServiceStub,
) -> None:
    for request in (
        evaluator_pb2.GetEvaluationRequest(training_job_id="job_" + "0" * 20),
        evaluator_pb2.GetEvaluationRequest(evaluation_id="ev_" + "0" * 20),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await evaluator.GetEvaluation(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_evaluation_id_is_not_a_training_job_id(evaluator: evaluator_pb2_grpc.EvaluationServiceStub) -> None:
    details = await refused(
        evaluator.GetEvaluation, evaluator_pb2.GetEvaluationRequest(training_job_id="ev_0123"), "training_job_id"
    )
    assert "evaluation id" in details
    details = await refused(
        evaluator.GetEvaluation, evaluator_pb2.GetEvaluationRequest(evaluation_id="job_0123"), "evaluation_id"
    )
    assert "training job id" in details


async def test_a_model_name_with_a_trailing_newline_is_refused(
    evaluator: evaluator_pb2_grpc.EvaluationServiceStub, nc: NATS
) -> None:
    for name in ("churn\n", "Churn", "churn.v2", "名字", "x" * 65):
        await refused(evaluator.Evaluate, evaluator_pb2.EvaluateRequest(model_name=name), "model_name")
        await refused(evaluator.ListEvaluations, evaluator_pb2.ListEvaluationsRequest(model_name=name), "model_name")
    await assert_nothing_emitted(nc)


async def test_negative_versions_are_refused(evaluator: evaluator_pb2_grpc.EvaluationServiceStub, nc: NATS) -> None:
    for version in (-1, -(2**40)):
        await refused(
            evaluator.Evaluate,
            evaluator_pb2.EvaluateRequest(model_name="churn", model_version=version),
            "model_version",
        )
        await refused(
            evaluator.ListEvaluations,
            evaluator_pb2.ListEvaluationsRequest(model_name="churn", model_version=version),
            "model_version",
        )
    await assert_nothing_emitted(nc)


async def test_aliases_dataset_versions_rows_and_folds_are_checked(
    evaluator: evaluator_pb2_grpc.EvaluationServiceStub, nc: NATS
) -> None:
    e = evaluator_pb2
    await refused(evaluator.Evaluate, e.EvaluateRequest(model_name="churn", alias="champion\n"), "alias")
    await refused(
        evaluator.Evaluate, e.EvaluateRequest(model_name="churn", dataset_version_id="ds_1"), "dataset_version_id"
    )
    await refused(
        evaluator.Evaluate, e.EvaluateRequest(model_name="churn", dataset_version_id="dv_a.b"), "dataset_version_id"
    )
    await refused(evaluator.Evaluate, e.EvaluateRequest(model_name="churn", rows="some"), "rows")
    await refused(evaluator.Evaluate, e.EvaluateRequest(model_name="churn", cv_folds=-3), "cv_folds")
    await assert_nothing_emitted(nc)


async def test_a_10kb_value_is_cut_in_the_error(evaluator: evaluator_pb2_grpc.EvaluationServiceStub) -> None:
    big = "x" * 10_240
    e = evaluator_pb2
    for call, request, field in [
        (evaluator.Evaluate, e.EvaluateRequest(model_name=big), "model_name"),
        (evaluator.Evaluate, e.EvaluateRequest(model_name="churn", alias=big), "alias"),
        (evaluator.Evaluate, e.EvaluateRequest(model_name="churn", rows=big), "rows"),
        (evaluator.GetEvaluation, e.GetEvaluationRequest(evaluation_id="ev_" + big), "evaluation_id"),
        (evaluator.GetPlot, e.GetPlotRequest(evaluation_id="ev_0123", name=big), "name"),
    ]:
        details = await refused(call, request, field)
        assert len(details) < 400 and "characters" in details, details


async def test_a_training_completed_event_with_a_bad_id_is_dead_lettered_and_evaluates_nothing(
    evaluator: evaluator_pb2_grpc.EvaluationServiceStub, nc: NATS
) -> None:
    js = nc.jetstream()
    sent = {}
    for job_id, seed, field in (
        ("ev_0123", 1, "lineage.training_job_id"),
        ("job_a.b", 1, "lineage.training_job_id"),
        ("job_0123", -1, "split_seed"),
    ):
        event_id = f"edge-completed:{uuid.uuid4().hex}"
        sent[event_id] = field
        await events.publish(
            js,
            events_pb2.TrainingCompleted(
                tenant=TENANT,
                lineage=common_pb2.Lineage(training_job_id=job_id, model_name="churn"),
                model_name="churn",
                split_seed=seed,
                test_fraction=0.2,
            ),
            tenant=TENANT,
            event_id=event_id,
            source="/lepton/trainer",
        )
    await expect_dead_lettered(js, "evaluator", sent)
    await assert_nothing_emitted(nc)
