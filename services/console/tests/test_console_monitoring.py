"""The monitoring pages' units, with no platform: the charts, the view models drawn from the monitor's
messages and events, and the pages and stream served over an in-process stand-in for the SDK client
(the real platform's pages are tests/test_console_monitoring_e2e.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.common.v1 import common_pb2
from lepton.deployer.v1 import deployer_pb2
from lepton.events.v1 import events_pb2
from lepton.monitor.v1 import monitor_pb2

import lepton_ai as la
from lepton_console import i18n, i18n_monitoring, monitoring
from lepton_console.charts import paired_bars_svg, shares
from lepton_console.sessions import COOKIE, Sessions
from lepton_console.settings import ConsoleSettings
from lepton_console.web import Console

pytestmark = pytest.mark.timeout(30)

EN = i18n.translator("en")
ZH = i18n.translator("zh-CN")
T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
NAME = "prices"


def ts(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


def numeric(name: str = "bmi", live: tuple[int, ...] = (0, 10, 90)) -> monitor_pb2.FeatureDrift:
    f = monitor_pb2.FeatureDrift(name=name, kind="numeric", verdict="drift", n_live=sum(live), n_reference=100)
    f.edges.extend([0.0, 1.0, 2.0, 3.0])
    f.reference_counts.extend([30, 50, 20])
    f.live_counts.extend(live)
    f.psi, f.ks_statistic, f.ks_pvalue = 1.7, 0.6, 1e-9
    return f


def window(minute: int, requests: int, errors: int, p95: float | None) -> monitor_pb2.ServingWindow:
    w = monitor_pb2.ServingWindow(
        start=ts(T0 + timedelta(minutes=minute)), end=ts(T0 + timedelta(minutes=minute + 1)), requests=requests
    )
    w.errors = errors
    if p95 is not None:
        w.latency_p50_ms, w.latency_p95_ms, w.latency_p99_ms = p95 / 2, p95, p95 * 2
    return w


def event(name: str, data: Any, subject: str = NAME, event_id: str = "") -> la.PlatformEvent:
    return la.PlatformEvent(
        id=event_id or f"{name}:{subject}",
        type=f"ai.lepton.{name}.v1",
        name=name,
        source="/lepton/monitor",
        time=T0,
        subject=subject,
        trace_id="",
        tenant="default",
        data=data,
    )


def drift_detected(deployment: str = NAME, incident: str = "inc_1") -> la.PlatformEvent:
    data = events_pb2.DriftDetected(
        incident_id=incident,
        features=["bmi", "bp"],
        detected_at=ts(T0),
        lineage=common_pb2.Lineage(deployment=deployment),
    )
    return event("monitor.drift.detected", data, subject=deployment, event_id=f"drift:{incident}")


def retraining_requested(deployment: str = NAME, incident: str = "inc_1") -> la.PlatformEvent:
    data = events_pb2.RetrainingRequested(
        incident_id=incident,
        reason="drift",
        job_id=f"job_rt_{incident}",
        dataset_version_id="dv_2",
        lineage=common_pb2.Lineage(deployment=deployment),
    )
    return event("monitor.retraining.requested", data, subject=deployment, event_id=f"rt:{incident}")


# -- charts ------------------------------------------------------------------


def test_reference_and_live_are_paired_shares_and_the_largest_difference_is_said_in_words() -> None:
    view = monitoring.FeatureView.of(0, numeric(), EN)
    chart = str(view.chart)
    assert view.drifted and view.verdict_label == "Drifted"
    assert 'role="img"' in chart and 'id="drift-chart-0"' in chart and "bmi: reference against live" in chart
    assert len(re.findall(r'<rect class="ref"', chart)) == 3 == len(re.findall(r'<rect class="live"', chart))
    assert "Reference" in chart and "Live" in chart  # the legend names both, not colour alone
    # The live data sits in the last bin: 90% live against 20% reference is the largest difference.
    assert view.difference == "The largest difference is in 2\u20133: reference 20.0%, live 90.0%."
    assert view.difference in chart  # the description says it too
    assert {f.label for f in view.figures} >= {"PSI", "KS", "Live values", "Reference values"}


def test_shares_compare_samples_of_different_sizes() -> None:
    assert shares([1, 3]) == [0.25, 0.75] and shares([0, 0]) == [0.0, 0.0]
    chart = paired_bars_svg("c", ["a", "b"], shares([1, 3]), shares([100, 300]), "t", "d", ("R", "L"), ("a", "b"))
    heights = re.findall(r'class="(ref|live)" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', str(chart))
    assert [kind for kind, _ in heights] == ["ref", "live", "ref", "live"]
    assert heights[0][1] == heights[1][1] != heights[2][1] == heights[3][1]  # 1 of 4 and 100 of 400 look alike


def test_a_categorical_feature_is_binned_by_category_and_names_are_escaped() -> None:
    f = monitor_pb2.FeatureDrift(name="<b>city</b>", kind="categorical", verdict="no_drift", n_live=4, n_reference=4)
    f.categories.extend(["oslo", "<paris>"])
    f.reference_counts.extend([2, 2])
    f.live_counts.extend([1, 3])
    view = monitoring.FeatureView.of(1, f, ZH)
    chart = str(view.chart)
    assert "<b>" not in chart and "&lt;b&gt;city&lt;/b&gt;" in chart and "&lt;paris&gt;" in chart
    assert view.verdict_label == "未漂移" and not view.drifted
    assert "参考" in chart and "实时" in chart


def test_a_feature_without_live_values_says_so() -> None:
    view = monitoring.FeatureView.of(0, numeric(live=(0, 0, 0)), EN)
    assert view.difference == "No live values yet."
    empty = monitor_pb2.FeatureDrift(name="x", verdict="insufficient_data")
    assert monitoring.FeatureView.of(0, empty, EN).chart is None


def test_latency_lines_and_traffic_bars_over_the_windows() -> None:
    history = [window(0, 40, 0, 2.0), window(1, 100, 7, 4.0), window(2, 0, 0, None)]
    latency = str(monitoring.latency_chart(history, EN))
    assert 'id="latency-chart"' in latency and latency.count("<polyline") == 3
    assert latency.count('<circle class="dot') == 6 and latency.endswith("</svg>")  # a dot a window and line
    assert "p95 4 ms" in latency and "highest p99 was 8 ms" in latency and ">10:00<" in latency
    traffic = str(monitoring.traffic_chart(history, EN))
    assert 'id="traffic-chart"' in traffic and traffic.count('class="bar-error"') == 1  # one window failed some
    assert "140 requests and 7 errors" in traffic and "10:01: Requests 100, Errors 7" in traffic
    assert monitoring.latency_chart([window(0, 5, 0, None)], EN) is None
    assert monitoring.traffic_chart([], EN) is None


# -- incidents -------------------------------------------------------------------


def test_an_incident_from_the_monitor_says_its_state_not_by_colour_alone() -> None:
    alert = monitor_pb2.Alert(
        incident_id="inc_9",
        kind="alert",
        rule="slow",
        metric="latency_p95_ms",
        comparison=">",
        threshold=50,
        value=81.5,
        severity="critical",
        state="resolved",
        fired_at=ts(T0),
        resolved_at=ts(T0 + timedelta(minutes=3)),
        retraining="skipped: no newer dataset version",
    )
    view = monitoring.IncidentView.of(alert, EN)
    assert (view.state_label, view.title, view.severity_label) == ("Resolved", "Alert slow", "Critical")
    assert view.facts == ["latency_p95_ms was 81.5 (threshold > 50)", "resolved 2026-12-07 10:03:00"]
    assert view.retraining == "Retraining skipped: no newer dataset version" and view.job_id == ""
    drift = monitor_pb2.Alert(
        incident_id="inc_1", kind="drift", state="firing", drifted=["bmi"], retraining="requested",
        retraining_job_id="job_rt_1",
    )  # fmt: skip
    shown = monitoring.IncidentView.of(drift, ZH)
    assert (shown.state_label, shown.title, shown.job_id) == ("告警中", "检测到漂移", "job_rt_1")


def test_incidents_from_events_match_the_listed_ones() -> None:
    detected = monitoring.IncidentView.of_event(drift_detected(), EN)
    assert (detected.kind, detected.state, detected.facts) == ("drift", "firing", ["Drifted features: bmi, bp"])
    assert detected.fired_iso == "2026-12-07T10:00:00Z"
    fired = events_pb2.AlertFired(incident_id="i", rule="busy", metric="requests", comparison=">", threshold=1, value=5)
    view = monitoring.IncidentView.of_event(event("monitor.alert.fired", fired), EN)
    assert (view.title, view.facts) == ("Alert busy", ["requests was 5 (threshold > 1)"])
    resolved = events_pb2.DriftResolved(incident_id="inc_1", resolved_at=ts(T0 + timedelta(seconds=30)))
    closed = monitoring.IncidentView.of_event(event("monitor.drift.resolved", resolved), EN)
    assert closed.state == "resolved" and closed.facts == ["resolved 2026-12-07 10:00:30"]


def test_an_event_concerns_a_deployment_by_subject_or_lineage() -> None:
    assert monitoring.concerns(drift_detected(), NAME)
    assert not monitoring.concerns(drift_detected("other"), NAME)
    by_lineage = event(
        "monitor.drift.detected", events_pb2.DriftDetected(lineage=common_pb2.Lineage(deployment=NAME)), ""
    )
    assert monitoring.concerns(by_lineage, NAME)


def test_every_state_verdict_and_severity_has_words_in_both_languages() -> None:
    keys = {f"monitoring.verdict.{v}" for v in monitoring.VERDICTS}
    keys |= {f"monitoring.state.{s}" for s in ("firing", "resolved", "ok")}
    keys |= {f"monitoring.severity.{s}" for s in monitoring.SEVERITIES}
    assert keys <= set(i18n_monitoring.EN) and keys <= set(i18n_monitoring.ZH)
    assert set(i18n_monitoring.EN) == set(i18n_monitoring.ZH)


def test_a_stream_catches_up_from_the_page_s_time_within_an_hour() -> None:
    now = 1_000_000.0
    assert monitoring.catch_up_from("999990.5", now).timestamp() == 999990.5
    assert monitoring.catch_up_from("5", now).timestamp() == now - monitoring.MAX_CATCH_UP_S
    assert monitoring.catch_up_from("2000000", now).timestamp() == now
    for bad in ("nan", "soon", None, ""):
        assert monitoring.catch_up_from(bad, now).timestamp() == now - 5


# -- the pages, over a stand-in client ------------------------------------------


class Stream:
    """An event stream that yields ``events`` and ends (as the SDK's does when closed)."""

    def __init__(self, events: list[la.PlatformEvent]) -> None:
        self.events = list(events)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> la.PlatformEvent:
        if not self.events:
            raise StopAsyncIteration
        return self.events.pop(0)

    def close(self) -> None:
        self.events = []

    async def aclose(self) -> None:
        self.close()


class Monitor:
    def __init__(self, alerts: list[monitor_pb2.Alert]) -> None:
        self._alerts = alerts

    def metrics(self, deployment: str, **kw: Any) -> monitor_pb2.ServingMetrics:
        m = monitor_pb2.ServingMetrics(deployment=deployment, serving_version=3, window_seconds=60)
        m.window.CopyFrom(window(1, 140, 7, 4.0))
        m.history.extend([window(0, 40, 0, 2.0), window(1, 100, 7, 4.0)])
        if kw.get("triton"):
            m.triton.CopyFrom(monitor_pb2.TritonStats(reachable=True, inference_count=140, url="http://10.0.0.9:8000"))
        return m

    def drift(self, deployment: str, **kw: Any) -> monitor_pb2.DriftReport:
        report = monitor_pb2.DriftReport(deployment=deployment, drifted=["bmi"], reference_dataset_version_id="dv_1")
        report.features.extend([numeric(), numeric("age", live=(30, 50, 20))])
        return report

    def alerts(self, deployment: str = "", *, firing_only: bool = False, limit: int = 0) -> list[monitor_pb2.Alert]:
        return [a for a in self._alerts if a.state == "firing" or not firing_only]

    def rules(self, deployment: str) -> list[monitor_pb2.RuleStatus]:
        rule = monitor_pb2.Rule(name="slow", metric="latency_p95_ms", comparison=">", threshold=50, window_seconds=300)
        return [monitor_pb2.RuleStatus(rule=rule, firing=False)]


class Deployments:
    def __init__(self, names: list[str]) -> None:
        self.names = names

    def list(self) -> list[deployer_pb2.Deployment]:
        return [self.get(n) for n in self.names]

    def get(self, name: str) -> deployer_pb2.Deployment:
        if name not in self.names:
            raise la.NotFound(f"deployment {name!r} not found")
        return deployer_pb2.Deployment(name=name, lineage=common_pb2.Lineage(model_name="diabetes", model_version=3))


class Events:
    def __init__(self, events: list[la.PlatformEvent]) -> None:
        self.events = events
        self.patterns: list[str] = []

    def subscribe(self, pattern: str = "", *, since: Any = None, limit: Any = None) -> Stream:
        self.patterns.append(pattern)
        return Stream([e for e in self.events if pattern == monitoring.PATTERN or e.name == pattern])


class FakeClient:
    """What the pages use of ``lepton_ai.Client``, answering from fixed messages."""

    def __init__(self, alerts: list[monitor_pb2.Alert], events: list[la.PlatformEvent]) -> None:
        self.monitor = Monitor(alerts)
        self.deployments = Deployments([NAME, "silent"])
        self.events = Events(events)

    def close(self) -> None:
        pass


FIRING = monitor_pb2.Alert(
    incident_id="inc_1",
    deployment=NAME,
    kind="drift",
    state="firing",
    drifted=["bmi"],
    fired_at=ts(T0),
    retraining="requested",
    retraining_job_id="job_rt_inc_1",
)


@pytest.fixture
def fake() -> FakeClient:
    events = [retraining_requested("other", "inc_1"), retraining_requested(), drift_detected("other", "inc_7")]
    events.append(drift_detected(NAME, "inc_2"))
    return FakeClient([FIRING], events)


@pytest.fixture
async def browser(fake: FakeClient) -> AsyncIterator[TestClient[Any, Any]]:
    sessions = Sessions(idle_s=3600.0)
    principal = la.Principal(
        tenant="default", key_id="key_1", key_name="k", role="admin", permissions=(), grants=(), expires=None
    )
    session = sessions.create(fake, principal)  # type: ignore[arg-type]
    console = Console(ConsoleSettings(platform_url="127.0.0.1:1"), sessions, lambda key: fake)  # type: ignore[arg-type,return-value]
    async with TestClient(TestServer(console.app)) as client:
        client.session.cookie_jar.update_cookies({COOKIE: session.id})
        yield client


async def test_the_list_shows_each_deployment_s_traffic_and_firing_incidents(browser: TestClient[Any, Any]) -> None:
    page = await (await browser.get("/monitoring")).text()
    row = re.search(rf'<tr data-deployment="{NAME}">(.*?)</tr>', page, re.S)
    assert row is not None
    assert f'href="/monitoring/{NAME}"' in row[1] and ">140<" in row[1] and "4 ms" in row[1] and "bmi" in row[1]
    assert '<tr data-deployment="silent">' in page


async def test_a_deployment_s_page_has_its_charts_drift_incidents_rules_and_retraining(
    browser: TestClient[Any, Any], fake: FakeClient
) -> None:
    response = await browser.get(f"/monitoring/{NAME}")
    page = await response.text()
    assert response.status == 200
    for found in ('id="latency-chart"', 'id="traffic-chart"', 'id="drift-chart-0"', 'id="drift-chart-1"'):
        assert found in page, found
    assert 'data-feature="bmi" data-verdict="drift"' in page and "Drifted" in page
    assert 'data-incident="inc_1"' in page and 'href="/jobs/job_rt_inc_1"' in page
    assert 'data-rule="slow"' in page and "latency_p95_ms &gt; 50" in page
    assert "10.0.0.9" not in page  # Triton's address stays private
    assert '<script src="/static/monitoring.js" defer></script>' in page and "<script>" not in page
    assert re.search(rf'data-stream="/monitoring/{NAME}/stream\?since=[\d.]+"', page)
    # The retraining its incident requested, replayed from the events: this deployment's only.
    assert "dv_2" in page and fake.events.patterns == [monitoring.RETRAINING]
    assert (await browser.get("/monitoring/elsewhere")).status == 404


async def test_the_stream_relays_this_deployment_s_incidents_with_redrawn_charts(browser: TestClient[Any, Any]) -> None:
    response = await browser.get(f"/monitoring/{NAME}/stream?since=0")
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    messages = [json.loads(m) for m in re.findall(r"^data: (.*)$", await response.text(), re.M)]
    assert [m["id"] for m in messages] == ["rt:inc_1", "drift:inc_2"]  # not the other deployment's
    retraining, drift = messages
    assert retraining["retraining"]["job_id"] == "job_rt_inc_1"
    assert drift["incident"]["title"] == "Drift detected" and drift["incident"]["state"] == "firing"
    assert [f["name"] for f in drift["drift"]] == ["bmi", "age"] and drift["drift"][0]["chart"].startswith("<svg")
    assert 'id="traffic-chart"' in drift["charts"]["traffic"]
    assert (await browser.get("/monitoring/elsewhere/stream")).status == 404


async def test_retraining_falls_back_to_the_incident_s_record_when_its_event_is_not_replayed() -> None:
    client = FakeClient([FIRING], [])
    found = await monitoring.retrainings(client, NAME, [FIRING], timeout=1.0)  # type: ignore[arg-type]
    assert [(r.incident_id, r.job_id, r.reason) for r in found] == [("inc_1", "job_rt_inc_1", "drift")]
    assert await monitoring.retrainings(client, NAME, [], timeout=1.0) == []  # type: ignore[arg-type]
