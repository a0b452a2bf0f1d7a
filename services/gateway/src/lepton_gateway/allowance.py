"""The plans' prediction limits at the gateway: each tenant's rate, and who is past its month.

A tenant's plan (:mod:`lepton_core.quotas`, followed from the ``tenants`` bucket) names
``predictions_per_second`` and ``predictions_per_month``. The rate is the token bucket's: a
tenant's bucket fills at the lower of the gateway's configured rate and its plan's (0 on either
side is no limit there). The month's count is the registry's meter (``usage`` bucket, from the
serving models' prediction logs), followed here: a tenant whose count reached its plan's
``predictions_per_month`` is refused (RESOURCE_EXHAUSTED, HTTP 429) until the month ends or its
plan grows. The count arrives as the logs are metered, so a burst may pass the month's limit by
what a few seconds serve.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from nats.js.kv import KeyValue

from lepton_core.bus import follow_bucket
from lepton_core.errors import ResourceExhausted
from lepton_core.quotas import PlanBook, prediction_allowance
from lepton_core.usage import USAGE_BUCKET, UsageRecord, month_of


def lower(a: float, b: float) -> float:
    """The stricter of two rates, where 0 is no limit."""
    if a <= 0:
        return b
    if b <= 0:
        return a
    return min(a, b)


class Allowances:
    """What the plans allow each tenant; :meth:`follow_usage` keeps the month's counts."""

    def __init__(self, plans: PlanBook, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.plans = plans
        self._clock = clock
        self._used: dict[str, dict[str, int]] = {}
        self.loaded = asyncio.Event()

    def plan_rate(self, tenant: str) -> float:
        """The plan's ``predictions_per_second`` of ``tenant`` (0: none); ``""`` asks the default plan's."""
        return float(prediction_allowance(self.plans, tenant).per_second)

    def used_this_month(self, tenant: str) -> int:
        return self._used.get(tenant, {}).get(month_of(self._clock()), 0)

    def refusal(self, tenant: str) -> ResourceExhausted | None:
        """The refusal of ``tenant``'s next prediction when its month is used up; None otherwise."""
        return prediction_allowance(self.plans, tenant).refusal(self.used_this_month(tenant))

    def blocked(self) -> dict[str, str]:
        """Every tenant refused for its month, with the refusal's message (what nginx is told)."""
        out = {}
        for tenant in sorted(self._used):
            refusal = self.refusal(tenant)
            if refusal is not None:
                out[tenant] = str(refusal)
        return out

    def apply_usage(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._used.pop(key, None)
            return
        try:
            record = UsageRecord.model_validate_json(value)
        except ValueError:
            return
        self._used[record.tenant] = dict(record.predictions)

    async def follow_usage(self, kv: KeyValue) -> None:
        await follow_bucket(kv, self.apply_usage, self.loaded, f"the {USAGE_BUCKET} bucket")
