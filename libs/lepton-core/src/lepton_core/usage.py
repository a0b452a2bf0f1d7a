"""Each tenant's usage, metered from the platform's own events by the registry's process.

The registry's process consumes the events that create and remove what a plan limits
(durable ``registry-usage`` on EVENTS, ``registry-predictions`` on PREDICTIONS) and keeps one
:class:`UsageRecord` a tenant in the ``usage`` KV bucket (``<tenant>``), written with
compare-and-set so several registry processes may share the durables:

- ``dataset.version.created`` adds the version's Parquet size under its dataset's name;
  ``dataset.deleted`` removes the name (and so its versions' bytes);
- ``training.queued`` / ``training.started`` / ``training.completed|failed|cancelled`` move a
  job from queued to running to gone (a trial's start marks its search running);
- any ``deployment.*`` event names a deployment that exists; ``deployment.deleted`` removes it;
- ``prediction.logged`` counts one request, ``prediction.batch.logged`` its logged and unlogged ones,
  in the calendar month (UTC) the event was sent.

Idempotent as JetStream's at-least-once delivery needs: datasets, jobs and deployments are
kept by their natural keys (a version id, a job id, a deployment name), and a prediction
event is counted only if its stream sequence is past the last one counted for the tenant.

The services enforce limits from their own records at the moment of the check
(:mod:`lepton_core.quotas`); this meter is what ``GetUsage`` shows, and follows them within
the time an event takes to arrive.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf.message import Message
from lepton.events.v1 import events_pb2 as ev
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from lepton_core.errors import Conflict
from lepton_core.events import Event, Handler
from lepton_core.quotas import LIMIT_NAMES, UNITS, TenantPlan

USAGE_BUCKET: Final = "usage"
EVENTS_DURABLE: Final = "registry-usage"
PREDICTIONS_DURABLE: Final = "registry-predictions"
FINISHED_KEPT: Final = 500
"""How many finished job ids a record remembers, so that a late redelivery does not count one again."""
MONTHS_KEPT: Final = 13
_TRIAL = re.compile(r"(?P<search>.+)_t\d+")
"""A trial's job id: its search's id and ``_t<n>`` (lepton_trainer.core.plan_search)."""

NOT_METERED: Final = frozenset({"job_run_seconds", "trials_per_search", "predictions_per_second"})
"""Limits on one thing at a time or on a rate: there is no running total to show."""


class UsageRecord(BaseModel):
    """What one tenant uses, as the meter counted it."""

    tenant: str
    #: Dataset name -> version id -> bytes of its Parquet file.
    datasets: dict[str, dict[str, int]] = {}
    #: Unfinished job id (a search's, never a trial's) -> "queued" or "running".
    jobs: dict[str, str] = {}
    #: The last :data:`FINISHED_KEPT` finished job ids, oldest first.
    finished: list[str] = []
    deployments: list[str] = []
    #: "YYYY-MM" -> prediction requests that month.
    predictions: dict[str, int] = {}
    #: The PREDICTIONS stream sequence of the last prediction event counted.
    predictions_seq: int = 0
    metered_at: datetime | None = None

    @property
    def stored_bytes(self) -> int:
        return sum(sum(versions.values()) for versions in self.datasets.values())

    @property
    def queued_jobs(self) -> int:
        return sum(1 for state in self.jobs.values() if state == "queued")

    def predictions_in(self, month: str) -> int:
        return self.predictions.get(month, 0)

    def used(self, limit: str, month: str) -> int:
        """What the tenant uses of ``limit`` (0 for the limits that are not metered)."""
        counts = {
            "stored_bytes": self.stored_bytes,
            "datasets": len(self.datasets),
            "concurrent_jobs": len(self.jobs),
            "queued_jobs": self.queued_jobs,
            "deployments": len(self.deployments),
            "predictions_per_month": self.predictions_in(month),
        }
        return counts.get(limit, 0)


def month_of(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m}"


def _time(event: Event[Any]) -> datetime:
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def _finish(record: UsageRecord, job_id: str) -> bool:
    if _TRIAL.fullmatch(job_id) or job_id in record.finished:
        return False
    record.jobs.pop(job_id, None)
    record.finished = [*record.finished, job_id][-FINISHED_KEPT:]
    return True


def _queue(record: UsageRecord, job_id: str) -> bool:
    if job_id in record.finished or job_id in record.jobs:
        return False
    record.jobs[job_id] = "queued"
    return True


def _start(record: UsageRecord, job_id: str) -> bool:
    trial = _TRIAL.fullmatch(job_id)
    job_id = trial["search"] if trial else job_id
    if job_id in record.finished or record.jobs.get(job_id) == "running":
        return False
    record.jobs[job_id] = "running"
    return True


def _deployed(record: UsageRecord, name: str) -> bool:
    if not name or name in record.deployments:
        return False
    record.deployments = sorted([*record.deployments, name])
    return True


def _undeployed(record: UsageRecord, name: str) -> bool:
    if name not in record.deployments:
        return False
    record.deployments = [d for d in record.deployments if d != name]
    return True


def _version(record: UsageRecord, data: ev.DatasetVersionCreated) -> bool:
    versions = record.datasets.setdefault(data.dataset_name, {})
    if versions.get(data.lineage.dataset_version_id) == data.object.size:
        return False
    versions[data.lineage.dataset_version_id] = data.object.size
    return True


def _predictions(record: UsageRecord, event: Event[Any], requests: int) -> bool:
    if event.sequence and event.sequence <= record.predictions_seq:
        return False
    month = month_of(_time(event))
    record.predictions[month] = record.predictions.get(month, 0) + requests
    record.predictions = dict(sorted(record.predictions.items())[-MONTHS_KEPT:])
    record.predictions_seq = max(record.predictions_seq, event.sequence)
    return True


_RULES: Mapping[type[Message], Callable[[UsageRecord, Event[Any]], bool]] = {
    ev.DatasetVersionCreated: lambda r, e: _version(r, e.data),
    ev.DatasetDeleted: lambda r, e: r.datasets.pop(e.data.dataset_name, None) is not None,
    ev.TrainingQueued: lambda r, e: _queue(r, e.data.lineage.training_job_id),
    ev.TrainingStarted: lambda r, e: _start(r, e.data.lineage.training_job_id),
    ev.TrainingCompleted: lambda r, e: _finish(r, e.data.lineage.training_job_id),
    ev.TrainingFailed: lambda r, e: _finish(r, e.data.lineage.training_job_id),
    ev.TrainingCancelled: lambda r, e: _finish(r, e.data.lineage.training_job_id),
    ev.DeploymentRolloutStarted: lambda r, e: _deployed(r, e.data.lineage.deployment),
    ev.DeploymentReady: lambda r, e: _deployed(r, e.data.lineage.deployment),
    ev.DeploymentFailed: lambda r, e: _deployed(r, e.data.lineage.deployment),
    ev.DeploymentRolledBack: lambda r, e: _deployed(r, e.data.lineage.deployment),
    ev.DeploymentDeleted: lambda r, e: _undeployed(r, e.data.lineage.deployment),
    ev.PredictionLogged: lambda r, e: _predictions(r, e, 1),
    ev.PredictionLogBatch: lambda r, e: _predictions(r, e, len(e.data.logs) + e.data.unlogged),
}
EVENT_TYPES: Final = tuple(t for t in _RULES if t not in (ev.PredictionLogged, ev.PredictionLogBatch))
"""What the meter reads from EVENTS."""
PREDICTION_TYPES: Final = (ev.PredictionLogged, ev.PredictionLogBatch)
"""What it reads from PREDICTIONS."""


def meter(record: UsageRecord, event: Event[Any]) -> bool:
    """Applies one event to ``record`` (in place); whether it changed anything."""
    rule = _RULES.get(type(event.data))
    return bool(rule and rule(record, event))


@dataclass(frozen=True)
class LimitUsage:
    """One line of a tenant's usage: a limit, what is used of it, and its value (0: none)."""

    limit: str
    used: int
    maximum: int
    metered: bool
    unit: str


def usage_of(plan: TenantPlan, record: UsageRecord, month: str) -> list[LimitUsage]:
    """Every limit of ``plan`` beside what ``record`` says the tenant uses of it this ``month``."""
    return [
        LimitUsage(
            limit=name,
            used=record.used(name, month),
            maximum=getattr(plan.limits, name),
            metered=name not in NOT_METERED,
            unit=UNITS.get(name, ""),
        )
        for name in LIMIT_NAMES
    ]


class UsageMeter:
    """The usage records in the ``usage`` bucket, and the event handler that keeps them."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        #: Tenants whose events are not metered: those being deleted (their record is erased last).
        self.skip: Callable[[str], bool] = lambda tenant: False

    @property
    def kv(self) -> KeyValue:
        return self._kv

    async def get(self, tenant: str) -> UsageRecord:
        """The tenant's record; an empty one when nothing was metered yet."""
        record, _ = await self._read(tenant)
        return record

    async def _read(self, tenant: str) -> tuple[UsageRecord, int]:
        try:
            entry = await self._kv.get(tenant)
        except KeyNotFoundError:
            return UsageRecord(tenant=tenant), 0
        if not entry.value:
            return UsageRecord(tenant=tenant), entry.revision or 0
        return UsageRecord.model_validate_json(entry.value), entry.revision or 0

    async def __call__(self, event: Event[Any]) -> None:
        """Applies one event to its tenant's record, with compare-and-set."""
        if self.skip(event.tenant):
            return
        for _ in range(50):
            record, revision = await self._read(event.tenant)
            if not meter(record, event):
                return
            record.metered_at = datetime.now(UTC)
            data = record.model_dump_json().encode()
            try:
                if revision:
                    await self._kv.update(event.tenant, data, last=revision)
                else:
                    await self._kv.create(event.tenant, data)
                return
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
        raise Conflict(f"the usage of tenant {event.tenant} kept changing; the event is retried")

    def handlers(self, types: tuple[type[Message], ...]) -> dict[type[Message], Handler]:
        return dict.fromkeys(types, self)


__all__ = [
    "EVENTS_DURABLE",
    "EVENT_TYPES",
    "PREDICTIONS_DURABLE",
    "PREDICTION_TYPES",
    "USAGE_BUCKET",
    "LimitUsage",
    "UsageMeter",
    "UsageRecord",
    "meter",
    "month_of",
    "usage_of",
]
