"""The rollout state machine: stage, smoke-test, canary, promote; or roll back, leaving the old version serving.

A deployment serves its stable version from the Triton model ``<tenant>--<name>``
(tenant-qualified, so two tenants' deployments never collide). A rollout to a new
version runs these steps on every host, and only moves on when every host passed:

1. **stage**: load the new version as its own model ``<tenant>--<name>--next`` and
   wait until it is ready;
2. **smoke test**: send it the deployment's recorded inputs and compare the answers
   with the model's own in-process predictions (to 1e-6; float32 models also get a relative
   1e-5, see ``smoke_tolerance``);
3. **canary** (optional): give the staged model a growing share of routed traffic
   (the routes in the record, which the SDK honours) and check Triton's failure count
   for it after each step;
4. **promote**: load the stable model with both versions (Triton keeps serving the old
   one until the new one is ready; unversioned requests then get the new one), point
   every route at the new version, wait ``drain_s`` for routed clients to notice, and
   reload the stable model with only the new version, which unloads the old one;
5. unload the staged model.

Any failure before step 4 finishes leaves the old version serving and rolls the
staged model back (``deployment.rolled_back``). Loading both versions in step 4 was
measured to serve every request during the swap. A first deployment has nothing to
protect: its version is staged (and checked) in the stable model itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lepton_core.wire import now
from lepton_deployer.errors import describe
from lepton_deployer.fleet import Fleet
from lepton_deployer.records import (
    MAX_HISTORY,
    DeploymentRecord,
    DeploymentState,
    HostState,
    Records,
    RolloutRecord,
    Route,
    VersionInfo,
)
from lepton_deployer.serving_files import ServingFiles
from lepton_deployer.triton_config import STAGED_SUFFIX
from lepton_ml import artifacts

log = logging.getLogger(__name__)

#: Announces a deployment event: ``started``, ``ready``, ``rolled_back`` or ``failed``, the record, and extras.
Publish = Callable[[str, DeploymentRecord, dict[str, Any]], Awaitable[None]]


@dataclass
class Candidate:
    """The version a rollout brings in, and what it is checked and served with."""

    info: VersionInfo
    signature: artifacts.Signature
    inputs: dict[str, list[Any]]
    bundle: artifacts.Bundle | None
    backend: str
    backend_reason: str
    files: dict[str, bytes]


def staged_model(record: DeploymentRecord) -> str:
    """Where a rollout stages its version: beside the stable model, or in it when nothing serves yet."""
    return record.triton_model + STAGED_SUFFIX if record.model_version else record.triton_model


def canary_routes(record: DeploymentRecord, staged: str, version: int, weight: float) -> list[Route]:
    return [
        Route(triton_model=record.triton_model, model_version=record.model_version, weight=round(1 - weight, 6)),
        Route(triton_model=staged, model_version=version, weight=weight),
    ]


class Rollouts:
    """Runs a deployment's rollouts, one at a time under its lock, and rolls back the ones that fail."""

    def __init__(self, records: Records, fleet: Fleet, files: ServingFiles, publish: Publish, drain_s: float) -> None:
        self._records = records
        self._fleet = fleet
        self._files = files
        self._publish = publish
        self._drain_s = drain_s

    async def run(
        self, tenant: str, name: str, info: VersionInfo, strategy_once: str | None = None
    ) -> DeploymentRecord:
        """Rolls deployment ``name`` out to ``info``'s version; returns the record it ends with."""
        async with self._records.lock(tenant, name):
            record = await self._records.get(tenant, name)
            old = record.model_version
            strategy = strategy_once or record.strategy
            entry = RolloutRecord(from_version=old, to_version=info.version, strategy=strategy, started_at=now())
            await self._publish("started", record, {"from_version": old})
            loop = asyncio.get_running_loop()
            started = loop.time()
            staged = staged_model(record)
            try:
                self._fleet.check_open(record)  # before a byte is read or a host is reached
                candidate = await self._candidate(record, info, entry)
                await self._stage(record, staged, candidate)
                if old and strategy == "canary":
                    record = await self._canary(record, staged, info.version)
                if old:
                    await self._load_both(record, candidate)
            except Exception as exc:
                return await self.abandon(record, info, entry, staged, describe(exc))
            record = await self._promote(record, staged, candidate)
            entry.outcome, entry.finished_at = "completed", now()
            entry.seconds = loop.time() - started
            record = await self._records.save(
                record.model_copy(
                    update={
                        "state": DeploymentState.READY,
                        "target_version": 0,
                        "error": "",
                        "host_states": [
                            HostState(url=h, versions=[info.version], ready=True, checked_at=now())
                            for h in record.hosts
                        ],
                        "history": [*record.history, entry][-MAX_HISTORY:],
                    }
                )
            )
            await self._publish("ready", record, {})
            return record

    async def _candidate(self, record: DeploymentRecord, info: VersionInfo, entry: RolloutRecord) -> Candidate:
        """Reads the version, the rows to smoke-test it with, and chooses its backend."""
        bundle_files = await self._files.bundle(info)
        signature = artifacts.signature_of(bundle_files)
        inputs = record.recorded_inputs or await self._files.recorded_inputs(info, signature)
        entry.smoke_rows = len(next(iter(inputs.values()), []))
        bundle = artifacts.bundle_from_files(bundle_files) if inputs else None
        backend, reason, files = await self._files.serving(info, record.config.backend, inputs)
        return Candidate(info, signature, inputs, bundle, backend, reason, files)

    async def _stage(self, record: DeploymentRecord, staged: str, c: Candidate) -> None:
        """Steps 1 and 2: on each host, load the version as ``staged`` and smoke-test it."""
        version = c.info.version
        for host in record.hosts:
            await self._fleet.load(host, staged, record, version, c.files, [version])
            if c.inputs and c.bundle is not None:
                await self._fleet.smoke(
                    record.tenant, host, staged, version, c.inputs, c.signature, c.bundle, record.config.max_batch_size
                )

    async def _canary(self, record: DeploymentRecord, staged: str, version: int) -> DeploymentRecord:
        """Step 3: route each share in turn to the staged model, then check that it failed no request."""
        for weight in record.canary_weights:
            record = await self._records.save(
                record.model_copy(update={"routes": canary_routes(record, staged, version, weight)})
            )
            await asyncio.sleep(record.canary_step_seconds)
            await self._fleet.check_failures(record, staged, version)
        return record

    async def _load_both(self, record: DeploymentRecord, c: Candidate) -> None:
        """Step 4 begins: the stable model with both versions on every host, so neither stops serving."""
        old = record.model_version
        old_info = await self._records.version(record.tenant, record.model_name, old)
        _, _, old_files = await self._files.serving(old_info, record.config.backend, c.inputs)
        for host in record.hosts:
            await self._fleet.load(
                host, record.triton_model, record, c.info.version, c.files, [old, c.info.version], old_files
            )

    async def _promote(self, record: DeploymentRecord, staged: str, c: Candidate) -> DeploymentRecord:
        """Steps 4 and 5: routes to the new version, then (after ``drain_s``) the stable model with it alone."""
        info = c.info
        old = record.model_version
        record = await self._records.save(
            record.model_copy(
                update={
                    "routes": [Route(triton_model=record.triton_model, model_version=info.version, weight=1.0)],
                    "model_version": info.version,
                    "feature_columns": c.signature.numeric_inputs(),
                    "text_columns": c.signature.text_inputs(),
                    "recorded_inputs": c.inputs,
                    "dataset_id": info.dataset_id,
                    "dataset_version_id": info.dataset_version_id,
                    "training_job_id": info.training_job_id,
                    "evaluation_id": info.evaluation_id,
                    "backend": c.backend,
                    "backend_reason": c.backend_reason,
                }
            )
        )
        if old:
            await asyncio.sleep(self._drain_s)  # routed clients re-read the routes meanwhile
            for host in record.hosts:
                await self._fleet.load(host, record.triton_model, record, info.version, c.files, [info.version])
                await self._fleet.quiet_unload(record.tenant, host, staged)
        return record

    async def abandon(
        self, record: DeploymentRecord, info: VersionInfo, entry: RolloutRecord, staged: str, reason: str
    ) -> DeploymentRecord:
        """Rolls a failed rollout back: the staged model goes, the stable one stays (or is restored)."""
        log.warning("rollout of %s v%d failed: %s", record.name, info.version, reason)
        for host in record.hosts:
            await self._fleet.quiet_unload(record.tenant, host, staged)
        old = record.model_version
        if old:
            await self._restore(record)
        entry.outcome, entry.reason, entry.finished_at = ("rolled_back" if old else "failed"), reason, now()
        record = await self._records.save(
            record.model_copy(
                update={
                    "state": DeploymentState.READY if old else DeploymentState.FAILED,
                    "target_version": 0,
                    "error": reason,
                    "routes": [Route(triton_model=record.triton_model, model_version=old, weight=1.0)] if old else [],
                    "history": [*record.history, entry][-MAX_HISTORY:],
                }
            )
        )
        await self._publish("rolled_back" if old else "failed", record, {"version": info.version, "reason": reason})
        return record

    async def _restore(self, record: DeploymentRecord) -> None:
        """Reloads the stable model with the old version alone, where step 4 got as far as loading both."""
        old = record.model_version
        try:
            old_info = await self._records.version(record.tenant, record.model_name, old)
            _, _, old_files = await self._files.serving(old_info, record.config.backend, record.recorded_inputs)
        except Exception as exc:  # the reconcile loop restores it once it can
            log.error("cannot restore %s v%d: %s", record.name, old, exc)
            return
        for host in record.hosts if old_files else []:
            try:
                await self._fleet.load(host, record.triton_model, record, old, old_files, [old])
            except Exception as exc:
                log.error("restoring %s v%d on %s failed: %s", record.name, old, host, exc)
