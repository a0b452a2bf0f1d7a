"""Gathering a version's lineage from the services that own each part.

The registry owns the version; datasets, jobs, evaluations and deployments belong to
other services, so it asks them over gRPC with the caller's own key (their tenant,
their permissions). A service that cannot be reached leaves a warning, not an error:
the rest of the chain is still worth showing.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.registry.v1 import registry_pb2
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core.errors import Unavailable
from lepton_core.rpc import client_channel, on_behalf
from lepton_core.tls import Peer

#: Longest chain of derived dataset versions followed back to the raw upload.
MAX_DEPTH = 50


@dataclass(frozen=True)
class Peers:
    data: Peer
    trainer: Peer
    evaluator: Peer
    deployer: Peer


async def gather(peers: Peers, version: registry_pb2.ModelVersion) -> registry_pb2.LineageGraph:
    graph = registry_pb2.LineageGraph(version=version)
    key = on_behalf()
    lin = version.lineage

    async def attempt(service: str, address: Peer, what: str, call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as exc:
            graph.warnings.append(f"{what}: {service} at {address} answered {exc.code().name}: {exc.details()}")

    async def datasets() -> None:
        async with client_channel(peers.data, key) as ch:
            stub = data_pb2_grpc.DataServiceStub(ch)
            version_id = lin.dataset_version_id
            while version_id and len(graph.datasets) < MAX_DEPTH:
                v = await stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=version_id), timeout=10)
                graph.datasets.append(
                    registry_pb2.DatasetNode(
                        version_id=v.version_id,
                        dataset_name=v.dataset_name,
                        origin=v.origin,
                        parent_version_id=v.parent_version_id,
                        recipe_digest=v.recipe_digest,
                        recipe_json=v.recipe_json,
                        row_count=v.row_count,
                    )
                )
                version_id = v.parent_version_id

    async def job() -> None:
        async with client_channel(peers.trainer, key) as ch:
            j = await trainer_pb2_grpc.TrainingServiceStub(ch).GetTrainingJob(
                trainer_pb2.GetTrainingJobRequest(job_id=lin.training_job_id), timeout=10
            )
        graph.job.CopyFrom(
            registry_pb2.JobNode(
                job_id=j.job_id,
                algorithm=j.algorithm,
                params=j.params,
                worker_id=j.worker_id,
                state=trainer_pb2.JobState.Name(j.state).removeprefix("JOB_STATE_").lower(),
            )
        )

    async def evaluation() -> None:
        async with client_channel(peers.evaluator, key) as ch:
            stub = evaluator_pb2_grpc.EvaluationServiceStub(ch)
            first = await stub.GetEvaluation(
                evaluator_pb2.GetEvaluationRequest(training_job_id=lin.training_job_id), timeout=10
            )
            later = await stub.ListEvaluations(
                evaluator_pb2.ListEvaluationsRequest(model_name=version.model_name, model_version=version.version),
                timeout=10,
            )
        for e in [first, *reversed(later.evaluations)]:  # the training's own first, then requests oldest first
            if all(e.evaluation_id != n.evaluation_id for n in graph.evaluations):
                graph.evaluations.append(
                    registry_pb2.EvaluationNode(
                        evaluation_id=e.evaluation_id,
                        metrics=e.metrics,
                        dataset_version_id=e.lineage.dataset_version_id,
                        rows=e.rows,
                        trigger=e.trigger,
                    )
                )

    async def deployments() -> None:
        async with client_channel(peers.deployer, key) as ch:
            found = await deployer_pb2_grpc.DeploymentServiceStub(ch).ListDeployments(
                deployer_pb2.ListDeploymentsRequest(), timeout=10
            )
        for d in found.deployments:
            if d.lineage.model_name == version.model_name and d.lineage.model_version == version.version:
                graph.deployments.append(
                    registry_pb2.DeploymentNode(
                        name=d.name,
                        state=deployer_pb2.DeploymentState.Name(d.state).removeprefix("DEPLOYMENT_STATE_").lower(),
                        triton_model=d.triton_model,
                        triton_version=d.triton_version,
                    )
                )

    await attempt("data", peers.data, "datasets", datasets())
    await attempt("trainer", peers.trainer, "training job", job())
    await attempt("evaluator", peers.evaluator, "evaluation", evaluation())
    await attempt("deployer", peers.deployer, "deployments", deployments())
    return graph


async def serving(peers: Peers, model_name: str, version: int) -> list[str]:
    """The caller's deployments that serve, roll out or route to ``version`` of ``model_name``.

    Raises:
        Unavailable: the deployer cannot be asked: whether a deployment serves it is unknown.
    """
    try:
        async with client_channel(peers.deployer, on_behalf()) as ch:
            found = await deployer_pb2_grpc.DeploymentServiceStub(ch).ListDeployments(
                deployer_pb2.ListDeploymentsRequest(), timeout=10
            )
    except grpc.aio.AioRpcError as exc:
        raise Unavailable(
            f"cannot tell whether a deployment serves version {version} of {model_name}: "
            f"the deployer at {peers.deployer} answered {exc.code().name}: {exc.details()}"
        ) from None
    return sorted(
        d.name
        for d in found.deployments
        if d.lineage.model_name == model_name
        and (
            version in (d.lineage.model_version, d.target_version)
            or any(r.model_version == version for r in d.routes)
            or any(version in h.versions for h in d.host_states)
        )
    )
