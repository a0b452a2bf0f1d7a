"""gRPC and event adapters of the deployer service."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import grpc
from lepton.common.v1 import common_pb2
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from nats.js import JetStreamContext
from nats.js import errors as js_errors

from lepton_core import events
from lepton_core.bounds import check_version
from lepton_core.bus import EVENTS_STREAM
from lepton_core.errors import NotFound, ResourceExhausted
from lepton_core.names import check_name
from lepton_core.rpc import client_channel, current_tenant, on_behalf
from lepton_core.service import Runtime
from lepton_core.tls import Peer
from lepton_core.triton_pool import HostPool
from lepton_core.wire import lineage, ref_from_pb, ts
from lepton_deployer.checks import Asked, check_deploy
from lepton_deployer.core import Deployer
from lepton_deployer.records import (
    INPUT_NAME,
    OUTPUT_NAME,
    TEXT_INPUT_NAME,
    DeploymentRecord,
    DeploymentState,
    ServingConfig,
    VersionInfo,
)

log = logging.getLogger(__name__)

_STATE = {
    DeploymentState.LOADING: deployer_pb2.DEPLOYMENT_STATE_LOADING,
    DeploymentState.READY: deployer_pb2.DEPLOYMENT_STATE_READY,
    DeploymentState.FAILED: deployer_pb2.DEPLOYMENT_STATE_FAILED,
    DeploymentState.ROLLING_OUT: deployer_pb2.DEPLOYMENT_STATE_ROLLING_OUT,
}


def deployment_lineage(d: DeploymentRecord, version: int | None = None) -> common_pb2.Lineage:
    return lineage(
        dataset_id=d.dataset_id,
        dataset_version_id=d.dataset_version_id,
        training_job_id=d.training_job_id,
        evaluation_id=d.evaluation_id,
        model_name=d.model_name,
        model_version=d.model_version if version is None else version,
        deployment=d.name,
    )


def config_to_pb(c: ServingConfig) -> deployer_pb2.ServingConfig:
    return deployer_pb2.ServingConfig(
        max_batch_size=c.max_batch_size,
        preferred_batch_sizes=c.preferred_batch_sizes,
        max_queue_delay_us=c.max_queue_delay_us,
        instance_count=c.instance_count,
        instance_kind=c.instance_kind,
        log_sample_rate=c.log_sample_rate,
        backend=c.backend,
        log_max_per_s=c.log_max_per_s,
    )


def config_from_pb(pb: deployer_pb2.ServingConfig, base: ServingConfig) -> ServingConfig:
    """``base`` with what ``pb`` sets (zero / empty fields keep the base value)."""
    update: dict[str, Any] = {}
    if pb.max_batch_size:
        update["max_batch_size"] = pb.max_batch_size
    if pb.preferred_batch_sizes:
        update["preferred_batch_sizes"] = list(pb.preferred_batch_sizes)
    if pb.HasField("max_queue_delay_us"):
        update["max_queue_delay_us"] = pb.max_queue_delay_us
    if pb.instance_count:
        update["instance_count"] = pb.instance_count
    if pb.instance_kind:
        update["instance_kind"] = pb.instance_kind
    if pb.HasField("log_sample_rate"):
        update["log_sample_rate"] = pb.log_sample_rate
    if pb.backend:
        update["backend"] = pb.backend
    if pb.HasField("log_max_per_s"):
        update["log_max_per_s"] = pb.log_max_per_s
    return base.model_copy(update=update)


def deployment_to_pb(d: DeploymentRecord, pool: HostPool) -> deployer_pb2.Deployment:
    """The deployment as its tenant sees it: hosts by their names in ``pool``, never by address
    (Triton hosts are private: clients reach models through the inference gateway)."""
    return deployer_pb2.Deployment(
        name=d.name,
        state=_STATE[d.state],
        lineage=deployment_lineage(d),
        triton_model=d.triton_model,
        triton_version=str(d.model_version) if d.model_version else "",
        input_names=[INPUT_NAME, TEXT_INPUT_NAME] if d.text_columns else [INPUT_NAME],
        feature_columns=d.feature_columns,
        text_columns=d.text_columns,
        output_names=[OUTPUT_NAME],
        error=d.error,
        updated_at=ts(d.updated_at),
        hosts=[pool.shown(d.tenant, h) for h in d.hosts],
        host_states=[
            deployer_pb2.HostState(
                url=pool.shown(d.tenant, h.url),
                versions=h.versions,
                ready=h.ready,
                error=h.error,
                checked_at=ts(h.checked_at or d.updated_at),
            )
            for h in d.host_states
        ],
        routes=[
            deployer_pb2.Route(
                triton_model=r.triton_model,
                triton_version=str(r.model_version),
                weight=r.weight,
                model_version=r.model_version,
            )
            for r in d.routes
        ],
        follow=d.follow,
        strategy=d.strategy,
        canary_weights=d.canary_weights,
        canary_step_seconds=d.canary_step_seconds,
        config=config_to_pb(d.config),
        target_version=d.target_version,
        history=[
            deployer_pb2.Rollout(
                from_version=r.from_version,
                to_version=r.to_version,
                strategy=r.strategy,
                outcome=r.outcome,
                reason=r.reason,
                smoke_rows=r.smoke_rows,
                started_at=ts(r.started_at),
                finished_at=ts(r.finished_at or r.started_at),
                seconds=r.seconds,
            )
            for r in d.history
        ],
        backend=d.backend,
        backend_reason=d.backend_reason,
    )


def _name(value: str) -> str:
    """The deployment name a request carries, checked before it reaches a KV key or a Triton model name."""
    return check_name(value, "name", what="a deployment name")


class DeploymentServicer(deployer_pb2_grpc.DeploymentServiceServicer):
    def __init__(self, deployer: Deployer, registry_url: Peer) -> None:
        self._deployer = deployer
        self._registry_url = registry_url

    def _pb(self, record: DeploymentRecord) -> deployer_pb2.Deployment:
        return deployment_to_pb(record, self._deployer.pool)

    async def GetDeployment(
        self, request: deployer_pb2.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.Deployment:
        return self._pb(await self._deployer.get(current_tenant(), _name(request.name)))

    async def ListDeployments(
        self, request: deployer_pb2.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.ListDeploymentsResponse:
        return deployer_pb2.ListDeploymentsResponse(
            deployments=[self._pb(d) for d in await self._deployer.list(current_tenant())]
        )

    async def Deploy(
        self, request: deployer_pb2.DeployRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.Deployment:
        tenant, name = current_tenant(), _name(request.name)
        check_name(request.model_name, "model_name", what="a model name")
        if request.alias:
            check_name(request.alias, "alias", what="an alias name")
        current = await self._deployer.store.get(f"{tenant}.{name}")
        asked = Asked(
            hosts=list(request.hosts) or None,
            strategy=request.strategy or None,
            canary_weights=list(request.canary_weights) or None,
            canary_step_seconds=request.canary_step_seconds or None,
            follow=request.follow if request.HasField("follow") else None,
            config=config_from_pb(request.config, current.value.config if current else self._deployer.default_config()),
        )
        # All of the request is checked before the registry is asked and anything is remembered.
        check_deploy(tenant, name, request.model_name, request.version, asked, self._deployer.pool, latest=True)
        if current is None:
            await self._deployer.ensure_room(tenant, name)
        version = request.version
        known = None
        if version:
            with contextlib.suppress(NotFound):
                known = await self._deployer.version(tenant, request.model_name, version)
        if known is None:
            # The registry resolves aliases and "latest" (with the caller's key: their tenant only), and
            # answers for a version whose registry.version.created this deployer has not handled yet
            # (a Deploy right after training).
            async with client_channel(self._registry_url, on_behalf()) as ch:
                found = await registry_pb2_grpc.RegistryServiceStub(ch).GetModelVersion(
                    registry_pb2.GetModelVersionRequest(
                        model_name=request.model_name, version=version, alias=request.alias
                    ),
                    timeout=10,
                )
            version = found.version
            with contextlib.suppress(NotFound):
                known = await self._deployer.version(tenant, request.model_name, version)
            if known is None:
                await self._deployer.remember(version_info(tenant, found))
        record = await self._deployer.deploy(
            tenant, name, request.model_name, version, **asked.given(), wait=request.wait
        )
        return self._pb(record)

    async def Rollback(
        self, request: deployer_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.Deployment:
        return self._pb(await self._deployer.rollback(current_tenant(), _name(request.name), request.wait))

    async def DeleteDeployment(
        self, request: deployer_pb2.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.Deployment:
        return self._pb(await self._deployer.delete(current_tenant(), _name(request.name)))

    async def GetDeploymentStatus(
        self, request: deployer_pb2.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployer_pb2.DeploymentStatus:
        record = await self._deployer.get(current_tenant(), _name(request.name))
        stats, warnings = await self._deployer.statistics(record)
        out = deployer_pb2.DeploymentStatus(deployment=self._pb(record), warnings=warnings)
        for s in stats:
            inference = s.get("inference_stats", {})
            success = int(inference.get("success", {}).get("count", 0))

            def avg(key: str, count: int = success, inference: dict[str, Any] = inference) -> float:
                return float(inference.get(key, {}).get("ns", 0)) / 1000 / count if count else 0.0

            out.statistics.append(
                deployer_pb2.VersionStatistics(
                    host=s["host"],
                    triton_model=s.get("name", ""),
                    triton_version=s.get("version", ""),
                    ready=bool(s.get("ready")),
                    inference_count=int(s.get("inference_count", 0)),
                    execution_count=int(s.get("execution_count", 0)),
                    success_count=success,
                    failure_count=int(inference.get("fail", {}).get("count", 0)),
                    avg_queue_us=avg("queue"),
                    avg_compute_us=avg("compute_infer"),
                    avg_request_us=avg("success"),
                )
            )
        return out


class Announcer:
    """Publishes the deployer's events for a deployment record (hosts by their names in ``pool``)."""

    def __init__(self, rt: Runtime, pool: HostPool) -> None:
        self._rt = rt
        self._pool = pool

    async def __call__(self, kind: str, d: DeploymentRecord, extra: dict[str, Any]) -> None:
        tenant = d.tenant
        message: Any
        if kind == "started":
            version = d.target_version
            message = events_pb2.DeploymentRolloutStarted(
                tenant=tenant,
                lineage=deployment_lineage(d, version),
                from_version=extra["from_version"],
                strategy=d.strategy,
                hosts=[self._pool.shown(tenant, h) for h in d.hosts],
            )
            event_id = f"deployment.rollout.started:{tenant}:{d.name}:{version}:{d.updated_at.isoformat()}"
        elif kind == "ready":
            version = d.model_version
            message = events_pb2.DeploymentReady(
                tenant=tenant,
                lineage=deployment_lineage(d),
                triton_model=d.triton_model,
                triton_version=str(d.model_version),
                host=self._pool.shown(tenant, d.hosts[0]) if d.hosts else "",
            )
            event_id = f"deployment.ready:{tenant}:{d.name}:{version}:{d.updated_at.isoformat()}"
        elif kind == "deleted":
            version = d.model_version
            message = events_pb2.DeploymentDeleted(tenant=tenant, lineage=deployment_lineage(d))
            event_id = f"deployment.deleted:{tenant}:{d.name}:{d.updated_at.isoformat()}"
        elif kind == "rolled_back":
            version = extra["version"]
            message = events_pb2.DeploymentRolledBack(
                tenant=tenant,
                lineage=deployment_lineage(d, version),
                serving_version=d.model_version,
                reason=extra["reason"],
            )
            event_id = f"deployment.rolled_back:{tenant}:{d.name}:{version}:{d.updated_at.isoformat()}"
        else:
            version = extra["version"]
            message = events_pb2.DeploymentFailed(
                tenant=tenant, lineage=deployment_lineage(d, version), reason=extra["reason"]
            )
            event_id = f"deployment.failed:{tenant}:{d.name}:{version}:{d.updated_at.isoformat()}"
        await self._rt.publish(message, tenant=tenant, event_id=event_id, ce_subject=d.name)


def version_info(tenant: str, v: registry_pb2.ModelVersion | events_pb2.ModelVersionCreated) -> VersionInfo:
    """What the deployer keeps of a version: from ``registry.version.created`` or the registry's answer."""
    lin = v.lineage
    return VersionInfo(
        tenant=tenant,
        model_name=lin.model_name,
        version=lin.model_version,
        artifact=ref_from_pb(v.artifact),
        dataset_object=ref_from_pb(v.dataset_object) if v.dataset_object.name else None,
        split_seed=v.split_seed,
        test_fraction=v.test_fraction,
        dataset_id=lin.dataset_id,
        dataset_version_id=lin.dataset_version_id,
        training_job_id=lin.training_job_id,
        evaluation_id=lin.evaluation_id,
    )


class VersionCreatedHandler:
    """Remembers every new registry version; with auto-deploy, rolls it out to the
    deployment named after its model (created on the first version, following "latest")."""

    def __init__(self, deployer: Deployer, auto_deploy: bool) -> None:
        self._deployer = deployer
        self._auto_deploy = auto_deploy

    async def __call__(self, event: events.Event[events_pb2.ModelVersionCreated]) -> None:
        ev = event.data
        lin = ev.lineage
        # The names become KV keys and (auto-deployed) a deployment and Triton model name.
        check_name(ev.tenant, "tenant", what="a tenant name")
        check_name(lin.model_name, "lineage.model_name", what="a model name")
        check_version(lin.model_version, "lineage.model_version")
        info = version_info(ev.tenant, ev)
        await self._deployer.remember(info)
        found = await self._deployer.store.get(f"{ev.tenant}.{lin.model_name}")
        if found is None and self._auto_deploy:
            try:
                await self._deployer.deploy(
                    ev.tenant, lin.model_name, lin.model_name, info.version, follow="latest", wait=True
                )
            except ResourceExhausted as exc:
                # The tenant's plan has no room for another deployment: the version is registered, not served.
                log.warning("auto-deploy of %s v%d refused: %s", lin.model_name, info.version, exc)
        await _follow(self._deployer, ev.tenant, lin.model_name, "latest", info.version)


class AliasMovedHandler:
    """Rolls out the version an alias moved to, in every deployment that follows that alias; a move that a
    later one of the same alias already overtook in the stream is skipped (:func:`superseded`).

    Args:
        js: Where to look for later moves (the service's JetStream context); None: every move is rolled out.
    """

    def __init__(self, deployer: Deployer, js: JetStreamContext | None = None) -> None:
        self._deployer = deployer
        self._js = js

    async def __call__(self, event: events.Event[events_pb2.ModelAliasMoved]) -> None:
        ev = event.data
        check_name(ev.tenant, "tenant", what="a tenant name")
        check_name(ev.lineage.model_name, "lineage.model_name", what="a model name")
        check_name(ev.alias, "alias", what="an alias name")
        check_version(ev.lineage.model_version, "lineage.model_version", zero="the alias was deleted")
        if not ev.lineage.model_version:  # 0: the alias was deleted; keep serving what serves
            return
        if self._js is not None and await superseded(self._js, event):
            log.info(
                "%s/%s: %s moved on from v%d already; its later move is rolled out instead",
                ev.tenant,
                ev.lineage.model_name,
                ev.alias,
                ev.lineage.model_version,
            )
            return
        await _follow(self._deployer, ev.tenant, ev.lineage.model_name, ev.alias, ev.lineage.model_version)


async def superseded(js: JetStreamContext, event: events.Event[events_pb2.ModelAliasMoved]) -> bool:
    """Whether the stream already holds a later move of the same model's same alias than ``event``.

    The deployer handles events one at a time and each rollout waits for Triton's load, so when an
    alias moves several times quickly (auto-promotion under load), rolling out each version in turn is
    work the next rollout undoes at once: the later move's own delivery rolls out where the alias went.
    Reads the tenant's later ``registry.alias.moved`` messages after ``event``'s sequence (usually none).
    """
    if not event.sequence:
        return False
    subject = events.spec_of(events_pb2.ModelAliasMoved).subject(event.data.tenant)
    model, alias = event.data.lineage.model_name, event.data.alias
    sequence = event.sequence + 1
    while True:
        try:
            raw = await js.get_msg(EVENTS_STREAM, seq=sequence, subject=subject, next=True)
        except js_errors.NotFoundError:
            return False
        sequence = (raw.seq or sequence) + 1
        try:
            later = events.decode_parts(
                raw.subject or subject, dict(raw.headers or {}), raw.data or b"", delivery=1, sequence=sequence - 1
            )
        except Exception:  # not ours to judge here: its own delivery dead-letters it
            continue
        if later.data.lineage.model_name == model and later.data.alias == alias:
            return True


async def _follow(deployer: Deployer, tenant: str, model: str, follow: str, version: int) -> None:
    def behind(d: DeploymentRecord) -> bool:
        # "latest" only moves forward; an alias may move back (a rollback by alias is a rollout too).
        newer = d.model_version < version if follow == "latest" else d.model_version != version
        return d.model_name == model and d.follow == follow and newer

    for d in await deployer.list(tenant):
        if not behind(d):
            continue
        if d.state in (DeploymentState.ROLLING_OUT, DeploymentState.LOADING):
            # A rollout of this process finishes first (the event waits, heartbeating); one that is still
            # under way after that was left by a deployer that died mid-way, and this rollout takes it over.
            # Before, the move was dropped here: a restarted deployer never rolled out the alias's version.
            current = await deployer.after_rollout_here(tenant, d.name)
            if current is None or not behind(current):
                continue
        await deployer.deploy(tenant, d.name, model, version, wait=True)
