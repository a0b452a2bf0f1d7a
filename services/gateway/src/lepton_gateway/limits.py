"""Per-tenant request rates: a token bucket each, refilled continuously."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from lepton_gateway.allowance import lower


class RateLimits:
    """``allow(tenant)`` takes a token from the tenant's bucket; False when it is empty.

    Args:
        rate_per_s: Tokens a second each tenant's bucket gains (0: no limit).
        burst: The bucket's size, and what a new bucket holds (0: ``rate_per_s``, a second's worth).
        per_tenant: ``rate_per_s`` for named tenants (their bucket holds a second's worth, or ``burst``).
        clock: Seconds, monotonic (tests pass their own).
        plan_rate: A tenant's plan's rate (0: none; ``""``: the default plan's). A tenant's bucket
            fills at the lower of this and the configured rate, as the plan is now.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float = 0.0,
        per_tenant: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        plan_rate: Callable[[str], float] | None = None,
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._per_tenant = dict(per_tenant or {})
        self._clock = clock
        self._plan_rate = plan_rate
        #: tenant -> [tokens, last refill, rate, size]
        self._buckets: dict[str, list[float]] = {}

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def per_tenant(self) -> Mapping[str, float]:
        return dict(self._per_tenant)

    def rate_of(self, tenant: str) -> float:
        configured = self._per_tenant.get(tenant, self._rate)
        return lower(configured, self._plan_rate(tenant)) if self._plan_rate else configured

    @property
    def default_rate(self) -> float:
        """The rate of a tenant with no rate of its own (neither configured nor by a plan of its own)."""
        return lower(self._rate, self._plan_rate("")) if self._plan_rate else self._rate

    def allow(self, tenant: str) -> bool:
        bucket = self._buckets.get(tenant)
        now = self._clock()
        rate = self.rate_of(tenant)
        if rate <= 0:
            return True
        size = self._burst or max(rate, 1.0)
        if bucket is None:
            bucket = self._buckets[tenant] = [size, now, rate, size]
        bucket[2], bucket[3] = rate, size  # a plan may have changed since the last call
        tokens, last, rate, size = bucket
        tokens = min(size, tokens + (now - last) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
