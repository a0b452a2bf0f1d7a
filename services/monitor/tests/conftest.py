"""Fixtures of the monitor's service tests: the data service, the trainer and the monitor as processes.

The service tests import their helpers from ``monitor_stack.py`` beside this file, relatively (the
repository runs pytest with ``--import-mode=importlib``, which puts no test directory on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lepton.monitor.v1 import monitor_pb2_grpc

from lepton_core.rpc import client_channel
from lepton_platform.processes import free_port
from lepton_platform.testing import StartService

from .monitor_stack import KEY, OTHER, OTHER_KEY, TENANT


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(service: StartService, metrics_port: int) -> dict[str, str]:
    keys = {KEY: TENANT, OTHER_KEY: OTHER}
    data = service("data", keys)
    trainer = service("trainer", keys, data_url=data, job_ack_wait_s="5")
    monitor = service(
        "monitor",
        keys,
        window_s="1",
        retention_windows="600",
        drift_window_s="300",
        drift_for_evaluations="1",
        drift_cooldown_s="0",
        evaluation_interval_s="0.3",
        metrics_port=str(metrics_port),
    )
    return {"data": data, "trainer": trainer, "monitor": monitor}


@pytest.fixture
async def monitor(stack: dict[str, str]) -> AsyncIterator[monitor_pb2_grpc.MonitorServiceStub]:
    async with client_channel(stack["monitor"], KEY) as ch:
        yield monitor_pb2_grpc.MonitorServiceStub(ch)
