"""``python -m lepton_monitor``: runs the monitor service."""

from __future__ import annotations

import contextlib
import logging
from functools import partial

from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc

from lepton_core.bus import EVENTS_STREAM, PREDICTIONS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_core.tenant_deletion import Erased
from lepton_core.triton_access import STATISTICS, TritonCredential
from lepton_core.triton_pool import HostPool
from lepton_ml.signing import TrustedKeys, trusted_from_setting
from lepton_monitor.api import EventAnnouncer, MonitorServicer, PlatformEventsHandler, PredictionLoggedHandler
from lepton_monitor.core import Monitor, Options, Stores
from lepton_monitor.drift import DriftThresholds
from lepton_monitor.permissions import RULES
from lepton_monitor.prometheus import MetricsServer
from lepton_monitor.records import (
    AlertsRecord,
    DatasetIndex,
    DatasetVersionInfo,
    DeploymentInfo,
    JobInfo,
    PolicyRecord,
    RulesRecord,
    RuleStatesRecord,
    StatsRecord,
    VersionInfo,
)
from lepton_monitor.reference import ReferenceRecord
from lepton_monitor.settings import MonitorSettings
from lepton_monitor.streams import StreamLogs, read_labels
from lepton_monitor.triton import TritonSnapshot, triton_statistics

log = logging.getLogger("lepton_monitor")

BUCKET = "monitor"


def options(settings: MonitorSettings, artifact_keys: TrustedKeys) -> Options:
    return Options(
        artifact_keys=artifact_keys,
        window_s=settings.window_s,
        retention_windows=settings.retention_windows,
        max_samples=settings.max_samples,
        drift_rows_per_window=settings.drift_rows_per_window,
        drift_window_s=settings.drift_window_s,
        thresholds=DriftThresholds(
            psi=settings.drift_psi,
            ks_alpha=settings.drift_ks_alpha,
            ks_min_statistic=settings.drift_ks_min_statistic,
            chi2_alpha=settings.drift_chi2_alpha,
            min_samples=settings.drift_min_samples,
            min_reference_samples=settings.drift_min_reference_samples,
        ),
        drift_for_evaluations=settings.drift_for_evaluations,
        drift_cooldown_s=settings.drift_cooldown_s,
        reference_max_rows=settings.reference_max_rows,
        log_scan_limit=settings.log_scan_limit,
        alert_history=settings.alert_history,
    )


def main() -> None:
    settings = MonitorSettings()
    # Read at start-up: without the artifact public key no artifact could be verified, so none is loaded.
    artifact_keys = trusted_from_setting(settings.artifact_public_key_file, "LEPTON_MONITOR_ARTIFACT_PUBLIC_KEY_FILE")
    statistics = None
    if settings.triton_statistics_secret_file:  # read at start-up: a bad file stops the monitor at once
        statistics = TritonCredential.from_file(STATISTICS, settings.triton_statistics_secret_file)

    async def setup(rt: Runtime) -> Register:
        js = rt.js
        stores = Stores(
            stats=await RecordStore.open(js, BUCKET, StatsRecord),
            deployments=await RecordStore.open(js, BUCKET, DeploymentInfo),
            versions=await RecordStore.open(js, BUCKET, VersionInfo),
            jobs=await RecordStore.open(js, BUCKET, JobInfo),
            dataset_versions=await RecordStore.open(js, BUCKET, DatasetVersionInfo),
            datasets=await RecordStore.open(js, BUCKET, DatasetIndex),
            references=await RecordStore.open(js, BUCKET, ReferenceRecord),
            rules=await RecordStore.open(js, BUCKET, RulesRecord),
            states=await RecordStore.open(js, BUCKET, RuleStatesRecord),
            policies=await RecordStore.open(js, BUCKET, PolicyRecord),
            alerts=await RecordStore.open(js, BUCKET, AlertsRecord),
        )
        monitor = Monitor(
            stores,
            rt.objects.get,
            EventAnnouncer(rt),
            StreamLogs(js),
            partial(_triton, pool=settings.pool(), timeout=settings.triton_timeout_s, credential=statistics),
            options(settings, artifact_keys),
        )
        # Recent logs and labels back into memory before anything is answered; the durable consumers
        # then carry on (a log both read back and delivered counts once: windows know their log ids).
        replayed = await monitor.replay()
        labels = 0
        async with contextlib.aclosing(read_labels(js, since=monitor.replay_start())) as found:
            async for tenant, deployment, batch, at in found:
                monitor.apply_labels(tenant, deployment, batch, at)
                labels += len(batch)
        log.info("read back %d prediction logs and %d labels", replayed, labels)

        logs = PredictionLoggedHandler(monitor)
        rt.consume(
            PREDICTIONS_STREAM,
            "monitor",
            {events_pb2.PredictionLogBatch: logs, events_pb2.PredictionLogged: logs},
        )
        platform = PlatformEventsHandler(monitor, StreamLogs(js))
        rt.consume(
            EVENTS_STREAM,
            "monitor-events",
            {
                events_pb2.DatasetVersionCreated: platform.dataset_version,
                events_pb2.TrainingCompleted: platform.training_completed,
                events_pb2.ModelVersionCreated: platform.version_created,
                events_pb2.DeploymentReady: platform.deployment_ready,
                events_pb2.DatasetDeleted: platform.dataset_deleted,
                events_pb2.ModelVersionDeleted: platform.version_deleted,
            },
        )
        rt.every("monitor-evaluation", settings.evaluation_interval_s, monitor.tick)

        async def forget(tenant: str) -> Erased:
            monitor.forget_tenant(tenant)
            return Erased()

        rt.on_tenant_deleted(forget)
        if settings.metrics_port:
            metrics = MetricsServer(settings.metrics_host, settings.metrics_port, monitor.metric_families)
            await metrics.start()  # fails start-up at once when the port is taken
            monitor.triton_snapshots = True
            # A job that serves until the service stops (and is cancelled with the other periodic jobs).
            rt.every("prometheus", 0.0, metrics.serve_forever)
        servicer = MonitorServicer(monitor)

        return grpc_service(
            monitor_pb2_grpc.add_MonitorServiceServicer_to_server,
            servicer,
            monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"],
        )

    run_service("monitor", settings, setup, RULES)


async def _triton(
    hosts: str, model: str, version: str, *, pool: HostPool, timeout: float, credential: TritonCredential | None
) -> TritonSnapshot:
    """Triton's statistics on ``hosts`` (pool names, comma-separated), shown by name, never by address."""
    names = [h.strip() for h in hosts.split(",") if h.strip()]
    addresses = {name: pool.address_of(name) for name in names}
    unknown = [name for name, address in addresses.items() if address is None]
    if unknown or not names:
        snapshot = TritonSnapshot(reachable=False, url=hosts, model=model, version=version)
        snapshot.error = f"hosts not in the monitor's host pool: {', '.join(unknown)}" if unknown else "no host known"
        return snapshot
    snapshot = await triton_statistics(
        ",".join(a for a in addresses.values() if a), model, version, timeout, credential
    )
    snapshot.url = hosts
    for name, address in addresses.items():
        if address and snapshot.error:
            snapshot.error = snapshot.error.replace(address, name)
    return snapshot


if __name__ == "__main__":
    main()
