"""gRPC and event adapters of the evaluator service."""

from __future__ import annotations

import asyncio

import grpc
from lepton.common.v1 import common_pb2
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core import events
from lepton_core.bus import ObjectStore
from lepton_core.errors import InvalidArgument, NotFound
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, ref_from_pb, ts
from lepton_evaluator.core import EvaluationRecord, Evaluations, compare


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
        out = evaluator_pb2.Evaluation(
            evaluation_id=record.evaluation_id,
            lineage=evaluation_lineage(record),
            metrics=record.metrics,
            test_rows=record.test_rows,
            created_at=ts(record.created_at),
            headline_metric=record.headline_metric,
            per_class=[evaluator_pb2.ClassMetrics(label=k, metrics=v) for k, v in record.per_class.items()],
            classes=record.classes,
            confusion=[n for row in record.confusion for n in row],
            plots=sorted(record.plots),
        )
        if record.ci_low is not None and record.ci_high is not None:
            out.ci_low, out.ci_high = record.ci_low, record.ci_high
        return out

    async def GetPlot(
        self, request: evaluator_pb2.GetPlotRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Plot:
        if not request.training_job_id:
            raise InvalidArgument("a training job id is required", field="training_job_id")
        png = await self._evaluations.plot(current_tenant(), request.training_job_id, request.name)
        return evaluator_pb2.Plot(name=request.name, png=png)


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


class ComparisonHandler:
    """Compares each new registry version with the champion and publishes the decision."""

    def __init__(self, rt: Runtime, objects: ObjectStore) -> None:
        self._rt = rt
        self._objects = objects

    async def __call__(self, event: events.Event[events_pb2.ModelVersionCreated]) -> None:
        ev = event.data
        if not ev.dataset_object.name:
            return  # a version registered without its evaluation data cannot be compared
        champion = await self._objects.get(ref_from_pb(ev.champion_artifact)) if ev.champion_version else None
        result = await asyncio.to_thread(
            compare,
            await self._objects.get(ref_from_pb(ev.artifact)),
            champion,
            await self._objects.get(ref_from_pb(ev.dataset_object)),
            ev.split_seed,
            ev.test_fraction,
            ev.policy.metric,
            ev.policy.min_improvement,
            ev.policy.require_significant,
        )
        await self._rt.publish(
            events_pb2.EvaluationComparisonCompleted(
                tenant=ev.tenant,
                lineage=ev.lineage,
                champion_version=ev.champion_version,
                metric=result.metric,
                challenger_value=result.challenger,
                champion_value=result.champion if result.champion is not None else 0.0,
                difference=result.difference,
                ci_low=result.ci[0],
                ci_high=result.ci[1],
                decision=result.decision,
                reasons=result.reasons,
                policy=ev.policy,
            ),
            tenant=ev.tenant,
            event_id=f"evaluation.comparison.completed:{ev.tenant}:{ev.lineage.model_name}:{ev.lineage.model_version}",
            ce_subject=f"{ev.lineage.model_name}/{ev.lineage.model_version}",
        )
