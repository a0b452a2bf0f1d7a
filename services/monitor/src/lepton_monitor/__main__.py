"""``python -m lepton_monitor``: runs the monitor service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc

from lepton_core.bus import PREDICTIONS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, run_service
from lepton_monitor.api import MonitorServicer, PredictionLoggedHandler
from lepton_monitor.core import Monitor, StatsRecord
from lepton_monitor.settings import MonitorSettings


def main() -> None:
    settings = MonitorSettings()

    async def setup(rt: Runtime) -> Register:
        monitor = Monitor(await RecordStore.open(rt.js, "monitor", StatsRecord))
        rt.consume(PREDICTIONS_STREAM, "monitor", {events_pb2.PredictionLogged: PredictionLoggedHandler(monitor)})
        servicer = MonitorServicer(monitor)

        def register(server: grpc.aio.Server) -> Iterable[str]:
            monitor_pb2_grpc.add_MonitorServiceServicer_to_server(servicer, server)
            return [monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name]

        return register

    run_service("monitor", settings, setup)


if __name__ == "__main__":
    main()
