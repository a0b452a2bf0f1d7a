"""A deployment's Triton hosts, as its rollouts and reconcile loop use them, through one :class:`HostFactory`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from lepton_core.errors import Unavailable
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
    """Loads, checks and unloads models on hosts, opening a connection to a host for each step."""

    def __init__(self, connect: HostFactory, nats_url: str, load_timeout: float) -> None:
        self._connect = connect
        self._nats_url = nats_url
        self.load_timeout = load_timeout

    @asynccontextmanager
    async def _open(self, url: str) -> AsyncIterator[TritonHost]:
        host = self._connect(url)
        try:
            yield host
        finally:
            await host.close()

    async def load(
        self,
        url: str,
        triton_model: str,
        record: DeploymentRecord,
        version: int,
        files: dict[str, bytes],
        versions: list[int],
        other_files: dict[str, bytes] | None = None,
    ) -> None:
        """Loads ``versions`` of ``triton_model`` on ``url`` and waits until each is ready.

        ``version`` is served from ``files``, the others from ``other_files`` (see
        :func:`~lepton_deployer.triton_config.load_request`).
        """
        config, payload = load_request(record, triton_model, versions, version, files, other_files, self._nats_url)
        async with self._open(url) as host:
            try:
                await host.load(triton_model, config, payload, self.load_timeout)
                for v in versions:
                    await wait_ready(host, triton_model, str(v), self.load_timeout)
            except HostError as exc:
                raise RolloutFailed(f"Triton at {url} could not load {triton_model} v{versions}: {exc.detail}") from exc

    async def smoke(
        self,
        url: str,
        triton_model: str,
        version: int,
        inputs: dict[str, list[Any]],
        signature: artifacts.Signature,
        bundle: artifacts.Bundle,
        batch: int,
    ) -> None:
        """The smoke test (:func:`~lepton_deployer.smoke.smoke_test`) on ``url``."""
        async with self._open(url) as host:
            await smoke_test(host, triton_model, version, inputs, signature, bundle, batch)

    async def check_failures(self, record: DeploymentRecord, staged: str, version: int) -> None:
        """A canary step's check: Triton counted no failed request of ``staged`` on any host."""
        for url in record.hosts:
            async with self._open(url) as host:
                stats = await host.statistics(staged, str(version))
            for s in stats:
                failed = int(s.get("inference_stats", {}).get("fail", {}).get("count", 0))
                if failed:
                    raise RolloutFailed(f"canary: version {version} failed {failed} requests on {url}")

    async def is_ready(self, url: str, triton_model: str, version: int) -> bool:
        async with self._open(url) as host:
            return await host.is_ready(triton_model, str(version))

    async def unload(self, url: str, triton_model: str) -> None:
        async with self._open(url) as host:
            await host.unload(triton_model)

    async def quiet_unload(self, url: str, triton_model: str) -> None:
        """Unloads, logging a failure (a dead host has nothing loaded to free)."""
        try:
            await self.unload(url, triton_model)
        except Exception as exc:
            log.warning("unload of %s on %s failed: %s", triton_model, url, exc)

    async def statistics(self, record: DeploymentRecord) -> tuple[list[dict[str, Any]], list[str]]:
        """Triton's statistics of the deployment's models on every host, and hosts that did not answer."""
        out: list[dict[str, Any]] = []
        warnings: list[str] = []
        for url in record.hosts:
            host = self._connect(url)
            try:
                for model in (record.triton_model, record.triton_model + STAGED_SUFFIX):
                    try:
                        stats = await host.statistics(model)
                    except HostError:
                        continue  # not loaded there (the staged model, mostly)
                    for s in stats:
                        s["host"] = url
                        s["ready"] = await host.is_ready(model, s.get("version", ""))
                        out.append(s)
            except Exception as exc:
                warnings.append(f"{url}: {exc}")
            finally:
                await host.close()
        return out, warnings


async def wait_ready(host: TritonHost, name: str, version: str, timeout: float) -> None:
    """Returns once ``host`` reports ``version`` of ``name`` ready; :class:`Unavailable` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await host.is_ready(name, version):
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"Triton did not report {name} v{version} ready within {timeout:.0f}s")
        await asyncio.sleep(READY_POLL_S)
