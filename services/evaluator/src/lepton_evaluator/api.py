"""gRPC and event adapters of the evaluator service."""

from __future__ import annotations

import asyncio
from functools import partial

import grpc
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc

from lepton_core import events
from lepton_core.bounds import check_version
from lepton_core.bus import ObjectStore
from lepton_core.errors import InvalidArgument
from lepton_core.names import check_id, check_name, shown
from lepton_core.rpc import client_channel, current_tenant, on_behalf
from lepton_core.service import Runtime
from lepton_core.tls import Peer
from lepton_core.wire import lineage, ref_from_pb, ts
from lepton_evaluator.checks import check_evaluation_ref, check_model, check_split
from lepton_evaluator.core import ALL_ROWS, HOLDOUT, MAX_FOLDS, EvaluationRecord, Evaluations, Run, compare
from lepton_ml.signing import TrustedKeys


def evaluation_lineage(record: EvaluationRecord) -> common_pb2.Lineage:
    return lineage(
        dataset_id=record.dataset_id,
        dataset_version_id=record.dataset_version_id,
        training_job_id=record.training_job_id,
        evaluation_id=record.evaluation_id,
        model_name=record.model_name,
        model_version=record.model_version,
    )


def evaluation_to_pb(record: EvaluationRecord) -> evaluator_pb2.Evaluation:
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
        rows=record.rows,
        trigger=record.trigger,
    )
    if record.ci_low is not None and record.ci_high is not None:
        out.ci_low, out.ci_high = record.ci_low, record.ci_high
    if record.cv_folds:
        out.cross_validation.CopyFrom(
            evaluator_pb2.CrossValidation(folds=record.cv_folds, mean=record.cv_mean, std=record.cv_std)
        )
    return out


class EvaluationServicer(evaluator_pb2_grpc.EvaluationServiceServicer):
    def __init__(self, evaluations: Evaluations, registry_url: Peer, data_url: Peer) -> None:
        self._evaluations = evaluations
        self._registry_url = registry_url
        self._data_url = data_url

    async def _version(self, name: str, number: int, alias: str) -> registry_pb2.ModelVersion:
        """A registry version, asked for with the caller's key (so only the caller's tenant's)."""
        async with client_channel(self._registry_url, on_behalf()) as ch:
            version: registry_pb2.ModelVersion = await registry_pb2_grpc.RegistryServiceStub(ch).GetModelVersion(
                registry_pb2.GetModelVersionRequest(model_name=name, version=number, alias=alias), timeout=10
            )
        return version

    async def GetEvaluation(
        self, request: evaluator_pb2.GetEvaluationRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Evaluation:
        check_evaluation_ref(request.training_job_id, request.evaluation_id)
        record = await self._evaluations.require(
            current_tenant(), job_id=request.training_job_id, evaluation_id=request.evaluation_id
        )
        return evaluation_to_pb(record)

    async def GetPlot(
        self, request: evaluator_pb2.GetPlotRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Plot:
        check_evaluation_ref(request.training_job_id, request.evaluation_id)
        check_name(request.name, "name", what="a plot name")
        png = await self._evaluations.plot(
            current_tenant(), request.name, job_id=request.training_job_id, evaluation_id=request.evaluation_id
        )
        return evaluator_pb2.Plot(name=request.name, png=png)

    async def ListEvaluations(
        self, request: evaluator_pb2.ListEvaluationsRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.ListEvaluationsResponse:
        check_model(request.model_name)
        check_version(request.model_version, "model_version", zero="the latest")
        also = ""
        if request.model_version:
            # The automatic evaluation ran before the registry numbered the version: the
            # version's own record says which evaluation it was.
            version = await self._version(request.model_name, request.model_version, "")
            also = version.lineage.evaluation_id
        found = await self._evaluations.list(current_tenant(), request.model_name, request.model_version, also)
        return evaluator_pb2.ListEvaluationsResponse(evaluations=[evaluation_to_pb(r) for r in found])

    async def Evaluate(
        self, request: evaluator_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> evaluator_pb2.Evaluation:
        check_model(request.model_name)
        check_version(request.model_version, "model_version", zero="the latest")
        if request.alias:
            check_name(request.alias, "alias", what="an alias")
        if request.dataset_version_id:
            check_id(request.dataset_version_id, "dataset_version_id", "dv")
        if request.rows not in ("", HOLDOUT, ALL_ROWS):
            raise InvalidArgument(f"must be {HOLDOUT!r} or {ALL_ROWS!r}, got {shown(request.rows)}", field="rows")
        if request.cv_folds != 0 and not 2 <= request.cv_folds <= MAX_FOLDS:
            raise InvalidArgument(f"must be 0 or 2..{MAX_FOLDS}, got {request.cv_folds}", field="cv_folds")
        tenant, key = current_tenant(), on_behalf()
        version = await self._version(request.model_name, request.model_version, request.alias)
        trained_on = version.lineage.dataset_version_id
        dataset_version_id = request.dataset_version_id or trained_on
        async with client_channel(self._data_url, key) as ch:
            dv = await data_pb2_grpc.DataServiceStub(ch).GetDatasetVersion(
                data_pb2.GetDatasetVersionRequest(version_id=dataset_version_id), timeout=10
            )
        rows = request.rows or (HOLDOUT if dataset_version_id == trained_on else ALL_ROWS)
        record = await self._evaluations.evaluate(
            Run(
                tenant=tenant,
                job_id=version.lineage.training_job_id,
                dataset_id=dv.dataset_id,
                dataset_version_id=dv.version_id,
                model_name=version.model_name,
                model_version=version.version,
                artifact=ref_from_pb(version.artifact),
                dataset=ref_from_pb(dv.object),
                seed=version.split_seed,
                test_fraction=version.test_fraction,
                rows=rows,
                cv_folds=request.cv_folds,
                trigger="request",
            )
        )
        return evaluation_to_pb(record)


class TrainingCompletedHandler:
    def __init__(self, rt: Runtime, evaluations: Evaluations) -> None:
        self._rt = rt
        self._evaluations = evaluations

    async def __call__(self, event: events.Event[events_pb2.TrainingCompleted]) -> None:
        done = event.data
        # A refusal is permanent (dead-lettered): nothing is evaluated, stored or announced.
        check_name(done.tenant, "tenant", what="a tenant name")
        check_id(done.lineage.training_job_id, "lineage.training_job_id", "job")
        check_model(done.model_name)
        check_split(done.split_seed, done.test_fraction)
        record = await self._evaluations.evaluate(
            Run(
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
        )
        await self._rt.publish(
            events_pb2.EvaluationCompleted(
                tenant=done.tenant,
                lineage=evaluation_lineage(record),
                metrics=record.metrics,
                test_rows=record.test_rows,
                training=done,
                plots=sorted(record.plots),
            ),
            tenant=done.tenant,
            event_id=f"evaluation.completed:{record.training_job_id}",
            ce_subject=record.evaluation_id,
        )


class VersionDeletedHandler:
    """Erases the evaluations (records and plots) of a deleted model version."""

    def __init__(self, evaluations: Evaluations) -> None:
        self._evaluations = evaluations

    async def __call__(self, event: events.Event[events_pb2.ModelVersionDeleted]) -> None:
        deleted = event.data
        check_name(deleted.tenant, "tenant", what="a tenant name")
        check_model(deleted.lineage.model_name, "lineage.model_name")
        check_id(deleted.lineage.training_job_id, "lineage.training_job_id", "job")
        await self._evaluations.erase_version(
            deleted.tenant, deleted.lineage.model_name, deleted.lineage.training_job_id
        )


class ComparisonHandler:
    """Compares each new registry version with the champion and publishes the decision."""

    def __init__(self, rt: Runtime, objects: ObjectStore, trusted: TrustedKeys) -> None:
        self._rt = rt
        self._objects = objects
        self._trusted = trusted

    async def __call__(self, event: events.Event[events_pb2.ModelVersionCreated]) -> None:
        ev = event.data
        check_name(ev.tenant, "tenant", what="a tenant name")
        check_model(ev.lineage.model_name, "lineage.model_name")
        if ev.lineage.model_version < 1:
            raise InvalidArgument(
                f"must be a version number from 1, got {ev.lineage.model_version}", field="lineage.model_version"
            )
        if not ev.dataset_object.name:
            return  # a version registered without its evaluation data cannot be compared
        check_split(ev.split_seed, ev.test_fraction)
        champion = await self._objects.get(ref_from_pb(ev.champion_artifact)) if ev.champion_version else None
        result = await asyncio.to_thread(
            partial(compare, trusted=self._trusted),
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
