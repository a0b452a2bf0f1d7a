"""``python -m lepton_registry``: runs the registry service."""

from __future__ import annotations

import logging

from lepton.access.v1 import access_pb2, access_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc

from lepton_core.access import KEYS_BUCKET, ensure_key, read_secret_file
from lepton_core.access_service import serve_access
from lepton_core.bus import EVENTS_STREAM, PREDICTIONS_STREAM, RecordStore
from lepton_core.service import SERVICES, Register, Runtime, grpc_service, run_service
from lepton_core.usage import (
    EVENT_TYPES,
    EVENTS_DURABLE,
    PREDICTION_TYPES,
    PREDICTIONS_DURABLE,
    USAGE_BUCKET,
    UsageMeter,
)
from lepton_ml.signing import trusted_from_setting
from lepton_registry.api import ComparisonHandler, EvaluationCompletedHandler, RegistryServicer
from lepton_registry.core import AliasRecord, JobIndex, ModelRecord, PolicyRecord, Registry, VersionRecord
from lepton_registry.lineage import Peers
from lepton_registry.permissions import RULES
from lepton_registry.settings import RegistrySettings

log = logging.getLogger(__name__)


async def bootstrap_key(rt: Runtime, key_file: str, tenant: str) -> None:
    """Makes the operator key whose secret ``key_file`` holds, unless a record of it exists."""
    secret = read_secret_file(key_file, "bootstrap_key_file")
    record = await ensure_key(
        await rt.js.key_value(KEYS_BUCKET), secret, tenant=tenant, role="operator", name="bootstrap"
    )
    log.info("bootstrap key is %s (tenant %s, %s)", record.id, record.tenant, record.state())


def main() -> None:
    settings = RegistrySettings()
    # Read at start-up: SDK clients verify what they download against these keys.
    artifact_keys = trusted_from_setting(settings.artifact_public_key_file, "LEPTON_REGISTRY_ARTIFACT_PUBLIC_KEY_FILE")

    async def setup(rt: Runtime) -> Register:
        registry = Registry(
            await RecordStore.open(rt.js, "models", ModelRecord),
            await RecordStore.open(rt.js, "models", VersionRecord),
            await RecordStore.open(rt.js, "models", JobIndex),
            await RecordStore.open(rt.js, "models", AliasRecord),
            await RecordStore.open(rt.js, "models", PolicyRecord),
        )
        peers = Peers(
            settings.peer(settings.data_url),
            settings.peer(settings.trainer_url),
            settings.peer(settings.evaluator_url),
            settings.peer(settings.deployer_url),
        )
        servicer = RegistryServicer(rt, registry, rt.objects, peers, artifact_keys)
        rt.consume(
            EVENTS_STREAM, "registry", {events_pb2.EvaluationCompleted: EvaluationCompletedHandler(rt, registry)}
        )
        rt.consume(
            EVENTS_STREAM,
            "registry-promotions",
            {events_pb2.EvaluationComparisonCompleted: ComparisonHandler(servicer, registry)},
        )

        # Each tenant's usage, metered from the events that create and remove what its plan limits.
        meter = UsageMeter(await rt.js.key_value(USAGE_BUCKET))
        rt.consume(EVENTS_STREAM, EVENTS_DURABLE, meter.handlers(EVENT_TYPES))
        rt.consume(PREDICTIONS_STREAM, PREDICTIONS_DURABLE, meter.handlers(PREDICTION_TYPES))

        if settings.bootstrap_key_file:
            await bootstrap_key(rt, settings.bootstrap_key_file, settings.bootstrap_tenant)
        registry_service = grpc_service(
            registry_pb2_grpc.add_RegistryServiceServicer_to_server,
            servicer,
            registry_pb2.DESCRIPTOR.services_by_name["RegistryService"],
        )
        access_service = grpc_service(
            access_pb2_grpc.add_AccessServiceServicer_to_server,
            await serve_access(rt.nc, rt.js, rt.access.book, rt.plans, meter, settings.default_plan, SERVICES),
            access_pb2.DESCRIPTOR.services_by_name["AccessService"],
        )
        return lambda server: [*registry_service(server), *access_service(server)]

    run_service("registry", settings, setup, RULES)


if __name__ == "__main__":
    main()
