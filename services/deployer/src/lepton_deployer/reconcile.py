"""The reconcile loop: hosts that lost their models get them back, and rollouts a stopped deployer left are ended."""

from __future__ import annotations

import logging

from lepton_core.bus import ObjectRefRecord
from lepton_core.wire import now
from lepton_deployer.errors import describe
from lepton_deployer.fleet import Fleet
from lepton_deployer.records import DeploymentRecord, DeploymentState, HostState, Records, RolloutRecord, VersionInfo
from lepton_deployer.rollout import Rollouts, staged_model
from lepton_deployer.serving_files import ServingFiles

log = logging.getLogger(__name__)

#: How much longer than a load may take a rollout must have stood still to count as interrupted.
INTERRUPTED_AFTER_S = 60


class Reconciler:
    """Checks every host of every deployment against its record, and repairs what it can."""

    def __init__(self, records: Records, fleet: Fleet, files: ServingFiles, rollouts: Rollouts) -> None:
        self._records = records
        self._fleet = fleet
        self._files = files
        self._rollouts = rollouts

    async def reconcile(self) -> list[str]:
        """Reloads the stable version wherever a host lost it, and ends rollouts a stopped
        deployer left half-way; returns what it repaired."""
        repaired: list[str] = []
        for record in await self._records.store.values("*.*"):
            if await self._interrupted(record):
                repaired.append(f"{record.name}: interrupted rollout of v{record.target_version} rolled back")
                continue
            if record.state != DeploymentState.READY or not record.model_version:
                continue
            lock = self._records.lock(record.tenant, record.name)
            if lock.locked():
                continue  # a rollout is changing it right now
            async with lock:
                # Records from before host names hold addresses: from now on, the names they stand for.
                hosts = self._fleet.pool.named(record.tenant, record.hosts)
                record = record.model_copy(update={"hosts": hosts})
                states = [await self._check_host(record, host, repaired) for host in hosts]
                current = await self._records.store.get(f"{record.tenant}.{record.name}")
                if current is not None:
                    named = self._fleet.pool.named(record.tenant, current.value.hosts)
                    await self._records.save(current.value.model_copy(update={"hosts": named, "host_states": states}))
        if repaired:  # a host lost its models (a Triton restart): the operator's log says what came back
            log.warning("reconcile repaired: %s", "; ".join(repaired))
        return repaired

    async def _check_host(self, record: DeploymentRecord, host: str, repaired: list[str]) -> HostState:
        """The host's state; the stable version is loaded again where it is not ready.

        A host in no pool entry open to the record's tenant is not reached: its state says so.
        """
        state = HostState(url=self._fleet.pool.shown(record.tenant, host), checked_at=now())
        try:
            if not await self._fleet.is_ready(record.tenant, host, record.triton_model, record.model_version):
                info = await self._records.version(record.tenant, record.model_name, record.model_version)
                _, _, files = await self._files.serving(info, record.config.backend, record.recorded_inputs)
                await self._fleet.load(host, record.triton_model, record, info.version, files, [record.model_version])
                repaired.append(f"{record.name} v{record.model_version} on {state.url}")
            state.versions, state.ready = [record.model_version], True
        except Exception as exc:
            state.error = describe(exc)
        return state

    async def _interrupted(self, record: DeploymentRecord) -> bool:
        """Rolls back a rollout no task of this process runs and that has not moved for longer
        than a load may take: the deployer that ran it stopped (its replacement finds it here)."""
        if record.state not in (DeploymentState.ROLLING_OUT, DeploymentState.LOADING):
            return False
        lock = self._records.lock(record.tenant, record.name)
        stale_after = self._fleet.load_timeout + INTERRUPTED_AFTER_S
        if lock.locked() or (now() - record.updated_at).total_seconds() < stale_after:
            return False
        async with lock:
            # Read again under the lock: a Deploy may have taken the deployment over meanwhile.
            fresh = await self._records.store.get(f"{record.tenant}.{record.name}")
            if fresh is None or fresh.value.updated_at != record.updated_at:
                return False
            target = record.target_version
            info = VersionInfo(
                tenant=record.tenant,
                model_name=record.model_name,
                version=target,
                artifact=ObjectRefRecord(bucket="", name="", digest="", size=0),
            )
            entry = RolloutRecord(
                from_version=record.model_version,
                to_version=target,
                strategy=record.strategy,
                started_at=record.updated_at,
            )
            await self._rollouts.abandon(
                record, info, entry, staged_model(record), "the rollout was interrupted: the deployer stopped mid-way"
            )
        return True
