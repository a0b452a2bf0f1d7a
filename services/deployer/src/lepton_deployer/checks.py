"""What a Deploy may ask for, checked before anything is read from the registry, stored, published or loaded.

Names (deployment, model, alias, ``follow``) follow the platform's one grammar
(:mod:`lepton_core.names`). Hosts are Triton gRPC addresses ``host:port`` as tritonclient
takes them (no scheme). Every refusal is :class:`~lepton_core.errors.InvalidArgument` naming
the field, and quotes the value as :func:`~lepton_core.names.shown` cuts it.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from lepton_core.bounds import check_version
from lepton_core.errors import InvalidArgument
from lepton_core.names import check_name, shown
from lepton_deployer.records import STRATEGIES, ServingConfig

MAX_HOSTS: Final = 16
"""Most Triton hosts one deployment lists."""
MAX_CANARY_STEPS: Final = 10
"""Most canary shares one rollout goes through."""
MAX_CANARY_STEP_SECONDS: Final = 3600.0
"""Longest a canary share may run."""

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOTTED = re.compile(r"[0-9.]+")
_PORT = re.compile(r"[0-9]{1,5}")


def check_host(value: str, field: str) -> str:
    """``value`` if it is a Triton gRPC address ``host:port``: a DNS name, IPv4 or ``[IPv6]`` literal and a port."""
    expected = "a Triton gRPC address host:port (a DNS name, IPv4 or [IPv6] literal; port 1..65535)"
    if "://" in value:
        raise InvalidArgument(f"expected {expected}, without a scheme; got {shown(value)}", field=field)
    host, sep, port = value.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535 or not _is_host(host):
        raise InvalidArgument(f"expected {expected}; got {shown(value)}", field=field)
    return value


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


def check_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` if each is an address (:func:`check_host`), none twice, at most :data:`MAX_HOSTS`."""
    if len(hosts) > MAX_HOSTS:
        raise InvalidArgument(f"at most {MAX_HOSTS} hosts, got {len(hosts)}", field="hosts")
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        check_host(host, f"hosts[{i}]")
        if host in seen:
            raise InvalidArgument(f"{shown(host)} is hosts[{seen[host]}] already", field=f"hosts[{i}]")
        seen[host] = i
    return list(hosts)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"must be one of {list(STRATEGIES)}, got {shown(strategy)}", field="strategy")
    return strategy


def check_canary_weights(weights: Sequence[float]) -> list[float]:
    """``weights`` if they are 1 to :data:`MAX_CANARY_STEPS` increasing shares, each in (0, 1)."""
    if not 1 <= len(weights) <= MAX_CANARY_STEPS:
        raise InvalidArgument(f"1 to {MAX_CANARY_STEPS} shares, got {len(weights)}", field="canary_weights")
    # ``not 0 < w < 1`` is true for NaN too.
    if any(not 0 < w < 1 for w in weights) or any(a >= b for a, b in itertools.pairwise(weights)):
        raise InvalidArgument(f"increasing shares, each in (0, 1), got {shown(list(weights))}", field="canary_weights")
    return list(weights)


def check_canary_step(seconds: float) -> float:
    if not 0 < seconds <= MAX_CANARY_STEP_SECONDS or not math.isfinite(seconds):
        raise InvalidArgument(
            f"must be in (0, {MAX_CANARY_STEP_SECONDS:g}] seconds, got {shown(seconds)}", field="canary_step_seconds"
        )
    return seconds


def check_follow(follow: str) -> str:
    """``follow`` if it is empty (follow nothing) or an alias name (``latest``: every new version)."""
    if follow:
        check_name(follow, "follow", what="an alias name to follow ('latest' for every new version), or empty")
    return follow


@dataclass(frozen=True)
class Asked:
    """What a Deploy asks of the deployment's settings; ``None``: not given, the deployment keeps its own."""

    hosts: list[str] | None = None
    strategy: str | None = None
    canary_weights: list[float] | None = None
    canary_step_seconds: float | None = None
    follow: str | None = None
    config: ServingConfig | None = None

    def check(self) -> None:
        """Each given setting in its bounds (an empty list or 0 counts as not given, as in protobuf)."""
        if self.hosts is not None:
            check_hosts(self.hosts)
        if self.strategy is not None:
            check_strategy(self.strategy)
        if self.canary_weights is not None:
            check_canary_weights(self.canary_weights)
        if self.canary_step_seconds is not None:
            check_canary_step(self.canary_step_seconds)
        if self.follow is not None:
            check_follow(self.follow)
        if self.config is not None:
            self.config.check()

    def given(self) -> dict[str, Any]:
        """The settings as keyword arguments (of :meth:`Deployer.deploy <lepton_deployer.core.Deployer.deploy>`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_deploy(tenant: str, name: str, model: str, version: int, asked: Asked, *, latest: bool = False) -> None:
    """Every field of a Deploy that can be checked without the store.

    ``latest``: version 0 is allowed (the registry resolves it, at the gRPC edge).
    """
    check_name(tenant, "tenant", what="a tenant name")
    check_name(name, "name", what="a deployment name")
    check_name(model, "model_name", what="a model name")
    check_version(version, zero="the alias's version, else the latest" if latest else None)
    asked.check()


__all__ = [
    "MAX_CANARY_STEPS",
    "MAX_CANARY_STEP_SECONDS",
    "MAX_HOSTS",
    "Asked",
    "check_canary_step",
    "check_canary_weights",
    "check_deploy",
    "check_follow",
    "check_host",
    "check_hosts",
    "check_strategy",
]
