"""``python -m lepton_deployer``: runs the deployer service."""

from __future__ import annotations

from functools import partial

from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core.bus import EVENTS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_core.triton_access import CONTROL, STATISTICS, TritonCredential, read_secret_file
from lepton_deployer.api import AliasMovedHandler, Announcer, DeploymentServicer, VersionCreatedHandler
from lepton_deployer.core import Defaults, Deployer, DeploymentRecord, TritonClientHost, VersionInfo
from lepton_deployer.permissions import RULES
from lepton_deployer.settings import DeployerSettings
from lepton_ml.signing import trusted_from_setting


def main() -> None:
    settings = DeployerSettings()
    # Read at start-up: without the artifact public key no artifact could be verified, so none is deployed.
    trusted = trusted_from_setting(settings.artifact_public_key_file, "LEPTON_DEPLOYER_ARTIFACT_PUBLIC_KEY_FILE")
    # Read at start-up, so a missing or malformed secret file stops the deployer at once, saying which.
    control = statistics = None
    if settings.triton_control_secret_file:
        control = TritonCredential.from_file(CONTROL, settings.triton_control_secret_file)
    if settings.triton_statistics_secret_file:
        statistics = TritonCredential.from_file(STATISTICS, settings.triton_statistics_secret_file)
    inference = read_secret_file(settings.inference_secret_file) if settings.inference_secret_file else None

    async def setup(rt: Runtime) -> Register:
        defaults = Defaults(
            log_sample_rate=settings.log_sample_rate,
            log_max_per_s=settings.log_max_per_s,
            max_batch_size=settings.max_batch_size,
            max_queue_delay_us=settings.max_queue_delay_us,
        )
        pool = settings.pool()
        deployer = Deployer(
            await RecordStore.open(rt.js, "deployments", DeploymentRecord),
            await RecordStore.open(rt.js, "deployments", VersionInfo),
            rt.objects,
            pool,
            defaults,
            settings.load_timeout_s,
            Announcer(rt, pool),
            drain_s=settings.drain_s,
            hosts=partial(TritonClientHost, control=control, statistics=statistics, inference_secret=inference),
            trusted=trusted,
            plans=rt.plans,
        )
        rt.consume(
            EVENTS_STREAM,
            "deployer",
            {
                events_pb2.ModelVersionCreated: VersionCreatedHandler(deployer, settings.auto_deploy),
                events_pb2.ModelAliasMoved: AliasMovedHandler(deployer, rt.js),
            },
            # ack_wait_s (15 s), not the load timeout: a rollout's handler heartbeats while Triton loads,
            # so the event of a deployer that died mid-rollout comes back within seconds, not minutes.
        )
        rt.every("reconcile", settings.reconcile_interval_s, deployer.reconcile)
        rt.on_tenant_deleted(deployer.delete_tenant)
        servicer = DeploymentServicer(deployer, settings.peer(settings.registry_url))

        return grpc_service(
            deployer_pb2_grpc.add_DeploymentServiceServicer_to_server,
            servicer,
            deployer_pb2.DESCRIPTOR.services_by_name["DeploymentService"],
        )

    run_service("deployer", settings, setup, RULES)


if __name__ == "__main__":
    main()
