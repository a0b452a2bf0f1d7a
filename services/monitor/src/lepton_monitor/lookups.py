"""What the monitor looks up before it answers: the deployments it knows and the drift reference of each
model version.

:class:`Deployments` says what a deployment serves (and answers NotFound for one the tenant never had);
:class:`References` finds a model version's drift reference in memory or KV, or builds it from the training
data. Both cache in memory what KV ``monitor`` holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable

from lepton_core import names
from lepton_core.bounds import check_version
from lepton_core.errors import FailedPrecondition, InvalidArgument, NotFound
from lepton_core.store import Store
from lepton_ml.signing import TrustedKeys
from lepton_monitor.live import LiveData
from lepton_monitor.ports import Clock, ObjectReader, mutate
from lepton_monitor.records import DatasetVersionInfo, DeploymentInfo, VersionInfo, drop_tenant
from lepton_monitor.reference import ReferenceRecord, build_reference

log = logging.getLogger(__name__)

#: How long a call naming an unknown deployment waits for its deployment.ready event.
UNKNOWN_DEPLOYMENT_WAIT_S = 1.0
#: How long a failed reference build is remembered before the next try.
REFERENCE_RETRY_S = 60.0
#: Times a request names are from 1970-01-01 up to (not including) 2200-01-01 UTC, in seconds.
MAX_TIME_S = 7_258_118_400.0
#: The longest duration (a window, a span, an interval) a request names: one year, in seconds.
MAX_DURATION_S = 366 * 24 * 3600.0


def check_time(value: float, field: str) -> float:
    """A point in time (seconds since the epoch) from 1970 up to 2200: anything else cannot be a log's time."""
    if not (math.isfinite(value) and 0.0 <= value < MAX_TIME_S):
        raise InvalidArgument(
            f"must be a time from 1970-01-01 up to 2200-01-01 UTC, got {value:g} s since the epoch", field=field
        )
    return value


def check_duration(value: float, field: str, *, most: float = MAX_DURATION_S) -> float:
    """A number of seconds, finite, from 0 up to ``most`` (a year unless said)."""
    if not (math.isfinite(value) and 0.0 <= value <= most):
        raise InvalidArgument(f"must be 0 or a positive number of seconds up to {most:g}, got {value}", field=field)
    return value


def check_name(value: str, field: str) -> str:
    """A required deployment or rule name, in the platform's one grammar (:mod:`lepton_core.names`)."""
    if not value:
        raise InvalidArgument("is required", field=field)
    return names.check_name(value, field)


class Deployments:
    """The deployments the monitor knows, from their ``deployment.ready`` events (KV) or only from their logs.

    Args:
        store: The deployments' records in KV (``<tenant>.dep.<name>``).
        live: The in-memory logs, which know the deployments that logged without a ready event.
    """

    def __init__(self, store: Store[DeploymentInfo], live: LiveData) -> None:
        self._store = store
        self._live = live
        self._known: dict[tuple[str, str], DeploymentInfo] = {}

    def forget_tenant(self, tenant: str) -> None:
        drop_tenant(tenant, self._known)

    def remember(self, info: DeploymentInfo) -> None:
        """Caches what a deployment serves, as just read or written."""
        self._known[(info.tenant, info.name)] = info

    async def change(
        self, tenant: str, name: str, change: Callable[[DeploymentInfo | None], DeploymentInfo | None]
    ) -> DeploymentInfo | None:
        """Changes a deployment's record with compare-and-set (see :func:`~lepton_monitor.ports.mutate`)."""
        updated = await mutate(self._store, f"{tenant}.dep.{name}", change)
        if updated is not None:
            self.remember(updated)
        return updated

    async def stored(self) -> AsyncIterator[DeploymentInfo]:
        """Every deployment with a record in KV, each read (and cached) as the iteration reaches it."""
        for key in await self._store.keys("*.dep.*"):
            found = await self._store.get(key)
            if found is None:
                continue
            self.remember(found.value)
            yield found.value

    async def get(self, tenant: str, name: str, field: str = "deployment") -> DeploymentInfo | None:
        """What a deployment of ``tenant`` serves; NotFound when the monitor knows nothing of it.

        A deployment is known from its ``deployment.ready`` event or from prediction logs; None means only
        the logs are known (no deployment event seen).
        """
        check_name(name, field)
        deadline = asyncio.get_running_loop().time() + UNKNOWN_DEPLOYMENT_WAIT_S
        while True:
            found = self._known.get((tenant, name))
            if found is None:
                stored = await self._store.get(f"{tenant}.dep.{name}")
                if stored is not None:
                    found = self._known[(tenant, name)] = stored.value
            if found is not None or name in self._live.deployments(tenant):
                return found
            # A call right after the deployment became ready can beat its deployment.ready event
            # here: give the event a moment before saying the deployment does not exist.
            if asyncio.get_running_loop().time() >= deadline:
                raise NotFound(f"deployment {name!r} does not exist (no deployment event or prediction log seen)")
            await asyncio.sleep(0.05)

    async def serving_version(self, tenant: str, name: str, version: int) -> tuple[DeploymentInfo | None, int]:
        """The deployment and the version a call means: ``version``, or the serving one when it is 0."""
        check_name(name, "deployment")
        check_version(version, zero="the serving version")
        info = await self.get(tenant, name)
        if version:
            return info, version
        if info is not None:
            return info, info.model_version
        versions = self._live.versions(tenant, name)
        if not versions:
            raise FailedPrecondition(f"deployment {name!r} has no serving version yet", field="version")
        return info, versions[-1]


class References:
    """The drift reference of each model version: from memory, from KV, or built now from its training data.

    A failed build is remembered for :data:`REFERENCE_RETRY_S`, so a version whose data cannot be read does
    not cost a read on every call.

    Args:
        store: The references in KV (``<tenant>.ref.<model>.<version>``).
        versions: The model versions the registry announced (``<tenant>.mv.<model>.<version>``).
        dataset_versions: The dataset versions the data service announced (``<tenant>.dsv.<id>``).
        objects: Reads a digest-verified object (training data, artifacts).
        max_rows: At most this many training rows are predicted for the prediction reference.
        clock: Seconds since the epoch.
        trusted: The artifact public keys an artifact's signature must check against.
    """

    def __init__(
        self,
        store: Store[ReferenceRecord],
        versions: Store[VersionInfo],
        dataset_versions: Store[DatasetVersionInfo],
        objects: ObjectReader,
        max_rows: int,
        clock: Clock,
        trusted: TrustedKeys,
    ) -> None:
        self._trusted = trusted
        self._store = store
        self._versions = versions
        self._dataset_versions = dataset_versions
        self._objects = objects
        self._max_rows = max_rows
        self._clock = clock
        self._references: dict[tuple[str, str, int], ReferenceRecord] = {}
        self._failures: dict[tuple[str, str, int], tuple[float, str]] = {}
        self._locks: dict[tuple[str, str, int], asyncio.Lock] = {}

    def forget_tenant(self, tenant: str) -> None:
        drop_tenant(tenant, self._references, self._failures, self._locks)

    def cached(self, tenant: str, model: str, version: int) -> ReferenceRecord | None:
        """The reference when it is in memory already (no KV read, no build)."""
        return self._references.get((tenant, model, version))

    async def get(self, tenant: str, model: str, version: int) -> ReferenceRecord:
        """The drift reference of a model version: from memory, KV, or built now from the training data.

        Raises:
            FailedPrecondition: When it cannot be built (yet): the version or its data is unknown or unreadable.
        """
        key = (tenant, model, version)
        found = self._references.get(key)
        if found is not None:
            return found
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            found = self._references.get(key)
            if found is not None:
                return found
            kv_key = f"{tenant}.ref.{model}.{version}"
            stored = await self._store.get(kv_key)
            if stored is not None:
                self._references[key] = stored.value
                return stored.value
            failed = self._failures.get(key)
            if failed is not None and self._clock() - failed[0] < REFERENCE_RETRY_S:
                raise FailedPrecondition(failed[1], field="version")
            try:
                built = await self._build(tenant, model, version)
            except FailedPrecondition as exc:
                self._failures[key] = (self._clock(), exc.message)
                raise
            await self._store.put(kv_key, built)
            self._references[key] = built
            self._failures.pop(key, None)
            return built

    async def erase(self, tenant: str, model: str, version: int) -> None:
        """Forgets a deleted version's reference: erased from KV (history included) and from memory."""
        key = (tenant, model, version)
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._store.erase(f"{tenant}.ref.{model}.{version}")
            self._references.pop(key, None)
            self._failures.pop(key, None)
        self._locks.pop(key, None)

    async def _build(self, tenant: str, model: str, version: int) -> ReferenceRecord:
        stored = await self._versions.get(f"{tenant}.mv.{model}.{version}")
        if stored is None:
            raise FailedPrecondition(
                f"{model} version {version} is unknown to the monitor (no registry.version.created seen), "
                "so it has no drift reference"
            )
        v = stored.value
        try:
            training = await self._objects(v.dataset_object)
        except Exception as exc:
            raise FailedPrecondition(f"the training data of {model} v{version} cannot be read: {exc}") from exc
        try:
            artifact: bytes | None = await self._objects(v.artifact)
        except Exception as exc:
            log.warning("artifact of %s v%d not readable: %s", model, version, exc)
            artifact = None
        raw, raw_id = await self._raw_upload(tenant, v.dataset_version_id)
        return await asyncio.to_thread(
            build_reference,
            tenant=tenant,
            model_name=model,
            version=version,
            features=v.features,
            training=training,
            training_version_id=v.dataset_version_id,
            artifact=artifact,
            trusted=self._trusted,
            raw=raw,
            raw_version_id=raw_id,
            max_rows=self._max_rows,
            built_at=self._clock(),
        )

    async def _raw_upload(self, tenant: str, version_id: str) -> tuple[bytes | None, str]:
        """The Parquet bytes of the upload a recipe-made version derives from (None for an upload)."""
        current = version_id
        for _ in range(50):
            found = await self._dataset_versions.get(f"{tenant}.dsv.{current}")
            if found is None:
                return None, ""
            info = found.value
            if info.origin == "upload" or not info.parent_version_id:
                if current == version_id:
                    return None, ""
                try:
                    return await self._objects(info.object), current
                except Exception as exc:
                    log.warning("raw upload %s not readable: %s", current, exc)
                    return None, ""
            current = info.parent_version_id
        return None, ""


__all__ = [
    "MAX_DURATION_S",
    "MAX_TIME_S",
    "Deployments",
    "References",
    "check_duration",
    "check_name",
    "check_time",
]
