"""The operator's Triton hosts, by name: the only addresses the deployer and the gateway connect to.

A deployment names its hosts from this pool (``DeployRequest.hosts``), never by address, so an
API key cannot make the deployer connect to an address of its choosing and send it a model (and
the serving model's bus address). The operator sets the pool (``LEPTON_DEPLOYER_HOSTS``, JSON):

.. code-block:: json

    {"gpu-a": {"url": "10.0.0.5:8001"}, "acme-gpu": {"url": "10.0.0.9:8001", "tenants": ["acme"]}}

An entry without ``tenants`` is shared by every tenant; one with ``tenants`` is open to those
alone, and to any other tenant it does not exist: naming it gets the answer an unknown name
gets. The entry :data:`DEFAULT_HOST` is always there, at the deployer's ``triton_url``, shared:
a deployment that names no hosts is served there.

Records keep the names, so a change of an entry's address is followed by the next rollout and the
reconcile loop. Records written before hosts had names hold addresses: an address that is the
address of an entry open to the record's tenant counts as that entry (and the reconcile loop
rewrites it as the name); any other is a host the deployer no longer connects to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton_core.errors import FailedPrecondition, InvalidArgument
from lepton_core.names import NAME_GRAMMAR, is_name, shown


class HostNotInPool(FailedPrecondition):
    """A deployment's host is in no entry of the host pool open to its tenant.

    Raised before any connection; the message names no address.
    """


DEFAULT_HOST: Final = "default"
"""The pool entry of the deployer's ``triton_url``, where deployments that name no hosts go."""
NOT_IN_POOL: Final = "(not in pool)"
"""How a record's host that is in no pool entry open to its tenant is shown (never its address)."""
MAX_HOSTS: Final = 16
"""Most Triton hosts one deployment lists."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOTTED = re.compile(r"[0-9.]+")
_PORT = re.compile(r"[0-9]{1,5}")
ADDRESS: Final = "a Triton gRPC address host:port (a DNS name, IPv4 or [IPv6] literal; port 1..65535)"
"""The grammar of a pool entry's ``url``, in words."""


def is_address(value: str) -> bool:
    """Whether ``value`` is ``host:port`` as tritonclient takes it (no scheme): a DNS name, IPv4 or ``[IPv6]``."""
    host, sep, port = value.rpartition(":")
    return bool(sep) and _PORT.fullmatch(port) is not None and 1 <= int(port) <= 65535 and _is_host(host)


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if _DOTTED.fullmatch(host):  # all digits and dots: an IPv4 literal or nothing
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None


class PoolEntry(BaseModel):
    """One Triton host of the pool: its address, and the tenants it is open to (all, when unset)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    tenants: list[str] | None = None

    @field_validator("url")
    @classmethod
    def _an_address(cls, url: str) -> str:
        if not is_address(url):
            raise ValueError(f"expected {ADDRESS}, without a scheme; got {shown(url)}")
        return url

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: list[str] | None) -> list[str] | None:
        if tenants is not None and not tenants:
            raise ValueError("list at least one tenant, or leave tenants out for a host every tenant shares")
        for tenant in tenants or []:
            if not is_name(tenant):
                raise ValueError(f"expected tenant names ({NAME_GRAMMAR}); got {shown(tenant)}")
        return tenants

    def open_to(self, tenant: str) -> bool:
        """Whether ``tenant`` may deploy here."""
        return self.tenants is None or tenant in self.tenants


class HostPool:
    """The operator's Triton hosts by name, and which tenant may use which.

    Args:
        entries: The hosts by name; must hold :data:`DEFAULT_HOST` (see :meth:`of`).

    Raises:
        ValueError: A name is not a name, or :data:`DEFAULT_HOST` is missing.
    """

    def __init__(self, entries: Mapping[str, PoolEntry]) -> None:
        for name in entries:
            if not is_name(name):
                raise ValueError(f"host names are names ({NAME_GRAMMAR}); got {shown(name)}")
        if DEFAULT_HOST not in entries:
            raise ValueError(f"the pool has no {DEFAULT_HOST!r} entry")
        self._entries = dict(entries)

    @classmethod
    def of(cls, triton_url: str, hosts: Mapping[str, PoolEntry]) -> HostPool:
        """The pool of the deployer's settings: ``hosts``, and :data:`DEFAULT_HOST` at ``triton_url``, shared."""
        if DEFAULT_HOST in hosts:
            raise ValueError(f"{DEFAULT_HOST!r} is the entry of triton_url: set triton_url for it, or use another name")
        return cls({DEFAULT_HOST: PoolEntry(url=triton_url), **hosts})

    @property
    def entries(self) -> Mapping[str, PoolEntry]:
        """Every entry by name (the operator's view: addresses and tenants)."""
        return MappingProxyType(self._entries)

    def names(self, tenant: str) -> list[str]:
        """The names ``tenant`` may deploy to, in order."""
        return sorted(name for name, entry in self._entries.items() if entry.open_to(tenant))

    def check(self, tenant: str, hosts: Sequence[str]) -> list[str]:
        """``hosts`` if each names an entry open to ``tenant``, none twice, at most :data:`MAX_HOSTS`.

        An unknown name, an entry of other tenants and an address all get one answer: the
        names ``tenant`` may use (never an address, never another tenant's entry).
        """
        if len(hosts) > MAX_HOSTS:
            raise InvalidArgument(f"at most {MAX_HOSTS} hosts, got {len(hosts)}", field="hosts")
        seen: dict[str, int] = {}
        for i, host in enumerate(hosts):
            entry = self._entries.get(host)
            if entry is None or not entry.open_to(tenant):
                raise InvalidArgument(
                    f"expected the name of a host in the deployer's pool, one of {self.names(tenant)} "
                    f"(hosts are named by the operator, never given as addresses); got {shown(host)}",
                    field=f"hosts[{i}]",
                )
            if host in seen:
                raise InvalidArgument(f"{shown(host)} is hosts[{seen[host]}] already", field=f"hosts[{i}]")
            seen[host] = i
        return list(hosts)

    def name_of(self, tenant: str, host: str) -> str | None:
        """The entry a record's ``host`` is, for ``tenant``: its name, or (a record from before host
        names) the entry open to ``tenant`` at that address; None when there is none."""
        entry = self._entries.get(host)
        if entry is not None:
            return host if entry.open_to(tenant) else None
        return next((n for n, e in self._entries.items() if e.url == host and e.open_to(tenant)), None)

    def shown(self, tenant: str, host: str) -> str:
        """What ``tenant`` sees of a record's ``host``: its name, or :data:`NOT_IN_POOL`."""
        return self.name_of(tenant, host) or NOT_IN_POOL

    def named(self, tenant: str, hosts: Sequence[str]) -> list[str]:
        """A record's ``hosts`` with addresses (records from before host names) rewritten as names."""
        return [self.name_of(tenant, h) or h for h in hosts]

    def address_of(self, host: str) -> str | None:
        """Where the entry named ``host`` is (or ``host`` itself, an entry's address in a record from
        before host names), for the platform's own reads (the monitor's statistics); None if in no entry."""
        entry = self._entries.get(host)
        if entry is not None:
            return entry.url
        return host if any(e.url == host for e in self._entries.values()) else None

    def address(self, tenant: str, host: str) -> str:
        """Where to connect for a record's ``host``; :class:`HostNotInPool` if no entry open to ``tenant`` has it."""
        name = self.name_of(tenant, host)
        if name is None:
            raise HostNotInPool(
                f"a host of this deployment is not in the deployer's host pool (open to tenant {tenant!r}): "
                f"the operator removed or closed it, or the deployment was made before hosts had names; "
                f"deploy again naming hosts from {self.names(tenant)}"
            )
        return self._entries[name].url


class PoolSettings(BaseModel):
    """The pool's two settings, the same wherever it is read (the deployer, the gateway).

    A service's settings class inherits them beside :class:`~lepton_core.settings.ServiceSettings`,
    so they are ``LEPTON_<SERVICE>_TRITON_URL`` and ``LEPTON_<SERVICE>_HOSTS``, and a pool that
    is not one (a bad name, address or tenant) stops the service at start.
    """

    triton_url: str = Field(
        "127.0.0.1:8001",
        description="gRPC address (host:port) of the Triton host pool's 'default' entry, shared by every tenant: "
        "where deployments that name no hosts are served.",
    )
    hosts: dict[str, PoolEntry] = Field(
        default_factory=dict,
        description='More Triton hosts deployments may name, as JSON: name -> {"url": "host:port"} (shared) or '
        '{"url": ..., "tenants": [...]} (open to those tenants alone). Requests name hosts, never addresses; '
        "the deployer and the gateway must be given the same pool.",
    )

    @model_validator(mode="after")
    def _a_pool(self) -> PoolSettings:
        self.pool()
        return self

    def pool(self) -> HostPool:
        """The Triton host pool: ``hosts`` and, as ``default``, ``triton_url``."""
        try:
            return HostPool.of(self.triton_url, self.hosts)
        except ValueError as exc:
            prefix = str(self.model_config.get("env_prefix", "")).upper()
            raise ValueError(f"{prefix}HOSTS / {prefix}TRITON_URL: {exc}") from None


__all__ = [
    "ADDRESS",
    "DEFAULT_HOST",
    "MAX_HOSTS",
    "NOT_IN_POOL",
    "HostNotInPool",
    "HostPool",
    "PoolEntry",
    "PoolSettings",
    "is_address",
]
