"""gRPC and event adapters of the deployer service."""

from __future__ import annotations

import grpc
from lepton.common.v1 import common_pb2
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core import events
from lepton_core.errors import InvalidArgument
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, now, ref_from_pb, ts
from lepton_deployer.core import (
    INPUT_NAME,
    OUTPUT_NAME,
    TEXT_INPUT_NAME,
    Deployer,
    DeploymentRecord,
    DeploymentState,
    triton_model_name,
)

_STATE = {
    DeploymentState.LOADING: deployer_pb2.DEPLOYMENT_STATE_LOADING,
    DeploymentState.READY: deployer_pb2.DEPLOYMENT_STATE_READY,
    DeploymentState.FAILED: deployer_pb2.DEPLOYMENT_STATE_FAILED,
}


def deployment_lineage(d: DeploymentRecord) -> common_pb2.Lineage:
    return lineage(
        dataset_id=d.dataset_id,
        dataset_version_id=d.dataset_version_id,
        training_job_id=d.training_job_id,
        evaluation_id=d.evaluation_id,
        model_name=d.model_name,
        model_version=d.model_version,
        deployment=d.name,
    )


def deployment_to_pb(d: DeploymentRecord) -> deployer_pb2.Deployment:
    return deployer_pb2.Deployment(
        name=d.name,
        state=_STATE[d.state],
        lineage=deployment_lineage(d),
        triton_model=d.triton_model,
        triton_version=str(d.model_version),
        triton_url=d.triton_url,
        input_names=[INPUT_NAME, TEXT_INPUT_NAME] if d.text_columns else [INPUT_NAME],
        feature_columns=d.feature_columns,
        text_columns=d.text_columns,
        output_names=[OUTPUT_NAME],
        error=d.error,
        updated_at=ts(d.updated_at),
    )


class DeploymentServicer(deployer_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, deployer: Deployer) -> None:
        self._deployer = deployer

    async def GetDeployment(
        self, request: deployer_pb2.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.Deployment:
        if not request.name:
            raise InvalidArgument("a deployment name is required", field="name")
        return deployment_to_pb(await self._deployer.get(current_tenant(), request.name))

    async def ListDeployments(
        self, request: deployer_pb2.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.ListDeploymentsResponse:
        return deployer_pb2.ListDeploymentsResponse(
            deployments=[deployment_to_pb(d) for d in await self._deployer.list(current_tenant())]
        )


class VersionCreatedHandler:
    """Auto-deploy: each new registry version goes to the deployment named after its model."""

    def __init__(self, rt: Runtime, deployer: Deployer, triton_url: str) -> None:
        self._rt = rt
        self._deployer = deployer
        self._triton_url = triton_url

    async def __call__(self, event: events.Event[events_pb2.ModelVersionCreated]) -> None:
        ev = event.data
        lin = ev.lineage
        name = lin.model_name
        record = await self._deployer.deploy(
            DeploymentRecord(
                tenant=ev.tenant,
                name=name,
                state=DeploymentState.LOADING,
                model_name=lin.model_name,
                model_version=lin.model_version,
                dataset_id=lin.dataset_id,
                dataset_version_id=lin.dataset_version_id,
                training_job_id=lin.training_job_id,
                evaluation_id=lin.evaluation_id,
                triton_model=triton_model_name(ev.tenant, name),
                triton_url=self._triton_url,
                updated_at=now(),
            ),
            ref_from_pb(ev.artifact),
        )
        key = f"{ev.tenant}:{name}:{record.model_version}"
        if record.state == DeploymentState.READY:
            await self._rt.publish(
                events_pb2.DeploymentReady(
                    tenant=ev.tenant,
                    lineage=deployment_lineage(record),
                    triton_model=record.triton_model,
                    triton_version=str(record.model_version),
                    host=record.triton_url,
                ),
                tenant=ev.tenant,
                event_id=f"deployment.ready:{key}",
                ce_subject=name,
            )
        else:
            await self._rt.publish(
                events_pb2.DeploymentFailed(tenant=ev.tenant, lineage=deployment_lineage(record), reason=record.error),
                tenant=ev.tenant,
                event_id=f"deployment.failed:{key}",
                ce_subject=name,
            )
