"""What flows into the monitor: prediction logs (counted in memory and in KV) and the platform's events
(what each deployment serves, how it was trained, on which data)."""

from __future__ import annotations

import contextlib
import logging

from lepton_core.errors import FailedPrecondition
from lepton_monitor.live import LiveData, LogEntry
from lepton_monitor.lookups import Deployments, References
from lepton_monitor.ports import STREAM_SLACK_S, Clock, LogSource, Stores, mutate
from lepton_monitor.records import DatasetIndex, DatasetVersionInfo, DeploymentInfo, JobInfo, StatsRecord, VersionInfo

log = logging.getLogger(__name__)

#: How many recent message ids (a batch's, or a single log's) a stats record keeps for redelivery
#: de-duplication.
RECENT_IDS = 512


class Intake:
    """Records prediction logs and platform events; reads the recent logs back after a restart.

    Args:
        stores: KV views (stats, and what the platform's events tell).
        live: The in-memory logs.
        deployments: The known deployments.
        references: The model versions' drift references (built when a deployment becomes ready).
        logs: Reads prediction logs back from the stream.
        retention_s: How far back the in-memory windows reach.
        clock: Seconds since the epoch.
    """

    def __init__(
        self,
        stores: Stores,
        live: LiveData,
        deployments: Deployments,
        references: References,
        logs: LogSource,
        retention_s: float,
        clock: Clock,
    ) -> None:
        self._stores = stores
        self._live = live
        self._deployments = deployments
        self._references = references
        self._logs = logs
        self._retention_s = retention_s
        self._clock = clock

    async def record_log(self, entry: LogEntry, *, persist: bool = True) -> bool:
        """Counts one prediction log in memory (and, with ``persist``, in the KV stats), once per log id.

        Returns:
            Whether the in-memory windows counted it (False: seen before, or older than the retention).
        """
        return await self.record_logs([entry], message_id=entry.log_id, persist=persist) == 1

    async def record_logs(
        self,
        entries: list[LogEntry],
        *,
        message_id: str,
        persist: bool = True,
        unlogged: int = 0,
        tenant: str = "",
        deployment: str = "",
    ) -> int:
        """Counts the logs of one stream message: in memory, and with ``persist`` in the KV stats.

        The KV stats take the whole message in one compare-and-set per deployment, once per
        ``message_id`` (a redelivered message is not counted twice); the in-memory windows count each log
        once per log id. ``unlogged`` requests (served, not logged: sample rate, rate cap) of ``tenant``'s
        ``deployment`` are counted in its stats too.

        Returns:
            How many logs the in-memory windows counted.
        """
        if persist:
            groups: dict[tuple[str, str], list[LogEntry]] = {}
            if unlogged and tenant and deployment:
                groups[(tenant, deployment)] = []
            for entry in entries:
                groups.setdefault((entry.tenant, entry.deployment), []).append(entry)
            for (t, d), group in groups.items():
                extra = unlogged if (t, d) == (tenant, deployment) else 0
                await self._count(t, d, group, message_id, extra)
        return sum(self._live.add(entry) for entry in entries)

    async def _count(
        self, tenant: str, deployment: str, entries: list[LogEntry], message_id: str, unlogged: int
    ) -> None:
        def change(stats: StatsRecord | None) -> StatsRecord | None:
            stats = stats or StatsRecord(tenant=tenant, deployment=deployment)
            if message_id in stats.recent_log_ids:
                return None
            by_version = dict(stats.requests_by_version)
            for entry in entries:
                by_version[entry.version] = by_version.get(entry.version, 0) + 1
            return stats.model_copy(
                update={
                    "logged_requests": stats.logged_requests + len(entries),
                    "logged_rows": stats.logged_rows + sum(e.batch_rows for e in entries),
                    "errors": stats.errors + sum(1 for e in entries if e.error),
                    "unlogged_requests": stats.unlogged_requests + unlogged,
                    "requests_by_version": by_version,
                    "recent_log_ids": [*stats.recent_log_ids, message_id][-RECENT_IDS:],
                }
            )

        await mutate(self._stores.stats, f"{tenant}.{deployment}", change)

    def replay_start(self) -> float:
        """The oldest time the windows keep: where reading back starts after a restart."""
        return self._clock() - self._retention_s

    async def replay(self, since: float | None = None) -> int:
        """Reads the logs of the retention span back from the stream into memory (at start-up).

        Returns:
            Logs counted.
        """
        start = self.replay_start() if since is None else since
        counted = 0
        async with contextlib.aclosing(
            self._logs.scan("*", None, start_sequence=None, start_time=start - STREAM_SLACK_S)
        ) as logs:
            async for entry in logs:
                counted += int(self._live.add(entry))
        return counted

    async def on_dataset_version(self, info: DatasetVersionInfo) -> None:
        """Records a dataset version and adds it to its dataset's list of versions."""
        await self._stores.dataset_versions.put(f"{info.tenant}.dsv.{info.version_id}", info)

        def change(index: DatasetIndex | None) -> DatasetIndex | None:
            index = index or DatasetIndex(
                tenant=info.tenant, dataset_id=info.dataset_id, dataset_name=info.dataset_name
            )
            if info.version_id in index.version_ids:
                return None
            return index.model_copy(update={"version_ids": [*index.version_ids, info.version_id]})

        await mutate(self._stores.datasets, f"{info.tenant}.ds.{info.dataset_id}", change)

    async def on_training_completed(self, job: JobInfo) -> None:
        """Records how a training job trained (what a retraining repeats)."""
        await self._stores.jobs.put(f"{job.tenant}.job.{job.job_id}", job)

    async def on_version_created(self, version: VersionInfo) -> None:
        """Records a model version (its features, artifact and training data)."""
        await self._stores.versions.put(f"{version.tenant}.mv.{version.model_name}.{version.version}", version)

    async def on_dataset_deleted(self, tenant: str, dataset_id: str, version_ids: list[str]) -> None:
        """Erases what the monitor keeps of a deleted dataset: its index and its versions' records."""
        key = f"{tenant}.ds.{dataset_id}"
        index = await self._stores.datasets.get(key)
        known = index.value.version_ids if index is not None else []
        for version_id in dict.fromkeys([*known, *version_ids]):
            await self._stores.dataset_versions.erase(f"{tenant}.dsv.{version_id}")
        await self._stores.datasets.erase(key)

    async def on_version_deleted(self, tenant: str, model: str, version: int, job_id: str) -> None:
        """Erases what the monitor keeps of a deleted model version: its record, its training job's, its reference."""
        await self._references.erase(tenant, model, version)
        await self._stores.versions.erase(f"{tenant}.mv.{model}.{version}")
        if job_id:
            await self._stores.jobs.erase(f"{tenant}.job.{job_id}")

    async def on_deployment_ready(self, ready: DeploymentInfo) -> DeploymentInfo:
        """Records what a deployment serves now (keeping its retraining history), then builds the reference.

        A ``deployment.ready`` older than the one recorded changes nothing: one delivered again late (its
        handler was cut by a restart, and newer ones were handled meanwhile) must not bring back a version
        the deployment no longer serves.
        """

        def change(info: DeploymentInfo | None) -> DeploymentInfo:
            if info is not None and ready.ready_at and ready.ready_at < info.ready_at:
                log.info(
                    "%s/%s: deployment.ready of v%d is older than v%d's: kept v%d",
                    ready.tenant,
                    ready.name,
                    ready.model_version,
                    info.model_version,
                    info.model_version,
                )
                return info
            history = (
                {}
                if info is None
                else info.model_dump(
                    include={
                        "last_retraining_at",
                        "last_retraining_incident",
                        "last_retraining_from_version",
                        "last_retraining_dataset_version_id",
                    }
                )
            )
            return ready.model_copy(update=history)

        stored = await self._deployments.change(ready.tenant, ready.name, change)
        assert stored is not None
        try:
            await self._references.get(stored.tenant, stored.model_name, stored.model_version)
        except FailedPrecondition as exc:
            log.warning("no drift reference yet for %s v%d: %s", stored.model_name, stored.model_version, exc)
        return stored


__all__ = ["Intake"]
