"""``python -m lepton_deployer``: runs the deployer service."""

from __future__ import annotations

from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core.bus import EVENTS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_deployer.api import AliasMovedHandler, Announcer, DeploymentServicer, VersionCreatedHandler
from lepton_deployer.core import Defaults, Deployer, DeploymentRecord, VersionInfo
from lepton_deployer.settings import DeployerSettings


def main() -> None:
    settings = DeployerSettings()

    async def setup(rt: Runtime) -> Register:
        defaults = Defaults(
            nats_url=settings.model_nats_url or settings.nats_url,
            log_sample_rate=settings.log_sample_rate,
            log_max_per_s=settings.log_max_per_s,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=settings.max_queue_delay_us,
        )
        deployer = Deployer(
            await RecordStore.open(rt.js, "deployments", DeploymentRecord),
            await RecordStore.open(rt.js, "deployments", VersionInfo),
            rt.objects,
            settings.triton_url,
            defaults,
            settings.load_timeout_s,
            Announcer(rt),
            drain_s=settings.drain_s,
        )
        rt.consume(
            EVENTS_STREAM,
            "deployer",
            {
                events_pb2.ModelVersionCreated: VersionCreatedHandler(deployer, settings.auto_deploy),
                events_pb2.ModelAliasMoved: AliasMovedHandler(deployer),
            },
            ack_wait=settings.load_timeout_s + 30,
        )
        rt.every("reconcile", settings.reconcile_interval_s, deployer.reconcile)
        servicer = DeploymentServicer(deployer, settings.peer(settings.registry_url))

        return grpc_service(
            deployer_pb2_grpc.add_DeploymentServiceServicer_to_server,
            servicer,
            deployer_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
        )

    run_service("deployer", settings, setup)


if __name__ == "__main__":
    main()
