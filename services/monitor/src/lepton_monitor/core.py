"""Per-deployment counts of logged predictions, kept in KV ``monitor``.

Each record remembers the ids of the logs it counted most recently, so a log
redelivered after its count was written is not counted twice.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from lepton_core.bus import RecordStore
from lepton_core.errors import Conflict

#: How many recent log ids a record keeps for redelivery de-duplication.
RECENT_IDS = 512


class StatsRecord(BaseModel):
    tenant: str
    deployment: str
    logged_requests: int = 0
    logged_rows: int = 0
    errors: int = 0
    requests_by_version: dict[int, int] = Field(default_factory=dict)
    recent_log_ids: list[str] = Field(default_factory=list)


class Monitor:
    def __init__(self, store: RecordStore[StatsRecord]) -> None:
        self._store = store

    async def record(
        self, tenant: str, deployment: str, log_id: str, version: int, rows: int, error: bool
    ) -> StatsRecord:
        """Counts one prediction log, exactly once per log id among recent ones."""
        key = f"{tenant}.{deployment}"
        for _ in range(50):
            current = await self._store.get(key)
            stats = current.value if current else StatsRecord(tenant=tenant, deployment=deployment)
            if log_id in stats.recent_log_ids:
                return stats
            by_version = dict(stats.requests_by_version)
            by_version[version] = by_version.get(version, 0) + 1
            updated = stats.model_copy(
                update={
                    "logged_requests": stats.logged_requests + 1,
                    "logged_rows": stats.logged_rows + rows,
                    "errors": stats.errors + int(error),
                    "requests_by_version": by_version,
                    "recent_log_ids": [*stats.recent_log_ids, log_id][-RECENT_IDS:],
                }
            )
            try:
                if current is None:
                    await self._store.create(key, updated)
                else:
                    await self._store.update(key, updated, current.revision)
                return updated
            except Conflict:
                await asyncio.sleep(0.01)
        raise Conflict(f"stats of {deployment} kept changing; will retry")

    async def get(self, tenant: str, deployment: str) -> StatsRecord:
        found = await self._store.get(f"{tenant}.{deployment}")
        return found.value if found else StatsRecord(tenant=tenant, deployment=deployment)
