"""Deployments on Triton: rollouts that never stop the stable version, rollback, many hosts.

:class:`Deployer` is the service's core, which the gRPC and event adapters (``api.py``)
call. It admits Deploy, Rollback and Delete requests and hands the work to its parts:

- :mod:`lepton_deployer.records`: the deployment and version records, and their store;
- :mod:`lepton_deployer.rollout`: the rollout state machine (stage, smoke test, canary,
  promote, roll back);
- :mod:`lepton_deployer.reconcile`: the loop that restores hosts and ends interrupted rollouts;
- :mod:`lepton_deployer.fleet` over :mod:`lepton_deployer.hosts`: every Triton call, behind
  the :class:`~lepton_deployer.hosts.TritonHost` interface, to hosts of the operator's
  :mod:`lepton_core.triton_pool` alone;
- :mod:`lepton_deployer.triton_config`, :mod:`lepton_deployer.smoke`,
  :mod:`lepton_deployer.backends`, :mod:`lepton_deployer.serving_files`: what Triton is sent
  and how its answers are checked.

The names those modules define that other code used from here are re-exported.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from typing import Any, Literal

from lepton_core.errors import FailedPrecondition
from lepton_core.names import shown
from lepton_core.quotas import PlanBook, check_room
from lepton_core.store import Store
from lepton_core.tenant_deletion import Erased
from lepton_core.triton_pool import DEFAULT_HOST, HostPool
from lepton_core.wire import now
from lepton_deployer.backends import ONNX_FILE, ONNX_INFO_FILE, choose_backend, onnx_info
from lepton_deployer.checks import Asked, check_deploy, check_strategy
from lepton_deployer.errors import HostError, MalformedAnswer, RolloutFailed
from lepton_deployer.fleet import Fleet
from lepton_deployer.hosts import HostFactory, TritonClientHost, TritonHost
from lepton_deployer.reconcile import Reconciler
from lepton_deployer.records import (
    BACKENDS,
    INPUT_NAME,
    KINDS,
    MAX_HISTORY,
    OUTPUT_NAME,
    STRATEGIES,
    TEXT_INPUT_NAME,
    Defaults,
    DeploymentRecord,
    DeploymentState,
    HostState,
    Records,
    RolloutRecord,
    Route,
    ServingConfig,
    VersionInfo,
)
from lepton_deployer.rollout import Publish, Rollouts
from lepton_deployer.serving_files import Objects, ServingFiles
from lepton_deployer.smoke import FLOAT32_RTOL, SMOKE_ROWS, SMOKE_TOLERANCE, recorded_rows, smoke_tolerance
from lepton_deployer.triton_config import STAGED_SUFFIX, model_config, serving_model_source, triton_model_name
from lepton_ml.signing import TrustedKeys

__all__ = [
    "BACKENDS",
    "FLOAT32_RTOL",
    "INPUT_NAME",
    "KINDS",
    "MAX_HISTORY",
    "ONNX_FILE",
    "ONNX_INFO_FILE",
    "OUTPUT_NAME",
    "SMOKE_ROWS",
    "SMOKE_TOLERANCE",
    "STAGED_SUFFIX",
    "STRATEGIES",
    "TEXT_INPUT_NAME",
    "Admitted",
    "Defaults",
    "Deployer",
    "DeploymentRecord",
    "DeploymentState",
    "HostError",
    "HostFactory",
    "HostState",
    "MalformedAnswer",
    "Publish",
    "RolloutFailed",
    "RolloutRecord",
    "Route",
    "ServingConfig",
    "TritonClientHost",
    "TritonHost",
    "VersionInfo",
    "choose_backend",
    "model_config",
    "onnx_info",
    "recorded_rows",
    "serving_model_source",
    "smoke_tolerance",
    "triton_model_name",
]

#: What an admitted Deploy does (Deployer._admit).
Admitted = Literal["join", "settings", "rollout"]


class Deployer:
    """Deployments of registered versions on Triton hosts.

    Args:
        store: Deployment records, keyed ``<tenant>.<name>``.
        versions: What the deployer learned of each registry version.
        objects: Where artifacts and training data are read from.
        pool: The operator's Triton hosts by name; deployments that name none go to its ``default``.
        defaults: Serving defaults of new deployments.
        load_timeout: Longest wait for a Triton host to load a model, in seconds.
        publish: Announces the deployment events.
        drain_s: Wait between pointing routes at a new version and unloading the old one.
        hosts: Opens a :class:`~lepton_deployer.hosts.TritonHost` for a pool entry's address (tests pass a fake).
        trusted: The artifact public keys every artifact's signature must check against before it
            is read (none: every artifact is refused).
        plans: Every tenant's plan: a new deployment past its ``deployments`` limit is refused.
    """

    def __init__(
        self,
        store: Store[DeploymentRecord],
        versions: Store[VersionInfo],
        objects: Objects,
        pool: HostPool,
        defaults: Defaults,
        load_timeout: float,
        publish: Publish,
        drain_s: float = 1.0,
        hosts: HostFactory = TritonClientHost,
        trusted: TrustedKeys | None = None,
        plans: PlanBook | None = None,
    ) -> None:
        self.plans = plans or PlanBook()
        self.store = store
        self.versions = versions
        self.pool = pool
        self.defaults = defaults
        self._records = Records(store, versions)
        self._publish = publish
        self._fleet = Fleet(hosts, pool, load_timeout)
        files = ServingFiles(objects, trusted or TrustedKeys({}))
        self._rollouts = Rollouts(self._records, self._fleet, files, publish, drain_s)
        self._reconciler = Reconciler(self._records, self._fleet, files, self._rollouts)
        self._admission: dict[str, asyncio.Lock] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    # The records: reads of the store.

    async def get(self, tenant: str, name: str) -> DeploymentRecord:
        return await self._records.get(tenant, name)

    async def list(self, tenant: str) -> builtins.list[DeploymentRecord]:
        return await self._records.list(tenant)

    async def remember(self, info: VersionInfo) -> None:
        await self._records.remember(info)

    async def version(self, tenant: str, model: str, version: int) -> VersionInfo:
        return await self._records.version(tenant, model, version)

    async def latest(self, tenant: str, model: str) -> int:
        return await self._records.latest(tenant, model)

    def default_config(self) -> ServingConfig:
        """The serving configuration of a deployment created without one (the service's settings)."""
        return ServingConfig(
            max_batch_size=self.defaults.max_batch_size,
            max_queue_delay_us=self.defaults.max_queue_delay_us,
            log_sample_rate=self.defaults.log_sample_rate,
            log_max_per_s=self.defaults.log_max_per_s,
        )

    async def ensure_room(self, tenant: str, name: str) -> None:
        """Refuses (RESOURCE_EXHAUSTED) a new deployment ``name`` past the plan's ``deployments``;
        an existing one may always be deployed again."""
        plan = self.plans.plan_of(tenant)
        if not plan.limits.deployments or await self.store.get(f"{tenant}.{name}") is not None:
            return
        count = len(await self.list(tenant))
        check_room(plan, "deployments", count, what=f"deployment {name!r} would be one more")

    # Requests: deploy, rollback, delete.

    async def deploy(
        self,
        tenant: str,
        name: str,
        model: str,
        version: int,
        *,
        hosts: builtins.list[str] | None = None,
        strategy: str | None = None,
        canary_weights: builtins.list[float] | None = None,
        canary_step_seconds: float | None = None,
        follow: str | None = None,
        config: ServingConfig | None = None,
        wait: bool = False,
        strategy_once: str | None = None,
    ) -> DeploymentRecord:
        """Creates ``name`` or rolls it out to ``version``; the rollout runs in the background unless ``wait``.

        ``strategy_once`` overrides the deployment's strategy for this rollout only (a rollback
        goes all at once, and the deployment keeps its canary for the next one).
        """
        asked = Asked(hosts or None, strategy, canary_weights or None, canary_step_seconds, follow, config)
        # Everything the request alone decides is checked before a read, a write or a load.
        check_deploy(tenant, name, model, version, asked, self.pool)
        if strategy_once is not None:
            check_strategy(strategy_once)
        info = await self.version(tenant, model, version)
        # One admission at a time per deployment: two Deploy calls must not both see it idle.
        async with self._admission.setdefault(f"{tenant}.{name}", asyncio.Lock()):
            # And one admission at a time per tenant whose plan counts its deployments.
            limited = bool(self.plans.plan_of(tenant).limits.deployments)
            async with self._admission.setdefault(tenant, asyncio.Lock()) if limited else contextlib.nullcontext():
                record, admitted = await self._admit(tenant, name, model, version, asked)
        if admitted == "join":
            if wait:  # the rollout already under way holds the deployment's lock until it ends
                async with self._records.lock(tenant, name):
                    pass
                return await self.get(tenant, name)
            return record
        if admitted == "settings":
            return record
        job = self._rollouts.run(tenant, name, info, strategy_once)
        if wait:
            return await job
        task = asyncio.create_task(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return record

    async def _admit(
        self, tenant: str, name: str, model: str, version: int, asked: Asked
    ) -> tuple[DeploymentRecord, Admitted]:
        """Checks a Deploy and saves the deployment's new settings and target.

        Returns:
            The saved record, and what the Deploy does: ``join`` a rollout to ``version`` already
            under way (nothing was changed), change only ``settings`` (it serves ``version``
            everywhere already), or start a ``rollout``.
        """
        current = await self.store.get(f"{tenant}.{name}")
        record = current.value if current else None
        if record is not None and record.model_name != model:
            raise FailedPrecondition(
                f"deployment {name!r} serves model {record.model_name!r}, not {model!r}", field="model_name"
            )
        busy = record is not None and record.state in (DeploymentState.ROLLING_OUT, DeploymentState.LOADING)
        if record is not None and busy and self._records.lock(tenant, name).locked():
            if record.target_version != version:
                raise FailedPrecondition(
                    f"deployment {name!r} is rolling out version {record.target_version}; "
                    f"deploy version {version} once that rollout ends",
                    field="version",
                )
            _check_join(record, asked)
            return record, "join"
        # The request's own values were checked (check_deploy); the record's were when they were saved.
        strategy = asked.strategy or (record.strategy if record else "all_at_once")
        weights = list(asked.canary_weights or (record.canary_weights if record else [0.1, 0.5]))
        step = asked.canary_step_seconds or (record.canary_step_seconds if record else 5.0)
        config = asked.config or (record.config if record else self.default_config())
        # A record from before host names holds addresses: it keeps the names they stand for.
        hosts = list(asked.hosts or (self.pool.named(tenant, record.hosts) if record else [DEFAULT_HOST]))
        if record is None:
            await self.ensure_room(tenant, name)  # before anything of it is saved
            record = DeploymentRecord(
                tenant=tenant,
                name=name,
                state=DeploymentState.LOADING,
                model_name=model,
                model_version=0,
                triton_model=triton_model_name(tenant, name),
                updated_at=now(),
            )
        record = record.model_copy(
            update={
                "hosts": hosts,
                "strategy": strategy,
                "canary_weights": weights,
                "canary_step_seconds": step,
                "follow": record.follow if asked.follow is None else asked.follow,
                "config": config,
            }
        )
        if (
            record.model_version == version
            and record.state == DeploymentState.READY
            and set(hosts) == {h.url for h in record.host_states if h.ready}
        ):
            return await self._records.save(record), "settings"
        record = await self._records.save(
            record.model_copy(
                update={
                    "state": DeploymentState.ROLLING_OUT if record.model_version else DeploymentState.LOADING,
                    "target_version": version,
                    "error": "",
                }
            )
        )
        return record, "rollout"

    async def rollback(self, tenant: str, name: str, wait: bool = False) -> DeploymentRecord:
        """Rolls out, all at once, the version served before the last completed rollout."""
        record = await self.get(tenant, name)
        previous = next(
            (r.from_version for r in reversed(record.history) if r.outcome == "completed" and r.from_version), 0
        )
        if not previous:
            raise FailedPrecondition(f"deployment {name!r} has no earlier version to roll back to")
        return await self.deploy(tenant, name, record.model_name, previous, wait=wait, strategy_once="all_at_once")

    async def delete(self, tenant: str, name: str) -> DeploymentRecord:
        """Unloads the deployment's models from every host (a dead host has nothing to free), forgets it,
        and announces ``deployment.deleted``."""
        async with self._records.lock(tenant, name):
            record = await self.get(tenant, name)
            for host in record.hosts:
                for model in (record.triton_model, record.triton_model + STAGED_SUFFIX):
                    await self._fleet.quiet_unload(tenant, host, model)
            await self.store.delete(f"{tenant}.{name}")
        await self._publish("deleted", record, {})
        return record

    async def delete_tenant(self, tenant: str) -> Erased:
        """Deletes every deployment of a deleted tenant, as :meth:`delete` does: unloaded from every host."""
        erased = Erased()
        for record in await self.list(tenant):
            await self.delete(tenant, record.name)
            erased.deployments += 1
        return erased

    async def after_rollout_here(self, tenant: str, name: str) -> DeploymentRecord | None:
        """The deployment's record once no rollout of this process is changing it: waits for one that runs
        here to end. A record still ``ROLLING_OUT`` after that was left by a deployer that stopped mid-way:
        a :meth:`deploy` takes it over."""
        async with self._records.lock(tenant, name):
            pass
        found = await self.store.get(f"{tenant}.{name}")
        return found.value if found else None

    # Hosts: the reconcile loop and status.

    async def reconcile(self) -> builtins.list[str]:
        """Reloads the stable version wherever a host lost it, and ends rollouts a stopped
        deployer left half-way; returns what it repaired."""
        return await self._reconciler.reconcile()

    async def statistics(self, record: DeploymentRecord) -> tuple[builtins.list[dict[str, Any]], builtins.list[str]]:
        """Triton's statistics of the deployment's models on every host, and hosts that did not answer."""
        return await self._fleet.statistics(record)


def _check_join(record: DeploymentRecord, asked: Asked) -> None:
    """Refuses to join the rollout under way a Deploy that asks for settings other than that rollout's.

    A field the request leaves out (``None``) keeps the deployment's value, so it matches. Joining
    would otherwise drop what differs without a word: the rollout runs with the settings it began with.
    """
    pairs: builtins.list[tuple[str, Any, Any]] = [
        (k, v, getattr(record, k)) for k, v in asked.given().items() if k != "config"
    ]
    if asked.config is not None:
        pairs += [
            (f"config.{k}", getattr(asked.config, k), getattr(record.config, k)) for k in ServingConfig.model_fields
        ]
    for field, wanted, current in pairs:
        if wanted is not None and wanted != current:
            raise FailedPrecondition(
                f"deployment {record.name!r} is rolling out version {record.target_version} with {field} "
                f"{shown(current)}, and this Deploy asks for {shown(wanted)}: deploy again once that rollout "
                "ends, or with the same settings to join it",
                field=field,
            )
