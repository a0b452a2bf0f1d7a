"""Every field checked at the edge (issue 15): over real gRPC and real NATS, against the monitor process.

A refused request is INVALID_ARGUMENT naming the field (never INTERNAL from a time, a KV key or a
subject that a bad value broke), quotes a long value cut short, and stores and emits nothing. Only the
monitor runs here: the deployment these tests know is announced by a ``deployment.ready`` event, as
the deployer announces one.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_platform.testing import StartService, expect_dead_lettered

from .monitor_stack import KEY, TENANT, until

pytestmark = pytest.mark.timeout(120)

m = monitor_pb2
DEPLOYMENT = "edge-" + uuid.uuid4().hex[:8]
BAD_NAMES = ["dep\n", "名字", "a b", "a.b", "a*", "a>", "a\x00", "Dep", "-dep", "x" * 65]
YEAR_2200 = 7_258_118_400


@pytest.fixture(scope="module")
def stack(service: StartService) -> dict[str, str]:
    """Overrides conftest's: the monitor alone is enough here."""
    return {
        "monitor": service("monitor", {KEY: TENANT}, window_s="1", retention_windows="600", evaluation_interval_s="0.3")
    }


async def known(nc: NATS, monitor: monitor_pb2_grpc.MonitorServiceStub) -> str:
    """The deployment the tests use, announced once and awaited."""
    await events.publish(
        nc.jetstream(),
        events_pb2.DeploymentReady(
            tenant=TENANT,
            lineage=common_pb2.Lineage(deployment=DEPLOYMENT, model_name="edge-model", model_version=1),
            triton_model=f"{TENANT}--{DEPLOYMENT}",
            triton_version="1",
            host="127.0.0.1:9",
        ),
        tenant=TENANT,
        event_id=f"deployment.ready:{TENANT}:{DEPLOYMENT}:1",
        source="/lepton/deployer",
        ce_subject=DEPLOYMENT,
    )

    async def ready() -> bool:
        try:
            await monitor.GetPredictionStats(m.GetPredictionStatsRequest(deployment=DEPLOYMENT))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    await until(ready, 30, f"the monitor to learn of {DEPLOYMENT}")
    return DEPLOYMENT


async def refused(call: Any, request: Any, field: str) -> str:
    """Calls, expects INVALID_ARGUMENT naming ``field``, returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, details)
    assert details.startswith(f"{field}: "), (request, details)
    return details


def at(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


async def test_log_query_timestamps_out_of_range_are_invalid_not_internal(
    monitor: monitor_pb2_grpc.MonitorServiceStub,
) -> None:
    for bad in (-1, -(10**11), YEAR_2200, 10**15, 2**62):
        for call, request_type in (
            (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest),
            (monitor.SummarizeLogs, m.SummarizeLogsRequest),
        ):
            await refused(call, request_type(start_time=at(bad)), "start_time")
            await refused(call, request_type(end_time=at(bad)), "end_time")
    await refused(monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(start_time=at(1, nanos=-5)), "start_time")
    await refused(monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(end_time=at(1, nanos=10**9)), "end_time")
    # In range, the query runs (and finds nothing of this tenant's that far back).
    page = await monitor.QueryPredictionLogs(m.QueryPredictionLogsRequest(start_time=at(0), end_time=at(86_400)))
    assert list(page.logs) == []


async def test_a_deployment_name_with_a_trailing_newline_is_refused(
    monitor: monitor_pb2_grpc.MonitorServiceStub,
) -> None:
    for bad in BAD_NAMES:
        for call, request, field in [
            (monitor.GetPredictionStats, m.GetPredictionStatsRequest(deployment=bad), "deployment"),
            (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=bad), "deployment"),
            (monitor.GetDriftReport, m.GetDriftReportRequest(deployment=bad), "deployment"),
            (monitor.GetLivePerformance, m.GetLivePerformanceRequest(deployment=bad), "deployment"),
            (
                monitor.SendLabels,
                m.SendLabelsRequest(deployment=bad, labels=[m.Label(request_id="r", value=1.0)]),
                "deployment",
            ),
            (monitor.ListRules, m.ListRulesRequest(deployment=bad), "deployment"),
            (monitor.ListAlerts, m.ListAlertsRequest(deployment=bad), "deployment"),
            (monitor.GetRetrainingPolicy, m.GetRetrainingPolicyRequest(deployment=bad), "deployment"),
            (
                monitor.SetRetrainingPolicy,
                m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment=bad)),
                "policy.deployment",
            ),
            (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(deployment=bad), "deployment"),
            (monitor.SummarizeLogs, m.SummarizeLogsRequest(deployment=bad), "deployment"),
        ]:
            await refused(call, request, field)


async def test_a_well_formed_unknown_deployment_is_still_not_found(
    monitor: monitor_pb2_grpc.MonitorServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await monitor.GetServingMetrics(m.GetServingMetricsRequest(deployment="nobody-" + uuid.uuid4().hex[:8]))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_negative_versions_are_refused(monitor: monitor_pb2_grpc.MonitorServiceStub) -> None:
    for version in (-1, -(2**40), 2**40):
        for call, request in [
            (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment="nobody", version=version)),
            (monitor.GetDriftReport, m.GetDriftReportRequest(deployment="nobody", version=version)),
            (monitor.GetLivePerformance, m.GetLivePerformanceRequest(deployment="nobody", version=version)),
            (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(version=version)),
            (monitor.SummarizeLogs, m.SummarizeLogsRequest(version=version)),
        ]:
            await refused(call, request, "version")


async def test_durations_out_of_range_are_refused(monitor: monitor_pb2_grpc.MonitorServiceStub) -> None:
    for bad in (float("nan"), float("inf"), -1.0, 1e300, 10 * 366 * 86_400.0):
        await refused(
            monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment="nobody", last_seconds=bad), "last_seconds"
        )
        await refused(
            monitor.GetDriftReport, m.GetDriftReportRequest(deployment="nobody", last_seconds=bad), "last_seconds"
        )
        await refused(
            monitor.SetRetrainingPolicy,
            m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment="nobody", min_interval_seconds=bad)),
            "policy.min_interval_seconds",
        )
        rule = m.Rule(name="r", metric="errors", comparison=">", cooldown_seconds=bad)
        await refused(
            monitor.SetRules, m.SetRulesRequest(deployment="nobody", rules=[rule]), "rules[0].cooldown_seconds"
        )
        rule = m.Rule(name="r", metric="errors", comparison=">", window_seconds=bad)
        await refused(monitor.SetRules, m.SetRulesRequest(deployment="nobody", rules=[rule]), "rules[0].window_seconds")


async def test_counts_and_list_lengths_are_capped(monitor: monitor_pb2_grpc.MonitorServiceStub) -> None:
    await refused(monitor.ListAlerts, m.ListAlertsRequest(limit=10**6), "limit")
    labels = [m.Label(request_id="r", value=1.0)] * 10_001
    await refused(monitor.SendLabels, m.SendLabelsRequest(deployment="nobody", labels=labels), "labels")
    rules = [m.Rule(name=f"r{i}", metric="errors", comparison=">") for i in range(101)]
    await refused(monitor.SetRules, m.SetRulesRequest(deployment="nobody", rules=rules), "rules")
    rule = m.Rule(name="r", metric="errors", comparison=">", for_evaluations=10**6)
    await refused(monitor.SetRules, m.SetRulesRequest(deployment="nobody", rules=[rule]), "rules[0].for_evaluations")
    features = [f"f{i}" for i in range(1001)]
    await refused(monitor.GetDriftReport, m.GetDriftReportRequest(deployment="nobody", features=features), "features")
    ranges = [m.FeatureRange(feature="f", min=0)] * 65
    await refused(monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(feature_ranges=ranges), "feature_ranges")
    await refused(monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(page_token="1" * 100), "page_token")
    await refused(monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(page_token="١٢"), "page_token")


async def test_a_10kb_value_is_cut_in_the_error(monitor: monitor_pb2_grpc.MonitorServiceStub) -> None:
    big = "x" * 10_240
    for call, request, field in [
        (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=big), "deployment"),
        (monitor.GetLivePerformance, m.GetLivePerformanceRequest(deployment="nobody", task=big), "task"),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(request_id=big), "request_id"),
        (
            monitor.QueryPredictionLogs,
            m.QueryPredictionLogsRequest(feature_ranges=[m.FeatureRange(feature=big, min=0)]),
            "feature_ranges[0].feature",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(deployment="nobody", rules=[m.Rule(name="r", metric=big, comparison=">")]),
            "rules[0].metric",
        ),
        (monitor.SetRules, m.SetRulesRequest(deployment="nobody", rules=[m.Rule(name=big)]), "rules[0].name"),
        (monitor.GetDriftReport, m.GetDriftReportRequest(deployment="nobody", features=[big]), "features[0]"),
    ]:
        details = await refused(call, request, field)
        assert len(details) < 400 and "characters" in details, details


async def test_refused_rules_and_policies_store_nothing(nc: NATS, monitor: monitor_pb2_grpc.MonitorServiceStub) -> None:
    deployment = await known(nc, monitor)
    good = m.Rule(name="slow", metric="errors", comparison=">", threshold=5)
    await monitor.SetRules(m.SetRulesRequest(deployment=deployment, rules=[good]))
    bad = m.Rule(name="slow\n", metric="errors", comparison=">")
    await refused(monitor.SetRules, m.SetRulesRequest(deployment=deployment, rules=[good, bad]), "rules[1].name")
    listed = await monitor.ListRules(m.ListRulesRequest(deployment=deployment))
    assert [s.rule.name for s in listed.rules] == ["slow"]
    policy = m.RetrainingPolicy(deployment=deployment, on_alert=True, alert_rules=["slow", "a.b"])
    await refused(monitor.SetRetrainingPolicy, m.SetRetrainingPolicyRequest(policy=policy), "policy.alert_rules[1]")
    stored = await monitor.GetRetrainingPolicy(m.GetRetrainingPolicyRequest(deployment=deployment))
    assert not stored.on_alert and list(stored.alert_rules) == []
    await refused(
        monitor.SendLabels,
        m.SendLabelsRequest(deployment=deployment, labels=[m.Label(request_id="r", value=float("inf"))]),
        "labels[0].value",
    )
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{TENANT}.monitor.labels.>", stream=EVENTS_STREAM, ordered_consumer=True
    )
    try:
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await sub.unsubscribe()


async def test_an_event_naming_a_bad_deployment_is_dead_lettered(
    nc: NATS, monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    js = nc.jetstream()
    sent = {}
    for lineage, field in [
        (common_pb2.Lineage(deployment="a.b", model_name="edge-model", model_version=1), "lineage.deployment"),
        (common_pb2.Lineage(deployment="edge-x", model_name="名字", model_version=1), "lineage.model_name"),
        (
            common_pb2.Lineage(deployment="edge-x", model_name="m", model_version=1, training_job_id="ev_1"),
            "lineage.training_job_id",
        ),
    ]:
        event_id = f"edge-ready:{uuid.uuid4().hex}"
        sent[event_id] = field
        await events.publish(
            js,
            events_pb2.DeploymentReady(tenant=TENANT, lineage=lineage, host="127.0.0.1:9"),
            tenant=TENANT,
            event_id=event_id,
            source="/lepton/deployer",
        )
    await expect_dead_lettered(js, "monitor-events", sent)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await monitor.GetPredictionStats(m.GetPredictionStatsRequest(deployment="edge-x"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
