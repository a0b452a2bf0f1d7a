"""What the monitor's core is given to reach the outside world.

The ports are small interfaces implemented at the edge (:mod:`lepton_monitor.api`, :mod:`lepton_monitor.streams`,
:mod:`lepton_monitor.triton`) and by in-memory fakes in the tests: events out (:class:`Announcer`), the
PREDICTIONS stream read back (:class:`LogSource`), the object store (:data:`ObjectReader`) and Triton
(:data:`TritonProbe`). :class:`Stores` holds the typed views of KV ``monitor``, and :func:`mutate` is the
compare-and-set every writer of them uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel

from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import Conflict
from lepton_core.store import Store
from lepton_monitor.live import LabelIn, LogEntry
from lepton_monitor.records import (
    AlertRecord,
    AlertsRecord,
    DatasetIndex,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    RetrainingRequest,
    RulesRecord,
    RuleStatesRecord,
    StatsRecord,
    VersionInfo,
)
from lepton_monitor.reference import ReferenceRecord
from lepton_monitor.triton import TritonSnapshot

#: Slack between a log's time and when the stream stored it, for time-range scans.
STREAM_SLACK_S = 60.0

R = TypeVar("R", bound=BaseModel)


class Announcer(Protocol):
    """Publishes what the monitor decides (implemented with events in :mod:`lepton_monitor.api`)."""

    async def incident(self, alert: AlertRecord, transition: Literal["fired", "resolved"]) -> None:
        """``monitor.alert.fired/resolved`` or ``monitor.drift.detected/resolved``, id from the incident."""

    async def retraining(self, request: RetrainingRequest) -> None:
        """``monitor.retraining.requested``, id from the incident."""

    async def labels(self, tenant: str, deployment: str, labels: Sequence[LabelIn], at: float) -> None:
        """``monitor.labels.received``: the labels, so a restarted monitor can read them back."""


class LogSource(Protocol):
    """Reads prediction logs back from the PREDICTIONS stream."""

    def scan(
        self, tenant: str, deployment: str | None, *, start_sequence: int | None, start_time: float | None
    ) -> AsyncGenerator[LogEntry, None]:
        """Logs in stream order from a sequence or a time (or the start); tenant ``*`` reads every tenant's."""


ObjectReader = Callable[[ObjectRefRecord], Awaitable[bytes]]
TritonProbe = Callable[[str, str, str], Awaitable[TritonSnapshot]]
Clock = Callable[[], float]


@dataclass
class Stores:
    """The typed views of KV ``monitor`` (one record type each; the keys never overlap)."""

    stats: Store[StatsRecord]
    deployments: Store[DeploymentInfo]
    versions: Store[VersionInfo]
    jobs: Store[JobInfo]
    dataset_versions: Store[DatasetVersionInfo]
    datasets: Store[DatasetIndex]
    references: Store[ReferenceRecord]
    rules: Store[RulesRecord]
    states: Store[RuleStatesRecord]
    policies: Store[PolicyRecord]
    alerts: Store[AlertsRecord]


async def mutate(store: Store[R], key: str, change: Callable[[R | None], R | None]) -> R | None:
    """Applies ``change`` to a record with compare-and-set, re-reading on a concurrent write.

    ``change`` gets the current value (None when absent) and returns the new one, or None to write nothing.
    """
    for attempt in range(50):
        current = await store.get(key)
        updated = change(current.value if current else None)
        if updated is None:
            return current.value if current else None
        try:
            if current is None:
                await store.create(key, updated)
            else:
                await store.update(key, updated, current.revision)
            return updated
        except Conflict:
            await asyncio.sleep(0.005 * (attempt + 1))
    raise Conflict(f"{key} kept changing; will retry")


__all__ = [
    "STREAM_SLACK_S",
    "Announcer",
    "Clock",
    "LogSource",
    "ObjectReader",
    "Stores",
    "TritonProbe",
    "mutate",
]
