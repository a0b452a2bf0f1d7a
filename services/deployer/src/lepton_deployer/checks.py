"""What a Deploy may ask for, checked before anything is read from the registry, stored, published or loaded.

Names (deployment, model, alias, ``follow``) follow the platform's one grammar
(:mod:`lepton_core.names`). Hosts are names of entries in the operator's host pool
(:mod:`lepton_core.triton_pool`) open to the caller's tenant, never addresses. Every refusal is
:class:`~lepton_core.errors.InvalidArgument` naming the field, and quotes the value as
:func:`~lepton_core.names.shown` cuts it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from lepton_core.bounds import check_version
from lepton_core.errors import InvalidArgument
from lepton_core.names import check_name, shown
from lepton_core.triton_pool import MAX_HOSTS, HostPool
from lepton_deployer.records import STRATEGIES, ServingConfig

MAX_CANARY_STEPS: Final = 10
"""Most canary shares one rollout goes through."""
MAX_CANARY_STEP_SECONDS: Final = 3600.0
"""Longest a canary share may run."""


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

    def check(self, tenant: str, pool: HostPool) -> None:
        """Each given setting in its bounds (an empty list or 0 counts as not given, as in protobuf);
        the hosts named in ``pool`` and open to ``tenant``."""
        if self.hosts is not None:
            pool.check(tenant, self.hosts)
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


def check_deploy(
    tenant: str, name: str, model: str, version: int, asked: Asked, pool: HostPool, *, latest: bool = False
) -> None:
    """Every field of a Deploy that can be checked without the store (``pool``: the hosts it may name).

    ``latest``: version 0 is allowed (the registry resolves it, at the gRPC edge).
    """
    check_name(tenant, "tenant", what="a tenant name")
    check_name(name, "name", what="a deployment name")
    check_name(model, "model_name", what="a model name")
    check_version(version, zero="the alias's version, else the latest" if latest else None)
    asked.check(tenant, pool)


__all__ = [
    "MAX_CANARY_STEPS",
    "MAX_CANARY_STEP_SECONDS",
    "MAX_HOSTS",
    "Asked",
    "check_canary_step",
    "check_canary_weights",
    "check_deploy",
    "check_follow",
    "check_strategy",
]
