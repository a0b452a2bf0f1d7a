"""Per-tenant request rates: a token bucket each, refilled continuously."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


class RateLimits:
    """``allow(tenant)`` takes a token from the tenant's bucket; False when it is empty.

    Args:
        rate_per_s: Tokens a second each tenant's bucket gains (0: no limit).
        burst: The bucket's size, and what a new bucket holds (0: ``rate_per_s``, a second's worth).
        per_tenant: ``rate_per_s`` for named tenants (their bucket holds a second's worth, or ``burst``).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float = 0.0,
        per_tenant: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._per_tenant = dict(per_tenant or {})
        self._clock = clock
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
        return self._per_tenant.get(tenant, self._rate)

    def allow(self, tenant: str) -> bool:
        bucket = self._buckets.get(tenant)
        now = self._clock()
        if bucket is None:
            rate = self.rate_of(tenant)
            if rate <= 0:
                return True
            size = self._burst or max(rate, 1.0)
            bucket = self._buckets[tenant] = [size, now, rate, size]
        tokens, last, rate, size = bucket
        tokens = min(size, tokens + (now - last) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
