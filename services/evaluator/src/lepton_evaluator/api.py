"""gRPC and event adapters of the evaluator service."""

from __future__ import annotations

import grpc
from lepton.common.v1 import common_pb2
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core import events
from lepton_core.errors import InvalidArgument, NotFound
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, ref_from_pb, ts
from lepton_evaluator.core import EvaluationRecord, Evaluations


def evaluation_lineage(record: EvaluationRecord) -> common_pb2.Lineage:
    return lineage(
        dataset_id=record.dataset_id,
        dataset_version_id=record.dataset_version_id,
        training_job_id=record.training_job_id,
        evaluation_id=record.evaluation_id,
        model_name=record.model_name,
    )


class EvaluationServicer(evaluator_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, evaluations: Evaluations) -> None:
        self._evaluations = evaluations

    async def GetEvaluation(
        self, request: evaluator_pb2.GetEvaluationRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Evaluation:
        if not request.training_job_id:
            raise InvalidArgument("a training job id is required", field="training_job_id")
        record = await self._evaluations.get(current_tenant(), request.training_job_id)
        if record is None:
            raise NotFound(f"no evaluation for training job {request.training_job_id!r} (yet)")
        return evaluator_pb2.Evaluation(
            evaluation_id=record.evaluation_id,
            lineage=evaluation_lineage(record),
            metrics=record.metrics,
            test_rows=record.test_rows,
            created_at=ts(record.created_at),
        )


class TrainingCompletedHandler:
    def __init__(self, rt: Runtime, evaluations: Evaluations) -> None:
        self._rt = rt
        self._evaluations = evaluations

    async def __call__(self, event: events.Event[events_pb2.TrainingCompleted]) -> None:
        done = event.data
        record = await self._evaluations.evaluate(
            tenant=done.tenant,
            job_id=done.lineage.training_job_id,
            dataset_id=done.lineage.dataset_id,
            dataset_version_id=done.lineage.dataset_version_id,
            model_name=done.model_name,
            artifact=ref_from_pb(done.artifact),
            dataset=ref_from_pb(done.dataset_object),
            seed=done.split_seed,
            test_fraction=done.test_fraction,
        )
        await self._rt.publish(
            events_pb2.EvaluationCompleted(
                tenant=done.tenant,
                lineage=evaluation_lineage(record),
                metrics=record.metrics,
                test_rows=record.test_rows,
                training=done,
            ),
            tenant=done.tenant,
            event_id=f"evaluation.completed:{record.training_job_id}",
            ce_subject=record.evaluation_id,
        )
