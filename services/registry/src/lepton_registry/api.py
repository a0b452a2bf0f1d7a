"""gRPC and event adapters of the registry service."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import grpc
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc

from lepton_core import events
from lepton_core.bounds import check_version
from lepton_core.bus import ObjectStore
from lepton_core.errors import Conflict, FailedPrecondition, InvalidArgument
from lepton_core.names import check_id, check_name
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, now, ref_from_pb, ref_to_pb, ts
from lepton_ml.signing import TrustedKeys
from lepton_registry.core import (
    AliasRecord,
    Edit,
    ModelRecord,
    PolicyRecord,
    Registry,
    SearchQuery,
    VersionRecord,
    check_alias,
    check_model_name,
)
from lepton_registry.lineage import Peers, gather, serving


def version_lineage(v: VersionRecord) -> common_pb2.Lineage:
    return lineage(
        dataset_id=v.dataset_id,
        dataset_version_id=v.dataset_version_id,
        training_job_id=v.training_job_id,
        evaluation_id=v.evaluation_id,
        model_name=v.model_name,
        model_version=v.version,
    )


def version_to_pb(v: VersionRecord) -> registry_pb2.ModelVersion:
    return registry_pb2.ModelVersion(
        model_name=v.model_name,
        version=v.version,
        lineage=version_lineage(v),
        artifact=ref_to_pb(v.artifact),
        algorithm=v.algorithm,
        params=v.params,
        metrics=v.metrics,
        features=v.features,
        target=v.target,
        created_at=ts(v.created_at),
        task=v.task,
        inputs=[common_pb2.Column(name=c["name"], dtype=c["dtype"]) for c in v.inputs],
        plots=v.plots,
        status=v.status,
        tags=v.tags,
        description=v.description,
        split_seed=v.split_seed,
        test_fraction=v.test_fraction,
        updated_at=ts(v.updated_at or v.created_at),
        dataset_object=ref_to_pb(v.dataset_object),
    )


def model_to_pb(m: ModelRecord, aliases: dict[str, int] | None = None) -> registry_pb2.RegisteredModel:
    return registry_pb2.RegisteredModel(
        name=m.name,
        latest_version=m.latest_version,
        created_at=ts(m.created_at),
        aliases=aliases or {},
        description=m.description,
        task=m.task,
        tags=m.tags,
        owner=m.tenant,
        updated_at=ts(m.updated_at or m.created_at),
    )


def edit_from_pb(request: registry_pb2.UpdateModelRequest | registry_pb2.UpdateModelVersionRequest) -> Edit:
    return Edit(
        description=request.description if request.HasField("description") else None,
        set_tags=dict(request.set_tags),
        remove_tags=tuple(request.remove_tags),
        status=getattr(request, "status", ""),
    )


def alias_to_pb(a: AliasRecord) -> registry_pb2.ModelAlias:
    return registry_pb2.ModelAlias(
        model_name=a.model_name,
        alias=a.alias,
        version=a.version,
        previous_version=a.previous_version,
        updated_at=ts(a.updated_at),
    )


def policy_to_pb(p: PolicyRecord) -> events_pb2.PromotionPolicy:
    return events_pb2.PromotionPolicy(
        metric=p.metric,
        min_improvement=p.min_improvement,
        require_significant=p.require_significant,
        auto_promote=p.auto_promote,
    )


def _name(value: str, field: str = "model_name") -> str:
    """A model name from a request, checked before it reaches a key (``field`` names it in the error)."""
    return check_model_name(value, field)


def _lineage_ids(lin: common_pb2.Lineage) -> None:
    """Refuses an event whose lineage ids are not ids of their kind (empty ones are absent)."""
    check_id(lin.training_job_id, "lineage.training_job_id", "job")
    for value, field, kind in (
        (lin.dataset_id, "lineage.dataset_id", "ds"),
        (lin.dataset_version_id, "lineage.dataset_version_id", "dv"),
        (lin.evaluation_id, "lineage.evaluation_id", "ev"),
    ):
        if value:
            check_id(value, field, kind)


ARTIFACT_CHUNK = 1024 * 1024
log = logging.getLogger(__name__)


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(
        self, rt: Runtime, registry: Registry, objects: ObjectStore, peers: Peers, artifact_keys: TrustedKeys
    ) -> None:
        self._rt = rt
        self._registry = registry
        self._objects = objects
        self._peers = peers
        self._artifact_keys = artifact_keys

    async def GetArtifactPublicKey(
        self, request: registry_pb2.GetArtifactPublicKeyRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ArtifactPublicKey:
        """The keys artifacts are signed with (from this service's settings, never the object store)."""
        current_tenant()  # like every RPC: only a caller with a key
        return registry_pb2.ArtifactPublicKey(
            pem=self._artifact_keys.pem().decode(), key_ids=[kid.hex() for kid in self._artifact_keys.keys]
        )

    async def SearchModelVersions(
        self, request: registry_pb2.SearchModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.SearchModelVersionsResponse:
        query = SearchQuery(
            name_contains=request.name_contains,
            alias=request.alias,
            dataset_version_id=request.dataset_version_id,
            algorithm=request.algorithm,
            metric=request.metric,
            min_value=request.min_value if request.HasField("min_value") else None,
            max_value=request.max_value if request.HasField("max_value") else None,
            page_size=request.page_size or 50,
            page_token=request.page_token,
            tags=tuple(sorted(request.tags.items())),
            task=request.task,
            status=request.status,
        )
        versions, token = await self._registry.search(current_tenant(), query)
        return registry_pb2.SearchModelVersionsResponse(
            versions=[version_to_pb(v) for v in versions], next_page_token=token
        )

    async def UpdateModel(
        self, request: registry_pb2.UpdateModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisteredModel:
        tenant, name = current_tenant(), _name(request.name, "name")
        edit = edit_from_pb(request)
        edit.check()
        # Read before the write: an unreadable stored policy refuses the edit rather than half-doing it.
        policy = policy_to_pb(await self._registry.policy(tenant, name))
        model, changed = await self._registry.update_model(tenant, name, edit)
        if changed:
            await self.model_updated(model, policy, changed)
        out = model_to_pb(model, await self._registry.aliases(tenant, name))
        out.policy.CopyFrom(policy)
        return out

    async def model_updated(self, model: ModelRecord, policy: events_pb2.PromotionPolicy, changed: list[str]) -> None:
        await self._rt.publish(
            events_pb2.ModelUpdated(
                tenant=model.tenant,
                lineage=lineage(model_name=model.name),
                description=model.description,
                tags=model.tags,
                policy=policy,
                changed=changed,
            ),
            tenant=model.tenant,
            event_id=f"registry.model.updated:{model.tenant}:{model.name}:{now().isoformat()}",
            ce_subject=model.name,
        )

    async def UpdateModelVersion(
        self, request: registry_pb2.UpdateModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        tenant, name = current_tenant(), _name(request.model_name)
        check_version(request.version)
        version, changed = await self._registry.update_version(tenant, name, request.version, edit_from_pb(request))
        if changed:
            at = version.updated_at or now()
            await self._rt.publish(
                events_pb2.ModelVersionUpdated(
                    tenant=tenant,
                    lineage=version_lineage(version),
                    description=version.description,
                    tags=version.tags,
                    status=version.status,
                    changed=changed,
                ),
                tenant=tenant,
                event_id=f"registry.version.updated:{tenant}:{name}:{version.version}:{at.isoformat()}",
                ce_subject=f"{name}/{version.version}",
            )
        return version_to_pb(version)

    async def DeleteModelVersion(
        self, request: registry_pb2.DeleteModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DeleteModelVersionResponse:
        """Erases a version (docs/security.md, "Deletion"), unless an alias points at it or a deployment serves it.

        The event goes first: a failure after it leaves the version to delete again (the
        event's id repeats, so JetStream keeps one), never the evaluator's and the
        monitor's data of a version that is gone.
        """
        tenant, name = current_tenant(), _name(request.model_name)
        check_version(request.version)
        record, artifact_alone = await self._registry.deletable(tenant, name, request.version)
        deployments = await serving(self._peers, name, request.version)
        if deployments:
            raise FailedPrecondition(
                f"version {request.version} of {name} is served by deployment {', '.join(deployments)}; "
                "deploy another version or delete the deployment first",
                field="version",
            )
        await self._rt.publish(
            events_pb2.ModelVersionDeleted(
                tenant=tenant,
                lineage=version_lineage(record),
                artifact=ref_to_pb(record.artifact),
                artifact_erased=artifact_alone,
            ),
            tenant=tenant,
            event_id=f"registry.version.deleted:{tenant}:{name}:{record.version}:{record.created_at.isoformat()}",
            ce_subject=f"{name}/{record.version}",
        )
        if artifact_alone:
            await self._objects.erase(record.artifact)
        await self._registry.erase_version(record)
        return registry_pb2.DeleteModelVersionResponse(
            model_name=name, version=record.version, artifact_erased=artifact_alone
        )

    async def GetLineage(
        self, request: registry_pb2.GetModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.LineageGraph:
        version = await self._version_of(current_tenant(), request)
        return await gather(self._peers, version_to_pb(version))

    async def _version_of(self, tenant: str, request: registry_pb2.GetModelVersionRequest) -> VersionRecord:
        name = _name(request.model_name)
        number = check_version(request.version, zero="the latest")
        if request.alias:
            number = await self._registry.resolve_alias(tenant, name, request.alias)
        return await self._registry.get_version(tenant, name, number)

    async def moved(self, tenant: str, alias: AliasRecord) -> None:
        await self._rt.publish(
            events_pb2.ModelAliasMoved(
                tenant=tenant,
                lineage=lineage(model_name=alias.model_name, model_version=alias.version),
                alias=alias.alias,
                previous_version=alias.previous_version,
            ),
            tenant=tenant,
            event_id=f"registry.alias.moved:{tenant}:{alias.model_name}:{alias.alias}:{alias.updated_at.isoformat()}",
            ce_subject=f"{alias.model_name}@{alias.alias}",
        )

    async def SetAlias(
        self, request: registry_pb2.SetAliasRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelAlias:
        tenant, name = current_tenant(), _name(request.model_name)
        check_alias(request.alias)
        check_version(request.version)
        expected = request.expected_version if request.HasField("expected_version") else None
        if expected is not None:
            check_version(expected, "expected_version", zero="the alias points at no version")
        alias = await self._registry.set_alias(tenant, name, request.alias, request.version, expected)
        await self.moved(tenant, alias)
        return alias_to_pb(alias)

    async def SetPromotionPolicy(
        self, request: registry_pb2.SetPromotionPolicyRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisteredModel:
        tenant, name = current_tenant(), _name(request.model_name)
        p = request.policy
        policy = await self._registry.set_policy(
            tenant,
            name,
            PolicyRecord(
                metric=p.metric,
                min_improvement=p.min_improvement,
                require_significant=p.require_significant,
                auto_promote=p.auto_promote,
            ),
        )
        model = await self._registry.get_model(tenant, name)
        await self.model_updated(model, policy_to_pb(policy), ["policy"])
        out = model_to_pb(model, await self._registry.aliases(tenant, name))
        out.policy.CopyFrom(policy_to_pb(policy))
        return out

    async def DeleteAlias(
        self, request: registry_pb2.DeleteAliasRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelAlias:
        tenant, name = current_tenant(), _name(request.model_name)
        check_alias(request.alias)
        alias = await self._registry.delete_alias(tenant, name, request.alias)
        await self.moved(tenant, alias)
        return alias_to_pb(alias)

    async def DownloadArtifact(
        self, request: registry_pb2.GetModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[registry_pb2.ArtifactChunk]:
        version = await self._version_of(current_tenant(), request)
        data = await self._objects.get(version.artifact)  # refuses a tampered artifact (DATA_LOSS)
        for start in range(0, max(len(data), 1), ARTIFACT_CHUNK):
            first = start == 0
            yield registry_pb2.ArtifactChunk(
                data=data[start : start + ARTIFACT_CHUNK],
                digest=version.artifact.digest if first else "",
                size=len(data) if first else 0,
            )

    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisteredModel:
        tenant, name = current_tenant(), _name(request.name, "name")
        out = model_to_pb(await self._registry.get_model(tenant, name), await self._registry.aliases(tenant, name))
        out.policy.CopyFrom(policy_to_pb(await self._registry.policy(tenant, name)))
        return out

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        return registry_pb2.ListModelsResponse(
            models=[model_to_pb(m) for m in await self._registry.list_models(current_tenant())]
        )

    async def GetModelVersion(
        self, request: registry_pb2.GetModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ModelVersion:
        return version_to_pb(await self._version_of(current_tenant(), request))

    async def ListModelVersions(
        self, request: registry_pb2.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelVersionsResponse:
        versions = await self._registry.list_versions(current_tenant(), _name(request.model_name))
        return registry_pb2.ListModelVersionsResponse(versions=[version_to_pb(v) for v in versions])


class EvaluationCompletedHandler:
    """Registers each evaluated model as a new version (once per training job)."""

    def __init__(self, rt: Runtime, registry: Registry) -> None:
        self._rt = rt
        self._registry = registry

    async def __call__(self, event: events.Event[events_pb2.EvaluationCompleted]) -> None:
        ev = event.data
        t = ev.training
        # Checked before anything is stored: a bad event is dead-lettered (InvalidArgument is permanent).
        check_name(ev.tenant, "tenant", what="a tenant name")
        _name(t.model_name, "training.model_name")
        _lineage_ids(ev.lineage)
        if not math.isfinite(t.test_fraction):
            raise InvalidArgument(f"must be finite, got {t.test_fraction}", field="training.test_fraction")
        # A NaN score (r2 of a constant target, say) would be stored as null and make the
        # version unreadable: it is left out, as a metric that could not be computed.
        metrics = {k: v for k, v in ev.metrics.items() if math.isfinite(v)}
        if len(metrics) != len(ev.metrics):
            log.warning("%s: leaving out non-finite metrics %s", t.model_name, sorted(set(ev.metrics) - set(metrics)))
        record, _ = await self._registry.register(
            VersionRecord(
                tenant=ev.tenant,
                model_name=t.model_name,
                version=0,
                dataset_id=ev.lineage.dataset_id,
                dataset_version_id=ev.lineage.dataset_version_id,
                training_job_id=ev.lineage.training_job_id,
                evaluation_id=ev.lineage.evaluation_id,
                artifact=ref_from_pb(t.artifact),
                algorithm=t.algorithm,
                params=dict(t.params),
                metrics=metrics,
                features=list(t.features),
                target=t.target,
                created_at=now(),
                dataset_object=ref_from_pb(t.dataset_object),
                split_seed=t.split_seed,
                test_fraction=t.test_fraction,
                task=t.task,
                inputs=[{"name": c.name, "dtype": c.dtype} for c in t.inputs],
                plots=list(ev.plots),
            )
        )
        champion = await self._registry.champion(ev.tenant, record.model_name)
        policy = await self._registry.policy_or_default(ev.tenant, record.model_name)
        await self._rt.publish(
            events_pb2.ModelVersionCreated(
                tenant=ev.tenant,
                lineage=version_lineage(record),
                artifact=ref_to_pb(record.artifact),
                metrics=record.metrics,
                features=record.features,
                target=record.target,
                algorithm=record.algorithm,
                dataset_object=ref_to_pb(record.dataset_object),
                split_seed=record.split_seed,
                test_fraction=record.test_fraction,
                champion_version=champion.version if champion and champion.version != record.version else 0,
                champion_artifact=ref_to_pb(champion.artifact if champion else None),
                policy=policy_to_pb(policy),
            ),
            tenant=ev.tenant,
            event_id=f"registry.version.created:{ev.tenant}:{record.model_name}:{record.version}",
            ce_subject=f"{record.model_name}/{record.version}",
        )


class ComparisonHandler:
    """Moves ``champion`` when a comparison says promote and the model's policy auto-promotes.

    The move is a compare-and-set from the champion the comparison was made
    against: if the champion moved meanwhile, this stale decision loses.
    """

    def __init__(self, servicer: RegistryServicer, registry: Registry) -> None:
        self._servicer = servicer
        self._registry = registry

    async def __call__(self, event: events.Event[events_pb2.EvaluationComparisonCompleted]) -> None:
        ev = event.data
        if ev.decision != "promote" or not ev.policy.auto_promote:
            return
        name, version = ev.lineage.model_name, ev.lineage.model_version
        check_name(ev.tenant, "tenant", what="a tenant name")
        _name(name, "lineage.model_name")
        check_version(version, "lineage.model_version")
        check_version(ev.champion_version, "champion_version", zero="no champion")
        try:
            alias = await self._registry.set_alias(ev.tenant, name, "champion", version, expected=ev.champion_version)
        except Conflict:
            current = await self._registry.champion(ev.tenant, name)
            if current is None or current.version != version:
                log.info("champion of %s moved meanwhile; not promoting v%d", name, version)
            return
        await self._servicer.moved(ev.tenant, alias)
