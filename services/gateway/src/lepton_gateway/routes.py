"""Which Triton model and version answer a tenant's deployment: the deployer's records, kept current.

The deployer keeps each deployment at ``<tenant>.<name>`` in the KV bucket ``deployments``
(beside ``<tenant>.version.<model>.<n>`` entries, which are not deployments). The gateway
watches the bucket and keeps, per deployment, its routes (the stable version and, during a
canary rollout, the staged one with its weight) and the Triton hosts that serve it. Only the
fields read here are modelled; the deployer's records carry more.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lepton_core.bus import follow_bucket
from lepton_core.errors import FailedPrecondition, NotFound, Unavailable
from lepton_core.triton_pool import DEFAULT_HOST, HostPool

log = logging.getLogger(__name__)

BUCKET = "deployments"
#: Pause before watching again after a watch failed.
RETRY_S = 1.0


class _Route(BaseModel):
    model_config = ConfigDict(extra="ignore")
    triton_model: str
    model_version: int
    weight: float


class _HostState(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    ready: bool = False


class DeploymentView(BaseModel):
    """The part of a deployer record (``lepton_deployer.records.DeploymentRecord``) the gateway uses."""

    model_config = ConfigDict(extra="ignore")
    tenant: str
    name: str
    state: str
    triton_model: str
    triton_url: str = ""
    model_version: int = 0
    hosts: list[str] = Field(default_factory=list)
    host_states: list[_HostState] = Field(default_factory=list)
    routes: list[_Route] = Field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """Where one request goes: a Triton host, model and version."""

    host: str
    model: str
    version: str


@dataclass(frozen=True)
class Served:
    """One deployment as the gateway routes it."""

    tenant: str
    name: str
    state: str
    routes: tuple[tuple[str, str, float], ...]
    #: Its hosts, as the record names them (pool names; addresses in records from before names).
    hosts: tuple[str, ...]
    #: The stable model and version (metadata, config and readiness are answered for it).
    stable: tuple[str, str]

    @classmethod
    def of(cls, view: DeploymentView) -> Served:
        routes = tuple((r.triton_model, str(r.model_version), r.weight) for r in view.routes if r.weight > 0)
        ready = tuple(h.url for h in view.host_states if h.ready)
        hosts = ready or tuple(view.hosts) or ((view.triton_url,) if view.triton_url else (DEFAULT_HOST,))
        stable = next(((m, v) for m, v, _ in routes if m == view.triton_model), (view.triton_model, ""))
        return cls(view.tenant, view.name, view.state, routes, hosts, stable)


class RouteTable:
    """Every tenant's deployments, from the deployer's records; :meth:`target` routes one request."""

    def __init__(
        self, pool: HostPool, rng: random.Random | None = None, on_change: Callable[[], None] | None = None
    ) -> None:
        self._pool = pool
        self._served: dict[tuple[str, str], Served] = {}
        self._rng = rng or random.Random()
        self._turn = itertools.count()
        #: Called after each change (the nginx front pushes the table again).
        self.on_change = on_change

    def __len__(self) -> int:
        return len(self._served)

    def apply(self, key: str, value: bytes | None) -> None:
        """One KV entry: a deployment written (``value``) or deleted (None); other keys are ignored."""
        tenant, dot, name = key.partition(".")
        if not dot or "." in name:
            return  # ``<tenant>.version.<model>.<n>``: what the deployer knows of a version
        if value is None:
            self._served.pop((tenant, name), None)
            self._changed()
            return
        try:
            view = DeploymentView.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            log.warning("deployment record %s not understood: %s", key, exc)
            return
        if (view.tenant, view.name) != (tenant, name):
            log.warning("deployment record %s names %s.%s; ignored", key, view.tenant, view.name)
            return
        self._served[(tenant, name)] = Served.of(view)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def snapshot(self) -> list[tuple[Served, list[str]]]:
        """Every deployment, with the pool entries of its hosts (those the pool does not know left out)."""
        out = []
        for served in self._served.values():
            names = [self._pool.name_of(served.tenant, h) for h in served.hosts]
            out.append((served, [n for n in names if n is not None]))
        return out

    def served(self, tenant: str, name: str) -> Served:
        """The tenant's deployment; NotFound for a name the tenant has no deployment of (another's included)."""
        found = self._served.get((tenant, name))
        if found is None:
            raise NotFound(f"no deployment named {name!r}", field="model_name")
        return found

    def target(self, tenant: str, name: str, version: str = "") -> Target:
        """Where a request for ``name`` goes: a route by weight, or the route serving ``version`` when given."""
        served = self.served(tenant, name)
        if not served.routes:
            if served.state == "failed":
                raise FailedPrecondition(f"deployment {name!r} failed and serves nothing")
            raise Unavailable(f"deployment {name!r} serves nothing yet (state {served.state})")
        if version:
            chosen = next(((m, v) for m, v, _ in served.routes if v == version), None)
            if chosen is None:
                serving = ", ".join(v for _, v, _ in served.routes)
                raise NotFound(f"deployment {name!r} serves version {serving}, not {version}", field="model_version")
            model, version = chosen
        elif len(served.routes) == 1:
            model, version, _ = served.routes[0]
        else:
            model, version, _ = self._rng.choices(served.routes, weights=[w for _, _, w in served.routes])[0]
        return Target(self._host(served), model, version)

    def stable(self, tenant: str, name: str) -> Target:
        """The deployment's stable model (for metadata, config and readiness)."""
        served = self.served(tenant, name)
        model, version = served.stable
        return Target(self._host(served), model, version)

    def _host(self, served: Served) -> str:
        hosts = served.hosts
        host = hosts[0] if len(hosts) == 1 else hosts[next(self._turn) % len(hosts)]
        name = self._pool.name_of(served.tenant, host)
        if name is None:
            raise Unavailable(f"deployment {served.name!r} is served on a host this gateway does not know")
        return self._pool.entries[name].url


async def follow(kv: KeyValue, table: RouteTable, loaded: asyncio.Event) -> None:
    """Applies every entry of the bucket to ``table``, then each change as it happens, until cancelled.

    ``loaded`` is set once the entries there were at the start are in (:func:`lepton_core.bus.follow_bucket`).
    """
    await follow_bucket(kv, table.apply, loaded, f"the {BUCKET} bucket", RETRY_S)
