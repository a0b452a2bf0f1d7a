"""Per-tenant limits: plans, the record of which plan a tenant is on, and the refusal past a limit.

- :class:`Limits`: what a tenant may store, run and serve; ``0`` is no limit.
- :data:`PLANS`: the named presets an operator assigns (``trial``, ``team``, ``unlimited``).
- :class:`PlanRecord`: a tenant's assignment, in the ``tenants`` KV bucket under ``plan.<tenant>``;
  ``plan._default`` names the plan of every tenant without one (the registry's ``default_plan``
  setting; tenant names start with a letter or digit, so no tenant is ``_default``). The
  registry's process alone writes the bucket (``AccessService.SetPlan``); every process follows
  it (:class:`PlanBook`), as it follows the ``keys`` bucket.
- :func:`check_room`: the check each service makes where a thing is created, before anything is
  stored; past a limit it raises :class:`~lepton_core.errors.ResourceExhausted` naming the
  limit, the usage, the limit's value and the plan.
- :class:`PredictionAllowance`: the two prediction limits, for the gateway to enforce.

What is counted where is in docs/security.md ("Quotas and plans"); the usage a tenant sees
(``GetUsage``) is metered from the platform's events (:mod:`lepton_core.usage`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lepton_core.bus import follow_bucket
from lepton_core.errors import InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

TENANTS_BUCKET: Final = "tenants"
"""The KV bucket of plan assignments: written by the registry's process, read by every process."""
PLAN_PREFIX: Final = "plan."
DEFAULT_KEY: Final = "plan._default"
"""The entry naming the plan of tenants without an assignment."""

GIB: Final = 1024**3


class Limits(BaseModel):
    """What one tenant may use; ``0`` means no limit. Each field is a limit's name in refusals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stored_bytes: int = Field(0, ge=0, description="Bytes of dataset versions stored (their Parquet files).")
    datasets: int = Field(0, ge=0, description="Datasets (names) that exist.")
    concurrent_jobs: int = Field(0, ge=0, description="Training jobs unfinished at once: queued or running.")
    queued_jobs: int = Field(0, ge=0, description="Of those, jobs waiting to start.")
    job_run_seconds: int = Field(0, ge=0, description="Seconds one job (or one trial) may run before it is stopped.")
    trials_per_search: int = Field(0, ge=0, description="Trials one hyperparameter search may ask for.")
    deployments: int = Field(0, ge=0, description="Deployments that exist.")
    predictions_per_second: int = Field(0, ge=0, description="Prediction requests a second (the gateway's).")
    predictions_per_month: int = Field(0, ge=0, description="Prediction requests a calendar month (UTC).")


LIMIT_NAMES: Final = tuple(Limits.model_fields)
"""Every limit, in the order usage lists them."""
UNITS: Final = {"stored_bytes": "bytes", "job_run_seconds": "s", "predictions_per_second": "/s"}

PLANS: Final[Mapping[str, Limits]] = {
    "trial": Limits(
        stored_bytes=1 * GIB,
        datasets=10,
        concurrent_jobs=2,
        queued_jobs=4,
        job_run_seconds=1800,
        trials_per_search=16,
        deployments=2,
        predictions_per_second=10,
        predictions_per_month=100_000,
    ),
    "team": Limits(
        stored_bytes=100 * GIB,
        datasets=500,
        concurrent_jobs=8,
        queued_jobs=64,
        job_run_seconds=24 * 3600,
        trials_per_search=256,
        deployments=25,
        predictions_per_second=500,
        predictions_per_month=50_000_000,
    ),
    "unlimited": Limits(),
}
"""The presets an operator assigns (docs/security.md has the table): a free trial, a paid team
plan, and no limits (the default, so that a platform of one's own behaves as it always did)."""
DEFAULT_PLAN: Final = "unlimited"


def check_plan(plan: str, field: str = "plan") -> str:
    if plan not in PLANS:
        raise InvalidArgument(f"{plan!r} is not a plan; expected one of {', '.join(PLANS)}", field=field)
    return plan


def check_overrides(overrides: Mapping[str, int], field: str = "overrides") -> dict[str, int]:
    """``overrides`` when each names a limit and is 0 (no limit) or more."""
    out: dict[str, int] = {}
    for name, value in overrides.items():
        if name not in LIMIT_NAMES:
            raise InvalidArgument(f"{name!r} is not a limit; expected one of {', '.join(LIMIT_NAMES)}", field=field)
        if value < 0:
            raise InvalidArgument(f"must be 0 (no limit) or more, got {value}", field=f"{field}.{name}")
        out[name] = int(value)
    return out


class PlanRecord(BaseModel):
    """A tenant's plan as stored (``plan.<tenant>``), or the default (``plan._default``, tenant ``""``)."""

    tenant: str = ""
    plan: str
    #: Limits that differ from the plan's for this tenant alone (a customer's contract).
    overrides: dict[str, int] = {}
    assigned_by: str = ""
    assigned_at: datetime | None = None


@dataclass(frozen=True)
class TenantPlan:
    """The limits that apply to one tenant now: its plan's, with its overrides."""

    tenant: str
    plan: str
    limits: Limits
    overrides: Mapping[str, int] = field(default_factory=dict)
    #: False when the tenant has no assignment and the default plan applies.
    assigned: bool = False
    record: PlanRecord | None = None


def limits_of(plan: str, overrides: Mapping[str, int] | None = None) -> Limits:
    base = PLANS.get(plan, PLANS[DEFAULT_PLAN])
    return base.model_copy(update=dict(overrides or {})) if overrides else base


class PlanBook:
    """The plan assignments a process knows, kept current by :meth:`follow`.

    Until the bucket's entries have arrived (``loaded``), and for a tenant without an
    assignment, the default plan applies: the one ``plan._default`` names, else ``default``.
    """

    def __init__(self, default: str = DEFAULT_PLAN, records: Iterable[PlanRecord] = ()) -> None:
        self._default = PlanRecord(plan=default)
        self._by_tenant: dict[str, PlanRecord] = {}
        self.loaded = asyncio.Event()
        for record in records:
            self._by_tenant[record.tenant] = record

    @property
    def default(self) -> str:
        return self._default.plan

    def apply(self, key: str, value: bytes | None) -> None:
        """One KV entry: a record, or ``None`` for a deleted one."""
        if not key.startswith(PLAN_PREFIX):
            return
        if value is None:
            if key == DEFAULT_KEY:
                self._default = PlanRecord(plan=DEFAULT_PLAN)
            else:
                self._by_tenant.pop(key[len(PLAN_PREFIX) :], None)
            return
        try:
            record = PlanRecord.model_validate_json(value)
            check_plan(record.plan)
            check_overrides(record.overrides)
        except (ValidationError, InvalidArgument, ValueError) as exc:
            # Refusing more than the record meant is safer than granting more: the strictest preset applies.
            log.error("plan record %s is not valid (%s); the trial plan applies until it is fixed", key, exc)
            record = PlanRecord(tenant=key[len(PLAN_PREFIX) :], plan="trial")
        if key == DEFAULT_KEY:
            self._default = record
        else:
            self._by_tenant[key[len(PLAN_PREFIX) :]] = record

    def plan_of(self, tenant: str) -> TenantPlan:
        record = self._by_tenant.get(tenant)
        if record is None:
            default = self._default
            return TenantPlan(tenant, default.plan, limits_of(default.plan, default.overrides))
        return TenantPlan(tenant, record.plan, limits_of(record.plan, record.overrides), record.overrides, True, record)

    def tenants(self) -> list[str]:
        return sorted(self._by_tenant)

    async def follow(self, kv: KeyValue) -> None:
        """Applies every entry of ``kv``, then each change, until cancelled."""
        await follow_bucket(kv, self.apply, self.loaded, f"the {TENANTS_BUCKET} bucket")


def plan_key(tenant: str) -> str:
    return f"{PLAN_PREFIX}{tenant}"


# --- refusals --------------------------------------------------------------------------------


def amount(limit: str, value: int) -> str:
    """A usage or limit value as people read it: bytes in binary units, the rest as numbers."""
    if limit == "stored_bytes":
        size = float(value)
        for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
            if size < 1024 or unit == "TiB":
                return f"{value} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({value} bytes)"
            size /= 1024
    unit = UNITS.get(limit, "")
    return f"{value} {unit}" if unit == "s" else f"{value}{unit}"


def exhausted(plan: TenantPlan, limit: str, used: int, *, adding: int = 1, what: str = "") -> ResourceExhausted:
    """The refusal of ``adding`` more of ``limit`` to a tenant that uses ``used`` of it.

    The message reads ``datasets: 3 of 3 on plan trial; ...``: the limit, the usage, the limit's
    value and the plan, then what the request wanted and what to do.
    """
    maximum = getattr(plan.limits, limit)
    message = f"{amount(limit, used)} of {amount(limit, maximum)} on plan {plan.plan}"
    if what:
        message += f"; {what}"
    message += "; free some, or ask an operator for a larger plan (lepton plans set)"
    return ResourceExhausted(message, field=limit, limit=limit, used=used, maximum=maximum, plan=plan.plan)


def check_room(plan: TenantPlan, limit: str, used: int, *, adding: int = 1, what: str = "") -> None:
    """Refuses (:class:`ResourceExhausted`) when ``used + adding`` would pass the plan's ``limit``.

    Called where the thing is created, before anything of it is stored.
    """
    maximum = getattr(plan.limits, limit)
    if maximum and used + adding > maximum:
        raise exhausted(plan, limit, used, adding=adding, what=what)


def check_at_most(plan: TenantPlan, limit: str, asked: int, *, what: str) -> None:
    """Refuses a single request that asks for more than the plan's ``limit`` allows at once
    (the trials of one search)."""
    maximum = getattr(plan.limits, limit)
    if maximum and asked > maximum:
        raise ResourceExhausted(
            f"{what} asks for {asked}, more than the {maximum} of plan {plan.plan}; ask for fewer, or ask an "
            "operator for a larger plan (lepton plans set)",
            field=limit,
            limit=limit,
            used=asked,
            maximum=maximum,
            plan=plan.plan,
        )


def run_time_exceeded(plan: TenantPlan, ran_s: float) -> str:
    """The reason a job stopped for running past ``job_run_seconds``: what its record and event say."""
    maximum = plan.limits.job_run_seconds
    return (
        f"job_run_seconds: ran {ran_s:.0f} s of {maximum} s on plan {plan.plan}; the job was stopped "
        "(RESOURCE_EXHAUSTED). Train on fewer rows or epochs, or ask an operator for a larger plan"
    )


@dataclass(frozen=True)
class PredictionAllowance:
    """A tenant's two prediction limits, as the gateway enforces them (0: no limit).

    The gateway already keeps a token bucket per tenant (its ``RateLimits``); it takes the rate
    from :attr:`per_second` and refuses past :attr:`per_month` with :meth:`refusal`.
    """

    plan: str
    per_second: int
    per_month: int

    def refusal(self, used_this_month: int) -> ResourceExhausted | None:
        """The refusal of one more request when ``used_this_month`` were served; None when allowed."""
        if self.per_month and used_this_month >= self.per_month:
            return ResourceExhausted(
                f"{used_this_month} of {self.per_month} this month on plan {self.plan}; ask an operator for a "
                "larger plan (lepton plans set)",
                field="predictions_per_month",
                limit="predictions_per_month",
                used=used_this_month,
                maximum=self.per_month,
                plan=self.plan,
            )
        return None

    def rate_refusal(self) -> ResourceExhausted:
        """The refusal of a request past :attr:`per_second`."""
        return ResourceExhausted(
            f"more than {self.per_second} requests a second on plan {self.plan}; slow down, or ask an operator "
            "for a larger plan (lepton plans set)",
            field="predictions_per_second",
            limit="predictions_per_second",
            used=self.per_second,
            maximum=self.per_second,
            plan=self.plan,
        )


def prediction_allowance(book: PlanBook, tenant: str) -> PredictionAllowance:
    """What the gateway allows ``tenant``: its plan's ``predictions_per_second`` and ``predictions_per_month``."""
    plan = book.plan_of(tenant)
    return PredictionAllowance(plan.plan, plan.limits.predictions_per_second, plan.limits.predictions_per_month)


__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_PLAN",
    "LIMIT_NAMES",
    "PLANS",
    "TENANTS_BUCKET",
    "Limits",
    "PlanBook",
    "PlanRecord",
    "PredictionAllowance",
    "TenantPlan",
    "amount",
    "check_at_most",
    "check_overrides",
    "check_plan",
    "check_room",
    "exhausted",
    "limits_of",
    "plan_key",
    "prediction_allowance",
    "run_time_exceeded",
]
