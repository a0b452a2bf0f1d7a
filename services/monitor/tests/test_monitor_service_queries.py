"""The monitor as a process (see monitor_stack.py): labels and live performance, prediction log queries and
summaries, bad requests and other tenants, and batched logs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core.rpc import client_channel

from .monitor_stack import (
    DIABETES,
    FEATURES,
    OTHER_KEY,
    TENANT,
    TRACE_ID,
    deploy,
    send_batch,
    send_log,
    training_rows,
    until,
)

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------- labels


async def test_labels_give_live_rmse_per_window(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "labelled")
    rng = np.random.default_rng(4)
    index = rng.integers(0, DIABETES.height, 90)
    x = DIABETES.select(FEATURES).to_numpy()[index]
    truth = DIABETES["target"].to_numpy()[index]
    predicted = d.model.predict(x)
    for i in range(30):
        await send_log(nc, d.name, x[3 * i : 3 * i + 3], predicted[3 * i : 3 * i + 3], request_id=f"req-{i}")

    async def logged() -> bool:
        m = await monitor.GetServingMetrics(monitor_pb2.GetServingMetricsRequest(deployment=d.name, last_seconds=300))
        return m.window.requests == 30

    await until(logged, 20, "30 logged requests")
    labels = [monitor_pb2.Label(request_id=f"req-{k // 3}", row=k % 3, value=float(truth[k])) for k in range(90)]
    sent = await monitor.SendLabels(monitor_pb2.SendLabelsRequest(deployment=d.name, labels=labels))
    assert (sent.accepted, sent.matched) == (90, 90)
    again = await monitor.SendLabels(monitor_pb2.SendLabelsRequest(deployment=d.name, labels=labels[:10]))
    assert (again.accepted, again.matched) == (10, 10)  # the same labels again change nothing
    perf = await monitor.GetLivePerformance(monitor_pb2.GetLivePerformanceRequest(deployment=d.name))
    assert (perf.task, perf.metric, perf.overall.labelled) == ("regression", "rmse", 90)
    assert perf.overall.rmse == pytest.approx(float(np.sqrt(np.mean((predicted - truth) ** 2))), rel=1e-9)
    assert perf.overall.mae == pytest.approx(float(np.mean(np.abs(predicted - truth))), rel=1e-9)
    assert sum(w.labelled for w in perf.windows) == 90 and perf.trend in ("steady", "improving", "degrading", "unknown")
    # A label for a prediction the monitor does not hold is kept but matches nothing (yet).
    late = await monitor.SendLabels(
        monitor_pb2.SendLabelsRequest(deployment=d.name, labels=[monitor_pb2.Label(request_id="nope", value=1)])
    )
    assert (late.accepted, late.matched) == (1, 0)


# ---------------------------------------------------------------------------------------------- logs


async def test_log_queries_filter_page_and_summarize(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "queried")
    start = time.time()
    x = training_rows(60, seed=5)
    y = d.model.predict(x)
    latencies = [1000 * (k + 1) for k in range(12)]
    ids = []
    for k in range(12):
        rows = x[5 * k : 5 * k + 5]
        ids.append(await send_log(nc, d.name, rows, y[5 * k : 5 * k + 5], latency_us=latencies[k]))
    for _ in range(5):
        await send_log(nc, d.name, x[:2], None, error="prediction failed: boom", latency_us=200)
    for _ in range(2):
        await send_log(nc, d.name, x[:2], None, error="features must have shape [batch, 10]", latency_us=100)
    traced = await send_log(nc, d.name, x[:1], y[:1], trace_id=TRACE_ID, latency_us=50)

    def window(**kw: Any) -> monitor_pb2.QueryPredictionLogsRequest:
        begin = Timestamp()
        begin.FromNanoseconds(int((start - 1) * 1e9))
        return monitor_pb2.QueryPredictionLogsRequest(deployment=d.name, start_time=begin, **kw)

    async def everything() -> list[monitor_pb2.PredictionLog]:
        logs: list[monitor_pb2.PredictionLog] = []
        token = ""
        while True:
            page = await monitor.QueryPredictionLogs(window(page_size=4, page_token=token))
            assert len(page.logs) <= 4
            logs.extend(page.logs)
            token = page.next_page_token
            if not token:
                return logs

    every = await until(lambda: _when(everything(), lambda logs: len(logs) == 20), 20, "20 queryable logs")
    assert len({log.log_id for log in every}) == 20 and every[0].log_id == ids[0]
    assert every[0].feature_names == FEATURES and len(every[0].rows) == 5
    assert list(every[0].rows[2].values) == x[2].tolist() and list(every[0].outputs) == y[:5].tolist()
    errors = await monitor.QueryPredictionLogs(window(errors_only=True))
    assert len(errors.logs) == 7 and all(log.error for log in errors.logs)
    by_trace = await monitor.QueryPredictionLogs(window(trace_id=TRACE_ID))
    assert [log.log_id for log in by_trace.logs] == [traced]
    by_request = await monitor.QueryPredictionLogs(window(request_id=ids[3]))
    assert [log.log_id for log in by_request.logs] == [ids[3]]
    # Logs with a row whose bmi is at least the 90th percentile of the logged bmi values (each row checked).
    j = FEATURES.index("bmi")
    low = float(np.quantile(x[:, j], 0.9))
    expected = [ids[k] for k in range(12) if (x[5 * k : 5 * k + 5, j] >= low).any()]
    expected += [traced] if x[0, j] >= low else []
    expected_errors = 7 if (x[:2, j] >= low).any() else 0
    ranged = await monitor.QueryPredictionLogs(
        window(feature_ranges=[monitor_pb2.FeatureRange(feature="bmi", min=low)], page_size=100)
    )
    assert len(ranged.logs) == len(expected) + expected_errors
    assert [log.log_id for log in ranged.logs if not log.error] == expected

    summary = await monitor.SummarizeLogs(
        monitor_pb2.SummarizeLogsRequest(deployment=d.name, start_time=window().start_time, top=3)
    )
    assert (summary.logs, summary.errors, summary.rows) == (20, 7, 60 + 14 + 1)
    assert summary.error_rate == pytest.approx(7 / 20)
    assert [(e.error, e.count) for e in summary.top_errors] == [
        ("prediction failed: boom", 5),
        ("features must have shape [batch, 10]", 2),
    ]
    assert [log.log_id for log in summary.slowest] == [ids[11], ids[10], ids[9]]
    all_latencies = [v / 1000 for v in [*latencies, *[200] * 5, *[100] * 2, 50]]
    assert summary.latency_p95_ms == pytest.approx(float(np.percentile(all_latencies, 95)))
    assert dict(summary.logs_by_version) == {1: 20}

    # The serving metrics of the same logs, from the monitor's windows.
    metrics = await monitor.GetServingMetrics(
        monitor_pb2.GetServingMetricsRequest(deployment=d.name, last_seconds=300, history=True, triton=True)
    )
    assert (metrics.window.requests, metrics.window.errors, metrics.window.rows) == (20, 7, 75)
    assert metrics.window.latency_p50_ms == pytest.approx(float(np.percentile(all_latencies, 50)))
    assert metrics.window.latency_p99_ms == pytest.approx(float(np.percentile(all_latencies, 99)))
    assert sum(w.requests for w in metrics.history) == 20 and list(metrics.versions) == [1]
    # No Triton serves this deployment: the answer says so instead of failing.
    assert not metrics.triton.reachable and metrics.triton.error and metrics.triton.model == f"{TENANT}--{d.name}"


async def _when(found: Any, ok: Callable[[Any], bool]) -> Any:
    value = await found
    return value if ok(value) else None


# ---------------------------------------------------------------------------------------------- bad input


async def test_bad_requests_name_the_field_and_other_tenants_see_nothing(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "guarded")
    await send_log(nc, d.name, training_rows(2, seed=7), None, error="boom")
    m = monitor_pb2
    bad: list[tuple[Any, Any, str]] = [
        (monitor.GetDriftReport, m.GetDriftReportRequest(), "deployment: is required"),
        (monitor.GetDriftReport, m.GetDriftReportRequest(deployment="Not Valid"), "deployment: "),
        (monitor.GetDriftReport, m.GetDriftReportRequest(deployment=d.name, features=["nope"]), "features: "),
        (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name, last_seconds=-1), "last_seconds: "),
        (monitor.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name, version=-2), "version: "),
        (monitor.SendLabels, m.SendLabelsRequest(deployment=d.name), "labels: "),
        (
            monitor.SendLabels,
            m.SendLabelsRequest(deployment=d.name, labels=[m.Label(request_id="r", value=float("nan"))]),
            "labels[0].value: ",
        ),
        (
            monitor.SendLabels,
            m.SendLabelsRequest(deployment=d.name, labels=[m.Label(value=1.0)]),
            "labels[0].request_id: ",
        ),
        (monitor.GetLivePerformance, m.GetLivePerformanceRequest(deployment=d.name, task="ranking"), "task: "),
        (
            monitor.SetRules,
            m.SetRulesRequest(deployment=d.name, rules=[m.Rule(name="r", metric="nope", comparison=">")]),
            "rules[0].metric: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(deployment=d.name, rules=[m.Rule(name="r", metric="errors", comparison="=")]),
            "rules[0].comparison: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(
                deployment=d.name, rules=[m.Rule(name="r", metric="errors", comparison=">", severity="panic")]
            ),
            "rules[0].severity: ",
        ),
        (
            monitor.SetRules,
            m.SetRulesRequest(
                deployment=d.name,
                rules=[
                    m.Rule(name="r", metric="errors", comparison=">"),
                    m.Rule(name="r", metric="rows", comparison="<"),
                ],
            ),
            "rules[1].name: ",
        ),
        (monitor.SetRetrainingPolicy, m.SetRetrainingPolicyRequest(), "policy: is required"),
        (
            monitor.SetRetrainingPolicy,
            m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment=d.name, min_interval_seconds=-1)),
            "policy.min_interval_seconds: ",
        ),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(deployment=d.name, page_size=1000), "page_size: "),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(page_token="x"), "page_token: "),
        (monitor.QueryPredictionLogs, m.QueryPredictionLogsRequest(trace_id="xyz"), "trace_id: "),
        (
            monitor.QueryPredictionLogs,
            m.QueryPredictionLogsRequest(feature_ranges=[m.FeatureRange(feature="bmi", min=2, max=1)]),
            "feature_ranges[0].max: ",
        ),
        (monitor.SummarizeLogs, m.SummarizeLogsRequest(top=1000), "top: "),
        (monitor.ListAlerts, m.ListAlertsRequest(limit=-1), "limit: "),
    ]
    for call, request, message in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, err.value.details())
        assert (err.value.details() or "").startswith(message), (request, err.value.details())

    async with client_channel(stack["monitor"], OTHER_KEY) as ch:
        other = monitor_pb2_grpc.MonitorServiceStub(ch)
        for call, request in [
            (other.GetPredictionStats, m.GetPredictionStatsRequest(deployment=d.name)),
            (other.GetServingMetrics, m.GetServingMetricsRequest(deployment=d.name)),
            (other.GetDriftReport, m.GetDriftReportRequest(deployment=d.name)),
            (other.SendLabels, m.SendLabelsRequest(deployment=d.name, labels=[m.Label(request_id="r", value=1)])),
            (other.GetLivePerformance, m.GetLivePerformanceRequest(deployment=d.name)),
            (other.SetRules, m.SetRulesRequest(deployment=d.name)),
            (other.ListRules, m.ListRulesRequest(deployment=d.name)),
            (other.ListAlerts, m.ListAlertsRequest(deployment=d.name)),
            (other.SetRetrainingPolicy, m.SetRetrainingPolicyRequest(policy=m.RetrainingPolicy(deployment=d.name))),
            (other.GetRetrainingPolicy, m.GetRetrainingPolicyRequest(deployment=d.name)),
            (other.QueryPredictionLogs, m.QueryPredictionLogsRequest(deployment=d.name)),
            (other.SummarizeLogs, m.SummarizeLogsRequest(deployment=d.name)),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND, (request, err.value.details())
        # Without a deployment, another tenant's query reads its own logs only: none.
        assert list((await other.QueryPredictionLogs(m.QueryPredictionLogsRequest())).logs) == []
        assert list((await other.ListAlerts(m.ListAlertsRequest())).alerts) == []


async def test_batched_logs_count_once_and_page_through_batch_boundaries(
    nc: NATS, stack: dict[str, str], monitor: monitor_pb2_grpc.MonitorServiceStub
) -> None:
    d = await deploy(nc, stack, "batched")
    start = Timestamp()
    start.FromNanoseconds(time.time_ns() - 10**9)
    x = training_rows(45, seed=11)
    ids = []
    for b in range(3):  # three batches of five requests of three rows
        ids += await send_batch(
            nc, d.name, [x[15 * b + 3 * k : 15 * b + 3 * k + 3] for k in range(5)], d.model, unlogged=b
        )
    await send_batch(nc, d.name, [], d.model, unlogged=10)  # a rate-capped interval: nothing logged, 10 counted

    async def pages() -> list[monitor_pb2.PredictionLog]:
        logs: list[monitor_pb2.PredictionLog] = []
        token = ""
        while True:
            page = await monitor.QueryPredictionLogs(
                monitor_pb2.QueryPredictionLogsRequest(
                    deployment=d.name, start_time=start, page_size=4, page_token=token
                )
            )
            logs.extend(page.logs)
            token = page.next_page_token
            if not token:
                return logs

    every = await until(lambda: _when(pages(), lambda logs: len(logs) >= 15), 20, "15 queryable logs")
    # Pages of 4 cut batches of 5 in the middle: every log once, in order.
    assert [log.log_id for log in every] == ids
    assert list(every[7].rows[1].values) == x[22].tolist()
    assert list(every[7].outputs) == pytest.approx(d.model.predict(x[21:24]).tolist())
    stats = await until(
        lambda: _when(
            monitor.GetPredictionStats(monitor_pb2.GetPredictionStatsRequest(deployment=d.name)),
            lambda s: s.logged_requests >= 15,
        ),
        20,
        "15 counted logs",
    )
    assert (stats.logged_requests, stats.logged_rows) == (15, 45)
    # Requests served but not logged (sample rate, rate cap), each batch counted once: 0 + 1 + 2 + 10.
    await until(
        lambda: _when(
            monitor.GetPredictionStats(monitor_pb2.GetPredictionStatsRequest(deployment=d.name)),
            lambda s: s.unlogged_requests == 13,
        ),
        20,
        "13 unlogged requests",
    )
