"""A deployment's Triton hosts, as its rollouts and reconcile loop use them, through one :class:`HostFactory`.

Hosts are named: each step resolves a record's host through the operator's :class:`HostPool`
(for the record's tenant) and connects only to the address found there. What a step reports
(errors, statistics, warnings) names hosts by pool name, never by address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from lepton_core.errors import Unavailable
from lepton_core.triton_pool import HostPool
from lepton_deployer.errors import HostError, RolloutFailed
from lepton_deployer.hosts import HostFactory, TritonHost
from lepton_deployer.records import DeploymentRecord
from lepton_deployer.smoke import smoke_test
from lepton_deployer.triton_config import STAGED_SUFFIX, load_request
from lepton_ml import artifacts

log = logging.getLogger(__name__)
#: How often a load's readiness is asked for.
READY_POLL_S = 0.1


class Fleet:
    """Loads, checks and unloads models on hosts, opening a connection to a host for each step.

    Every ``host`` is a record's host (a pool name, or an address in a record from before host
    names), resolved for ``tenant`` (or the record's) by ``pool``; one in no entry open to the
    tenant raises :class:`~lepton_deployer.errors.HostNotInPool` before any connection.
    """

    def __init__(self, connect: HostFactory, pool: HostPool, load_timeout: float) -> None:
        self._connect = connect
        self.pool = pool
        self.load_timeout = load_timeout

    @asynccontextmanager
    async def _open(self, tenant: str, host: str) -> AsyncIterator[TritonHost]:
        url = self.pool.address(tenant, host)
        name = self.pool.shown(tenant, host)
        conn = self._connect(url)
        try:
            yield conn
        # Triton's (gRPC's) words may quote the address; the tenant reads them, and the address is the operator's.
        except HostError as exc:
            raise HostError(exc.url, exc.detail.replace(url, name), exc.status) from exc
        except RolloutFailed as exc:
            raise RolloutFailed(exc.message.replace(url, name)) from exc
        finally:
            await conn.close()

    def check_open(self, record: DeploymentRecord) -> None:
        """:class:`~lepton_deployer.errors.HostNotInPool` unless each host of ``record`` is open to its tenant."""
        for host in record.hosts:
            self.pool.address(record.tenant, host)

    async def load(
        self,
        host: str,
        triton_model: str,
        record: DeploymentRecord,
        version: int,
        files: dict[str, bytes],
        versions: list[int],
        other_files: dict[str, bytes] | None = None,
    ) -> None:
        """Loads ``versions`` of ``triton_model`` on ``host`` and waits until each is ready.

        ``version`` is served from ``files``, the others from ``other_files`` (see
        :func:`~lepton_deployer.triton_config.load_request`).
        """
        config, payload = load_request(record, triton_model, versions, version, files, other_files)
        name = self.pool.shown(record.tenant, host)
        try:
            async with self._open(record.tenant, host) as conn:
                await conn.load(triton_model, config, payload, self.load_timeout)
                for v in versions:
                    await wait_ready(conn, triton_model, str(v), self.load_timeout)
        except HostError as exc:
            raise RolloutFailed(
                f"Triton host {name!r} could not load {triton_model} v{versions}: {exc.detail}"
            ) from exc

    async def smoke(
        self,
        tenant: str,
        host: str,
        triton_model: str,
        version: int,
        inputs: dict[str, list[Any]],
        signature: artifacts.Signature,
        bundle: artifacts.Bundle,
        batch: int,
    ) -> None:
        """The smoke test (:func:`~lepton_deployer.smoke.smoke_test`) on ``host``."""
        async with self._open(tenant, host) as conn:
            await smoke_test(
                conn, triton_model, version, inputs, signature, bundle, batch, self.pool.shown(tenant, host)
            )

    async def check_failures(self, record: DeploymentRecord, staged: str, version: int) -> None:
        """A canary step's check: Triton counted no failed request of ``staged`` on any host."""
        for host in record.hosts:
            async with self._open(record.tenant, host) as conn:
                stats = await conn.statistics(staged, str(version))
            for s in stats:
                failed = int(s.get("inference_stats", {}).get("fail", {}).get("count", 0))
                if failed:
                    name = self.pool.shown(record.tenant, host)
                    raise RolloutFailed(f"canary: version {version} failed {failed} requests on {name!r}")

    async def is_ready(self, tenant: str, host: str, triton_model: str, version: int) -> bool:
        async with self._open(tenant, host) as conn:
            return await conn.is_ready(triton_model, str(version))

    async def unload(self, tenant: str, host: str, triton_model: str) -> None:
        async with self._open(tenant, host) as conn:
            await conn.unload(triton_model)

    async def quiet_unload(self, tenant: str, host: str, triton_model: str) -> None:
        """Unloads, logging a failure (a dead host has nothing loaded to free)."""
        try:
            await self.unload(tenant, host, triton_model)
        except Exception as exc:
            log.warning("unload of %s on %s failed: %s", triton_model, host, exc)

    async def statistics(self, record: DeploymentRecord) -> tuple[list[dict[str, Any]], list[str]]:
        """Triton's statistics of the deployment's models on every host, and hosts that did not answer."""
        out: list[dict[str, Any]] = []
        warnings: list[str] = []
        for host in record.hosts:
            name = self.pool.shown(record.tenant, host)
            try:
                async with self._open(record.tenant, host) as conn:
                    for model in (record.triton_model, record.triton_model + STAGED_SUFFIX):
                        try:
                            stats = await conn.statistics(model)
                        except HostError:
                            continue  # not loaded there (the staged model, mostly)
                        for s in stats:
                            s["host"] = name
                            s["ready"] = await conn.is_ready(model, s.get("version", ""))
                            out.append(s)
            except Exception as exc:
                warnings.append(f"{name}: {exc}")
        return out, warnings


async def wait_ready(host: TritonHost, name: str, version: str, timeout: float) -> None:
    """Returns once ``host`` reports ``version`` of ``name`` ready; :class:`Unavailable` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await host.is_ready(name, version):
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"Triton did not report {name} v{version} ready within {timeout:.0f}s")
        await asyncio.sleep(READY_POLL_S)
