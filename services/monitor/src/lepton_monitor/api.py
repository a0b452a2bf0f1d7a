"""gRPC and event adapters of the monitor service."""

from __future__ import annotations

import grpc
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc

from lepton_core import events
from lepton_core.errors import InvalidArgument
from lepton_core.rpc import current_tenant
from lepton_monitor.core import Monitor


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def GetPredictionStats(
        self, request: monitor_pb2.GetPredictionStatsRequest, context: grpc.aio.ServicerContext
    ) -> monitor_pb2.PredictionStats:
        if not request.deployment:
            raise InvalidArgument("a deployment name is required", field="deployment")
        s = await self._monitor.get(current_tenant(), request.deployment)
        return monitor_pb2.PredictionStats(
            deployment=s.deployment,
            logged_requests=s.logged_requests,
            logged_rows=s.logged_rows,
            errors=s.errors,
            requests_by_version=s.requests_by_version,
        )


class PredictionLoggedHandler:
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    async def __call__(self, event: events.Event[events_pb2.PredictionLogged]) -> None:
        log = event.data
        await self._monitor.record(
            log.tenant,
            log.lineage.deployment,
            log.log_id or event.id,
            log.lineage.model_version,
            log.batch_rows,
            bool(log.error),
        )
