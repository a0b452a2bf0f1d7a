"""gRPC and event adapters of the trainer service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core import events
from lepton_core.bus import cannot_write, no_room, when_room
from lepton_core.errors import InvalidArgument, NotFound, Unavailable
from lepton_core.names import check_id, check_name
from lepton_core.rpc import Auth, client_channel, current_tenant, on_behalf
from lepton_core.service import Runtime
from lepton_core.tls import Peer
from lepton_core.wire import lineage, now, ref_from_pb, ref_to_pb, ts
from lepton_trainer.catalogue import CATALOGUE, Algorithm
from lepton_trainer.checks import MAX_LIST_LIMIT, check_job_id, check_search, check_submission
from lepton_trainer.core import DatasetInfo, JobRecord, Jobs, JobState, plan_job, plan_search

_STATE = {
    JobState.QUEUED: trainer_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: trainer_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: trainer_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: trainer_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: trainer_pb2.JOB_STATE_CANCELLED,
}


def requested_event(job: JobRecord) -> events_pb2.TrainingRequested:
    """The work-queue message for a job (or a trial, or a search's final fit)."""
    return events_pb2.TrainingRequested(
        tenant=job.tenant,
        lineage=job_lineage(job),
        algorithm=job.algorithm,
        params=job.params,
        target=job.target,
        features=job.features,
        dataset_object=ref_to_pb(job.dataset_object),
        split_seed=job.split_seed,
        test_fraction=job.test_fraction,
        model_name=job.model_name,
    )


def job_lineage(job: JobRecord) -> common_pb2.Lineage:
    return lineage(
        dataset_id=job.dataset_id,
        dataset_version_id=job.dataset_version_id,
        training_job_id=job.job_id,
        model_name=job.model_name,
    )


def job_to_pb(job: JobRecord) -> trainer_pb2.TrainingJob:
    trials = []
    for t in job.trials:
        trial = trainer_pb2.Trial(job_id=t.job_id, params=t.params, state=_STATE[t.state], error=t.error)
        if t.score is not None:
            trial.score = t.score
        trials.append(trial)
    return trainer_pb2.TrainingJob(
        kind=job.kind,
        parent_job_id=job.parent_job_id,
        trials=trials,
        best_trial_id=job.best_trial_id,
        search_metric=job.search_metric,
        task=job.task,
        stage=job.stage,
        progress=job.progress,
        metrics=job.metrics,
        seed=job.seed,
        job_id=job.job_id,
        state=_STATE[job.state],
        lineage=job_lineage(job),
        algorithm=job.algorithm,
        params=job.params,
        target=job.target,
        features=job.features,
        model_name=job.model_name,
        worker_id=job.worker_id,
        error=job.error,
        artifact=ref_to_pb(job.artifact),
        created_at=ts(job.created_at),
        started_at=ts(job.started_at),
        finished_at=ts(job.finished_at),
        attempts=job.attempts,
    )


#: Longest chain of recipe/schema versions followed back to the raw upload.
MAX_CHAIN = 50


async def fetch_dataset(data_url: Peer, version_id: str, auth: Auth = None) -> DatasetInfo:
    """Asks the data service for a version and the recipe chain back to its raw upload.

    The calls go on behalf of the caller (:func:`~lepton_core.rpc.on_behalf`; ``auth`` when
    the request did not come over gRPC). The chain is what lets serving take raw rows: the
    model carries each recipe's fitted parameters.
    """
    if not version_id:
        raise InvalidArgument("a dataset version id is required", field="dataset_version_id")
    check_id(version_id, "dataset_version_id", "dv")
    async with client_channel(data_url, auth or on_behalf()) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        version = await _get_version(stub, data_url, version_id)
        chain: list[dict[str, object]] = []
        root = version
        while root.origin in ("recipe", "schema") and root.parent_version_id:
            if len(chain) >= MAX_CHAIN:
                raise InvalidArgument(f"more than {MAX_CHAIN} recipe versions in a row", field="dataset_version_id")
            if not root.recipe_json:
                raise InvalidArgument(f"version {root.version_id} was derived without a recorded recipe")
            chain.append({"recipe": json.loads(root.recipe_json), "fitted": json.loads(root.fitted_json or "[]")})
            root = await _get_version(stub, data_url, root.parent_version_id)
    return DatasetInfo(
        dataset_id=version.dataset_id,
        dataset_name=version.dataset_name,
        version_id=version.version_id,
        object=ref_from_pb(version.object),
        columns={c.name: c.dtype for c in version.columns},
        preprocess=list(reversed(chain)),
        raw_columns={c.name: c.dtype for c in root.columns} if chain else {},
    )


async def _get_version(stub: data_pb2_grpc.DataServiceStub, data_url: Peer, version_id: str) -> data_pb2.DatasetVersion:
    try:
        version: data_pb2.DatasetVersion = await stub.GetDatasetVersion(
            data_pb2.GetDatasetVersionRequest(version_id=version_id), timeout=10
        )
        return version
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise NotFound(f"dataset version {version_id!r} does not exist", field="dataset_version_id") from exc
        raise Unavailable(f"data service at {data_url}: {exc.details()}") from exc


_STATE_OF = {v: k for k, v in _STATE.items()}


def _job_id(request: trainer_pb2.GetTrainingJobRequest) -> str:
    return check_job_id(request.job_id)


def algorithm_to_pb(a: Algorithm) -> trainer_pb2.AlgorithmInfo:
    params = []
    for name, p in a.params.items():
        info = trainer_pb2.ParamInfo(
            name=name,
            type=p.type_name,
            default="none" if p.default is None else str(p.default).lower() if p.kind is bool else str(p.default),
            choices=list(p.choices),
            nullable=p.nullable,
            description=p.description,
        )
        if p.low is not None:
            info.min = p.low
        if p.high is not None:
            info.max = p.high
        params.append(info)
    return trainer_pb2.AlgorithmInfo(name=a.name, task=a.task, description=a.description, params=params)


async def submit(rt: Runtime, jobs: Jobs, job: JobRecord, children: list[JobRecord] | None = None) -> None:
    """Queues a created job: its trials (each created here) or itself on the JOBS work queue,
    then ``training.queued``. Event ids come from job ids, so a repeat publishes nothing new."""
    tenant = job.tenant
    for child in children or []:
        await jobs.create(child)
        await rt.publish(
            requested_event(child),
            tenant=tenant,
            event_id=f"training.requested:{child.job_id}",
            ce_subject=child.job_id,
        )
    if not children:
        await rt.publish(
            requested_event(job), tenant=tenant, event_id=f"training.requested:{job.job_id}", ce_subject=job.job_id
        )
    await rt.publish(
        events_pb2.TrainingQueued(tenant=tenant, lineage=job_lineage(job), algorithm=job.algorithm),
        tenant=tenant,
        event_id=f"training.queued:{job.job_id}",
        ce_subject=job.job_id,
    )


class TrainingServicer(trainer_pb2_grpc.TrainingServiceServicer):
    def __init__(self, rt: Runtime, jobs: Jobs, data_url: Peer) -> None:
        self._rt = rt
        self._jobs = jobs
        self._data_url = data_url

    async def SubmitTraining(
        self, request: trainer_pb2.SubmitTrainingRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainingJob:
        tenant = current_tenant()
        seed = request.seed if request.HasField("seed") else None
        check_submission(
            dataset_version_id=request.dataset_version_id,
            algorithm=request.algorithm,
            target=request.target,
            params=request.params,
            model_name=request.model_name,
            split_seed=request.split_seed,
            test_fraction=request.test_fraction,
            seed=seed,
        )
        if request.HasField("search") and request.search.kind:
            space = {name: list(values.values) for name, values in request.search.space.items()}
            check_search(space, request.search.trials, request.search.kind, request.search.metric)
        dataset = await fetch_dataset(self._data_url, request.dataset_version_id)
        job = plan_job(
            tenant,
            dataset,
            request.algorithm,
            request.target,
            dict(request.params),
            request.model_name,
            request.split_seed or 42,
            request.test_fraction or 0.2,
            seed,
        )
        children: list[JobRecord] = []
        if request.HasField("search") and request.search.kind:
            job, children = plan_search(
                job,
                request.search.kind,
                {name: list(values.values) for name, values in request.search.space.items()},
                request.search.trials,
                request.search.metric,
            )
        await self._jobs.admit(job, len(children))
        try:
            await submit(self._rt, self._jobs, job, children)
        except Exception as exc:
            await self._jobs.withdraw(job, children, exc)  # no job left queued that nothing will start
            raise
        return job_to_pb(job)

    async def GetTrainingJob(
        self, request: trainer_pb2.GetTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainingJob:
        return job_to_pb(await self._jobs.get(current_tenant(), _job_id(request)))

    async def ListTrainingJobs(
        self, request: trainer_pb2.ListTrainingJobsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListTrainingJobsResponse:
        if not 0 <= request.limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"must be between 0 and {MAX_LIST_LIMIT}, got {request.limit}", field="limit")
        if request.state and request.state not in _STATE_OF:
            raise InvalidArgument(f"unknown job state {request.state}", field="state")
        state = _STATE_OF.get(request.state)
        jobs = await self._jobs.list(current_tenant(), state, request.limit or 100)
        return trainer_pb2.ListTrainingJobsResponse(jobs=[job_to_pb(j) for j in jobs])

    async def WatchTrainingJob(
        self, request: trainer_pb2.GetTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.TrainingJob]:
        async for job in self._jobs.watch(current_tenant(), _job_id(request)):
            yield job_to_pb(job)

    async def CancelTrainingJob(
        self, request: trainer_pb2.GetTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.TrainingJob:
        tenant = current_tenant()
        job = await self._jobs.cancel(tenant, _job_id(request))
        if job.state == JobState.CANCELLED:
            await self._rt.publish(
                events_pb2.TrainingCancelled(tenant=tenant, lineage=job_lineage(job)),
                tenant=tenant,
                event_id=f"training.cancelled:{job.job_id}",
                ce_subject=job.job_id,
            )
        return job_to_pb(job)

    async def ListAlgorithms(
        self, request: trainer_pb2.ListAlgorithmsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListAlgorithmsResponse:
        return trainer_pb2.ListAlgorithmsResponse(algorithms=[algorithm_to_pb(a) for a in CATALOGUE.values()])


class Worker:
    """Runs jobs pulled from the JOBS work queue and announces the outcome."""

    def __init__(self, rt: Runtime, jobs: Jobs, worker_id: str) -> None:
        self._rt = rt
        self._jobs = jobs
        self._worker_id = worker_id
        self._progress_seq = 0

    async def _progress(self, job: JobRecord, stage: str, progress: float, metrics: dict[str, float]) -> None:
        self._progress_seq += 1
        await self._rt.publish(
            events_pb2.TrainingProgress(
                tenant=job.tenant,
                lineage=job_lineage(job),
                stage=stage,
                progress=progress,
                epoch=int(metrics.get("epoch", 0)),
                epochs=int(metrics.get("epochs", 0)),
                metrics=metrics,
            ),
            tenant=job.tenant,
            event_id=f"training.progress:{job.job_id}:{job.attempts}:{self._progress_seq}",
            ce_subject=job.job_id,
        )

    async def on_requested(self, event: events.Event[events_pb2.TrainingRequested]) -> None:
        req = event.data
        tenant, job_id = req.tenant, req.lineage.training_job_id
        # The work queue is written by this service only, but a key or subject is built from what it says.
        check_name(tenant, "tenant", what="a tenant name")
        check_job_id(job_id, "lineage.training_job_id")
        try:
            await self._rt.publish(
                events_pb2.TrainingStarted(
                    tenant=tenant, lineage=req.lineage, worker_id=self._worker_id, attempt=event.delivery
                ),
                tenant=tenant,
                event_id=f"training.started:{job_id}:{event.delivery}",
                ce_subject=job_id,
            )
            job = await self._jobs.run(tenant, job_id, self._worker_id, self._progress)
        except Exception as exc:
            if cannot_write(exc):
                await self._fail_for_want_of_room(tenant, job_id, exc)
                return
            if event.delivery >= self._rt.settings.max_deliver:
                # Last delivery: the job fails for good (the consumer dead-letters the message).
                job = await self._jobs.transition(
                    tenant, job_id, state=JobState.FAILED, error=f"{type(exc).__name__}: {exc}", stage="failed"
                )
                await self._finish(job)
            raise
        await self._finish(job)

    async def _fail_for_want_of_room(self, tenant: str, job_id: str, refused: BaseException) -> None:
        """A full store refuses every try alike, so the job fails at once, saying so, instead of being run
        again and again. The refused write's partial chunks are purged, which usually leaves room for
        this record; when the store is full to the byte, the record (and its event) waits for room, the
        message kept in progress meanwhile, so the job never stays running or queued for good."""
        error = f"the job could not run or keep its model: {no_room(refused)}, then submit the job again"
        job = await when_room(
            lambda: self._jobs.transition(
                tenant, job_id, state=JobState.FAILED, error=error, stage="failed", finished_at=now()
            ),
            f"the failure of job {job_id}",
        )
        await when_room(lambda: self._finish(job), f"the event of job {job_id}'s failure")

    async def _finish(self, job: JobRecord) -> None:
        """Announces a job's end; a trial instead reports to its search, which may then
        queue its final fit (the best candidate on all training rows)."""
        if job.kind != "trial":
            await self._announce(job)
            return
        if job.state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
            return
        parent, ready = await self._jobs.record_trial(job)
        if ready:
            await self._rt.publish(
                requested_event(parent),
                tenant=parent.tenant,
                event_id=f"training.requested:{parent.job_id}:final",
                ce_subject=parent.job_id,
            )
        elif parent.state == JobState.FAILED:
            await self._announce(parent)

    async def _announce(self, job: JobRecord) -> None:
        tenant, job_id = job.tenant, job.job_id
        if job.state == JobState.SUCCEEDED and job.artifact is not None:
            await self._rt.publish(
                events_pb2.TrainingCompleted(
                    tenant=tenant,
                    lineage=job_lineage(job),
                    algorithm=job.algorithm,
                    params=job.params,
                    target=job.target,
                    features=job.features,
                    artifact=ref_to_pb(job.artifact),
                    dataset_object=ref_to_pb(job.dataset_object),
                    split_seed=job.split_seed,
                    test_fraction=job.test_fraction,
                    worker_id=job.worker_id,
                    finished_at=ts(job.finished_at),
                    model_name=job.model_name,
                    task=job.task,
                    inputs=[common_pb2.Column(name=c["name"], dtype=c["dtype"]) for c in job.inputs],
                ),
                tenant=tenant,
                event_id=f"training.completed:{job_id}",
                ce_subject=job_id,
            )
        elif job.state == JobState.FAILED:
            await self._rt.publish(
                events_pb2.TrainingFailed(tenant=tenant, lineage=job_lineage(job), reason=job.error),
                tenant=tenant,
                event_id=f"training.failed:{job_id}",
                ce_subject=job_id,
            )
        elif job.state == JobState.CANCELLED:
            await self._rt.publish(
                events_pb2.TrainingCancelled(tenant=tenant, lineage=job_lineage(job), worker_id=self._worker_id),
                tenant=tenant,
                event_id=f"training.cancelled:{job_id}",
                ce_subject=job_id,
            )
