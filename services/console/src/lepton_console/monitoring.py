"""The monitoring pages: each deployment's traffic and latency, the drift of its inputs against its
training data (reference against live histograms), its alerts and drift incidents, its rules, and the
retraining the incidents asked for; a deployment's page follows its ``monitor.*`` events live.

Everything comes from the monitor through the SDK with the signed-in key (``client.monitor``), so a
page shows only the key's tenant; a deployment of another tenant is 404, as the platform answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from markupsafe import Markup

import lepton_ai as la
from lepton_console import i18n
from lepton_console.charts import curve_svg, number, paired_bars_svg, shares, traffic_svg
from lepton_console.replay import replayed
from lepton_console.responses import sign_in_first

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp
    from lepton.deployer.v1.deployer_pb2 import Deployment
    from lepton.monitor.v1.monitor_pb2 import (
        Alert,
        DriftReport,
        FeatureDrift,
        RuleStatus,
        ServingMetrics,
        ServingWindow,
        TritonStats,
    )

    from lepton_console.web import Console, Relayed

Translate = Callable[..., str]

#: The span the list's numbers and a page's current figures cover.
RECENT_S = 300.0
MINUTES = f"{RECENT_S / 60:g}"
#: Concurrent look-ups on the list page (two calls a deployment).
LOOKUPS = 8
#: How long a page waits for the replayed retraining requests its incidents name before it renders without.
REPLAY_S = 2.0
#: Incidents shown on a page (newest first).
ALERTS_SHOWN = 50
#: Every monitor event (``*`` would match one name part only, and the names have two after ``monitor``).
PATTERN = "monitor.>"
RETRAINING = "monitor.retraining.requested"
DRIFT_EVENTS = frozenset({"monitor.drift.detected", "monitor.drift.resolved"})
INCIDENT_EVENTS = frozenset({"monitor.alert.fired", "monitor.alert.resolved", *DRIFT_EVENTS})
#: How far back a live stream may be asked to start (the page's render time, so nothing falls between).
MAX_CATCH_UP_S = 3600.0
#: A range's dash, and what a page shows for a figure it does not have.
DASH = NONE = "\u2013"
SEVERITIES = frozenset({"info", "warning", "critical"})
VERDICTS = frozenset({"drift", "no_drift", "insufficient_data"})


def add_routes(console: Console) -> None:
    """Adds the monitoring pages' routes to ``console.app``."""
    pages = MonitoringPages(console)
    r = console.app.router
    r.add_get("/monitoring", pages.overview)
    r.add_get("/monitoring/{deployment}", pages.deployment)
    r.add_get("/monitoring/{deployment}/stream", pages.stream)


# -- formatting -------------------------------------------------------------


def when(ts: Timestamp) -> datetime | None:
    """A protobuf time as UTC, or None when it is unset."""
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


def shown_time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else ""


def iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else ""


def ms(value: float | None) -> str:
    return f"{value:.3g} ms" if value is not None else NONE


def optional(message: Any, name: str) -> float | None:
    """An ``optional`` protobuf field's value, or None when it is absent."""
    return float(getattr(message, name)) if message.HasField(name) else None


def concerns(event: la.PlatformEvent, deployment: str) -> bool:
    """Whether a monitor event is about ``deployment``: its subject names it (the monitor's events carry the
    deployment as ``ce-subject``), or its payload's lineage does."""
    lineage = getattr(event.data, "lineage", None)
    return event.subject == deployment or (lineage is not None and lineage.deployment == deployment)


# -- the list ---------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentRow:
    """One line of the monitoring list; the monitor's figures are None when it has none (yet)."""

    name: str
    model: str
    version: int
    requests: int | None
    p95: str
    firing: int | None
    drifted: list[str]


async def deployment_rows(client: la.Client, concurrency: int = LOOKUPS) -> list[DeploymentRow]:
    """The tenant's deployments, by name, each with its recent traffic, p95 latency and firing incidents."""
    found = await asyncio.to_thread(client.deployments.list)
    gate = asyncio.Semaphore(concurrency)

    async def row(d: Deployment) -> DeploymentRow:
        async with gate:
            try:
                metrics, firing = await asyncio.gather(
                    asyncio.to_thread(client.monitor.metrics, d.name, last_seconds=RECENT_S),
                    asyncio.to_thread(client.monitor.alerts, d.name, firing_only=True),
                )
            except (la.NotFound, la.FailedPrecondition):  # the monitor has not seen it (yet)
                return DeploymentRow(d.name, d.lineage.model_name, d.lineage.model_version, None, NONE, None, [])
        drifted = sorted({f for a in firing if a.kind == "drift" for f in a.drifted})
        version = metrics.serving_version or d.lineage.model_version
        w = metrics.window
        return DeploymentRow(
            d.name, d.lineage.model_name, version, w.requests, ms(optional(w, "latency_p95_ms")), len(firing), drifted
        )

    return sorted(await asyncio.gather(*(row(d) for d in found)), key=lambda r: r.name)


# -- serving metrics --------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A labelled number on a page."""

    label: str
    value: str


def window_figures(w: ServingWindow, t: Translate) -> list[Figure]:
    rate = optional(w, "error_rate")
    return [
        Figure(t("monitoring.requests"), str(w.requests)),
        Figure(t("monitoring.errors"), str(w.errors)),
        Figure(t("monitoring.error_rate"), f"{rate:.2%}" if rate is not None else NONE),
        Figure(t("monitoring.rows"), str(w.rows)),
        Figure("p50", ms(optional(w, "latency_p50_ms"))),
        Figure("p95", ms(optional(w, "latency_p95_ms"))),
        Figure("p99", ms(optional(w, "latency_p99_ms"))),
        Figure(t("monitoring.latency_mean"), ms(optional(w, "latency_mean_ms"))),
        Figure(t("monitoring.latency_max"), ms(optional(w, "latency_max_ms"))),
    ]


def triton_figures(triton: TritonStats, t: Translate) -> list[Figure]:
    """Triton's own cumulative counters; none when it was not asked or not reachable (its reason, which may
    name an internal address, is not shown)."""
    if not triton.reachable:
        return []
    return [
        Figure(t("monitoring.triton_inferences"), str(triton.inference_count)),
        Figure(t("monitoring.triton_successes"), str(triton.success_count)),
        Figure(t("monitoring.triton_failures"), str(triton.failure_count)),
        Figure(t("monitoring.triton_request"), ms(triton.success_mean_ms)),
        Figure(t("monitoring.triton_queue"), ms(triton.queue_mean_ms)),
        Figure(t("monitoring.triton_compute"), ms(triton.compute_infer_mean_ms)),
    ]


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M") if moment is not None else ""


def latency_chart(history: Sequence[ServingWindow], t: Translate) -> Markup | None:
    """p50, p95 and p99 per stored window, as lines (``svg#latency-chart``); None without latencies."""
    timed = [(when(w.start), w) for w in history if w.HasField("latency_p95_ms")]
    points = [(moment, w) for moment, w in timed if moment is not None]
    if not points:
        return None
    first = points[0][0]
    lines: dict[str, list[tuple[float, float]]] = {}
    for label, field in (("p50", "latency_p50_ms"), ("p95", "latency_p95_ms"), ("p99", "latency_p99_ms")):
        values = [((m - first).total_seconds(), optional(w, field)) for m, w in points]
        lines[label] = [(x, y) for x, y in values if y is not None]
    last = points[-1][1]
    desc = t(
        "monitoring.latency_desc",
        windows=len(points),
        p50=ms(optional(last, "latency_p50_ms")),
        p95=ms(optional(last, "latency_p95_ms")),
        p99=ms(optional(last, "latency_p99_ms")),
        peak=ms(max((y for _, y in lines["p99"]), default=None)),
    )
    labels = (_clock(first), _clock(when(last.end)))
    return curve_svg("latency-chart", lines, t("monitoring.latency_chart"), desc, labels, dots=True)


def traffic_chart(history: Sequence[ServingWindow], t: Translate) -> Markup | None:
    """Requests and errors per stored window, as bars (``svg#traffic-chart``); None without windows."""
    windows = [(when(w.start), w) for w in history]
    if not windows:
        return None
    bars = [(_clock(m), int(w.requests), int(w.errors)) for m, w in windows]
    busiest = max(bars, key=lambda b: b[1])
    desc = t(
        "monitoring.traffic_desc",
        windows=len(bars),
        requests=sum(b[1] for b in bars),
        errors=sum(b[2] for b in bars),
        busiest=busiest[1],
        at=busiest[0],
    )
    names = (t("monitoring.requests"), t("monitoring.errors"))
    labels = (_clock(windows[0][0]), _clock(when(windows[-1][1].end)))
    return traffic_svg("traffic-chart", bars, t("monitoring.traffic_chart"), desc, names, labels)


@dataclass(frozen=True)
class ServingView:
    version: int
    window_seconds: float
    figures: list[Figure]
    triton: list[Figure]
    latency: Markup | None
    traffic: Markup | None

    @classmethod
    def of(cls, metrics: ServingMetrics, t: Translate) -> ServingView:
        history = list(metrics.history)
        return cls(
            version=metrics.serving_version,
            window_seconds=metrics.window_seconds,
            figures=window_figures(metrics.window, t),
            triton=triton_figures(metrics.triton, t),
            latency=latency_chart(history, t),
            traffic=traffic_chart(history, t),
        )


# -- drift ------------------------------------------------------------------


def bin_labels(f: FeatureDrift) -> list[str]:
    """A name for each bin: its range for a numeric feature, its category for a categorical one."""
    if f.categories:
        return list(f.categories)
    edges = list(f.edges)
    return [f"{number(edges[i])}{DASH}{number(edges[i + 1])}" for i in range(len(edges) - 1)]


def drift_chart(chart_id: str, f: FeatureDrift, label: str, t: Translate) -> tuple[Markup | None, str]:
    """The feature's reference histogram against its live one (shares of each total), and the largest
    difference between them in words; no chart when the feature has no bins."""
    bins = bin_labels(f)
    reference, live = list(f.reference_counts), list(f.live_counts)
    if not bins or len(reference) != len(bins) or len(live) != len(bins):
        return None, t("monitoring.no_histogram")
    ref_shares, live_shares = shares(reference), shares(live)
    if sum(live):
        widest = max(range(len(bins)), key=lambda i: abs(live_shares[i] - ref_shares[i]))
        difference = t(
            "monitoring.largest_difference",
            bin=bins[widest],
            reference=f"{ref_shares[widest]:.1%}",
            live=f"{live_shares[widest]:.1%}",
        )
    else:
        difference = t("monitoring.no_live_values")
    desc = t("monitoring.drift_desc", bins=len(bins), reference=sum(reference), live=sum(live)) + " " + difference
    names = (t("monitoring.reference"), t("monitoring.live"))
    title = t("monitoring.drift_chart", feature=label)
    ends = (bins[0], bins[-1]) if f.categories else (number(f.edges[0]), number(f.edges[-1]))
    chart = paired_bars_svg(chart_id, bins, ref_shares, live_shares, title, desc, names, ends)
    return chart, difference


@dataclass(frozen=True)
class FeatureView:
    """One feature's drift (or the predictions', ``prediction`` true) as a page shows it."""

    name: str
    label: str
    verdict: str
    verdict_label: str
    reason: str
    figures: list[Figure]
    chart: Markup | None
    difference: str

    @property
    def drifted(self) -> bool:
        return self.verdict == "drift"

    @classmethod
    def of(cls, index: int, f: FeatureDrift, t: Translate, prediction: bool = False) -> FeatureView:
        label = t("monitoring.prediction") if prediction else f.name
        verdict = f.verdict if f.verdict in VERDICTS else "insufficient_data"
        figures = [
            Figure(t("monitoring.n_live"), str(f.n_live)),
            Figure(t("monitoring.n_reference"), str(f.n_reference)),
        ]
        for name, field in (("PSI", "psi"), ("KS", "ks_statistic"), ("KS p", "ks_pvalue")):
            value = optional(f, field)
            if value is not None:
                figures.append(Figure(name, number(value)))
        for name, field in (("χ²", "chi2"), ("χ² p", "chi2_pvalue")):
            value = optional(f, field)
            if value is not None:
                figures.append(Figure(name, number(value)))
        chart, difference = drift_chart(f"drift-chart-{index}", f, label, t)
        return cls(
            name="prediction" if prediction else f.name,
            label=label,
            verdict=verdict,
            verdict_label=t(f"monitoring.verdict.{verdict}"),
            reason=f.reason,
            figures=figures,
            chart=chart,
            difference=difference,
        )

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["figures"] = [[fig.label, fig.value] for fig in self.figures]
        body["chart"] = str(self.chart) if self.chart is not None else None
        return body


@dataclass(frozen=True)
class DriftView:
    features: list[FeatureView]
    drifted: list[str]
    start: str
    end: str
    reference: str

    @classmethod
    def of(cls, report: DriftReport, t: Translate) -> DriftView:
        features = [FeatureView.of(i, f, t) for i, f in enumerate(report.features)]
        if report.has_prediction:
            features.append(FeatureView.of(len(features), report.prediction, t, prediction=True))
        return cls(
            features=features,
            drifted=list(report.drifted),
            start=shown_time(when(report.start)),
            end=shown_time(when(report.end)),
            reference=report.reference_dataset_version_id,
        )


# -- incidents and retraining -------------------------------------------------


@dataclass(frozen=True)
class IncidentView:
    """An alert or drift incident, from ``ListAlerts`` or from the event that opened or closed it; the page
    renders it and its script builds the same item from :meth:`to_json` (text only)."""

    incident_id: str
    kind: str
    state: str
    state_label: str
    title: str
    severity: str
    severity_label: str
    facts: list[str]
    fired: str
    fired_iso: str
    retraining: str
    job_id: str

    @classmethod
    def of(cls, a: Alert, t: Translate) -> IncidentView:
        state = "firing" if a.state == "firing" else "resolved"
        facts = [_incident_fact(a.kind, a.metric, a.comparison, a.threshold, a.value, list(a.drifted), t)]
        resolved = when(a.resolved_at)
        if state == "resolved" and resolved is not None:
            facts.append(t("monitoring.resolved_at", when=shown_time(resolved)))
        fired = when(a.fired_at)
        return cls(
            incident_id=a.incident_id,
            kind=a.kind,
            state=state,
            state_label=t(f"monitoring.state.{state}"),
            title=_incident_title(a.kind, a.rule, t),
            severity=a.severity,
            severity_label=_severity(a.severity, t),
            facts=facts,
            fired=shown_time(fired),
            fired_iso=iso(fired),
            retraining=_retraining(a.retraining, t),
            job_id=a.retraining_job_id if a.retraining == "requested" else "",
        )

    @classmethod
    def of_event(cls, event: la.PlatformEvent, t: Translate) -> IncidentView:
        """The incident an ``alert.fired``/``alert.resolved``/``drift.detected``/``drift.resolved`` event is about."""
        d: Any = event.data
        kind = "drift" if event.name in DRIFT_EVENTS else "alert"
        state = "resolved" if event.name.endswith(".resolved") else "firing"
        if kind == "drift":
            drifted = [
                *getattr(d, "features", ()),
                *(["prediction"] if getattr(d, "prediction_drifted", False) else []),
            ]
            facts = [_incident_fact(kind, "", "", 0.0, 0.0, drifted, t)] if drifted else []
            fired = when(d.detected_at)
            severity = ""
        else:
            comparison = getattr(d, "comparison", "")
            facts = [_incident_fact(kind, d.metric, comparison, d.threshold, d.value, [], t)]
            fired = when(d.fired_at)
            severity = d.severity
        if state == "resolved":
            facts.append(t("monitoring.resolved_at", when=shown_time(when(d.resolved_at) or event.time)))
        fired = fired or event.time
        return cls(
            incident_id=d.incident_id,
            kind=kind,
            state=state,
            state_label=t(f"monitoring.state.{state}"),
            title=_incident_title(kind, getattr(d, "rule", ""), t),
            severity=severity,
            severity_label=_severity(severity, t),
            facts=facts,
            fired=shown_time(fired),
            fired_iso=iso(fired),
            retraining="",
            job_id="",
        )


def _incident_title(kind: str, rule: str, t: Translate) -> str:
    return t("monitoring.drift_title") if kind == "drift" else t("monitoring.alert_title", rule=rule)


def _incident_fact(
    kind: str, metric: str, comparison: str, threshold: float, value: float, drifted: list[str], t: Translate
) -> str:
    if kind == "drift":
        return t("monitoring.drifted_features", features=", ".join(drifted) or NONE)
    return t(
        "monitoring.alert_fact",
        metric=metric,
        value=number(value),
        comparison=comparison or "",
        threshold=number(threshold),
    )


def _severity(severity: str, t: Translate) -> str:
    return t(f"monitoring.severity.{severity}") if severity in SEVERITIES else severity


def _retraining(decision: str, t: Translate) -> str:
    if decision == "requested":
        return t("monitoring.retraining_requested")
    if decision.startswith("skipped"):
        return t("monitoring.retraining_skipped", why=decision.partition(":")[2].strip() or decision)
    return ""


@dataclass(frozen=True)
class RetrainingView:
    """A retraining an incident asked for: from its ``monitor.retraining.requested`` event, or (when the
    replay did not reach it in time) from what the incident records."""

    incident_id: str
    job_id: str
    reason: str
    detail: str
    dataset_version_id: str
    algorithm: str
    requested: str
    requested_iso: str

    @classmethod
    def of_event(cls, event: la.PlatformEvent) -> RetrainingView:
        d: Any = event.data
        return cls(
            incident_id=d.incident_id,
            job_id=d.job_id,
            reason=d.reason,
            detail=d.detail,
            dataset_version_id=d.dataset_version_id,
            algorithm=d.algorithm,
            requested=shown_time(event.time),
            requested_iso=iso(event.time),
        )

    @classmethod
    def of_alert(cls, a: Alert) -> RetrainingView:
        fired = when(a.fired_at)
        reason = "drift" if a.kind == "drift" else f"alert:{a.rule}"
        return cls(a.incident_id, a.retraining_job_id, reason, "", "", "", shown_time(fired), iso(fired))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def retrainings(
    client: la.Client, deployment: str, alerts: Sequence[Alert], timeout: float = REPLAY_S
) -> list[RetrainingView]:
    """The retraining each of ``alerts`` requested, newest first: their events, replayed from the oldest
    such incident on, until each is found or ``timeout`` passes (then what the incident records)."""
    wanted = {a.incident_id: a for a in alerts if a.retraining == "requested"}
    if not wanted:
        return []
    oldest = min((when(a.fired_at) for a in wanted.values()), key=lambda m: m or datetime.now(UTC))
    since = (oldest or datetime.now(UTC)) - timedelta(seconds=1)
    found: dict[str, RetrainingView] = {}
    try:
        async with aclosing(replayed(client, RETRAINING, since, timeout)) as events:
            async for event in events:
                incident = getattr(event.data, "incident_id", "")
                if incident in wanted and concerns(event, deployment):
                    found[incident] = RetrainingView.of_event(event)
                    if len(found) == len(wanted):
                        break
    except la.LeptonError:
        pass  # the incidents' own record, rather than a failed page
    for incident, a in wanted.items():
        found.setdefault(incident, RetrainingView.of_alert(a))
    return sorted(found.values(), key=lambda r: r.requested_iso, reverse=True)


@dataclass(frozen=True)
class RuleView:
    name: str
    condition: str
    window: str
    severity_label: str
    firing: bool
    state_label: str
    last_value: str

    @classmethod
    def of(cls, r: RuleStatus, t: Translate) -> RuleView:
        rule = r.rule
        last = optional(r, "last_value")
        state = "firing" if r.firing else "ok"
        return cls(
            name=rule.name,
            condition=f"{rule.metric} {rule.comparison} {number(rule.threshold)}",
            window=t("monitoring.seconds", seconds=f"{rule.window_seconds:g}"),
            severity_label=_severity(rule.severity, t),
            firing=r.firing,
            state_label=t(f"monitoring.state.{state}"),
            last_value=number(last) if last is not None else NONE,
        )


# -- a deployment's page -------------------------------------------------------


@dataclass(frozen=True)
class MonitorDetail:
    name: str
    model: str
    version: int
    serving: ServingView | None
    drift: DriftView | None
    #: Why there is no drift report (the monitor's reason), when there is none.
    drift_missing: str
    incidents: list[IncidentView]
    rules: list[RuleView]
    retrainings: list[RetrainingView]


async def _or_none(call: Callable[[], Any]) -> tuple[Any, str]:
    """``call()`` on a worker thread, or None and the platform's reason when the monitor has nothing yet."""
    try:
        return await asyncio.to_thread(call), ""
    except (la.NotFound, la.FailedPrecondition) as exc:
        return None, exc.message


async def monitor_detail(client: la.Client, name: str, t: Translate) -> MonitorDetail:
    """A deployment's monitoring: metrics with history, drift, incidents, rules and their retraining.

    Raises:
        lepton_ai.NotFound: no such deployment in the key's tenant (another tenant's included).
    """
    d = await asyncio.to_thread(client.deployments.get, name)
    (metrics, _), (report, drift_missing), (alerts, _), (rules, _) = await asyncio.gather(
        _or_none(lambda: client.monitor.metrics(name, last_seconds=RECENT_S, history=True, triton=True)),
        _or_none(lambda: client.monitor.drift(name)),
        _or_none(lambda: client.monitor.alerts(name, limit=ALERTS_SHOWN)),
        _or_none(lambda: client.monitor.rules(name)),
    )
    alerts = alerts or []
    return MonitorDetail(
        name=d.name,
        model=d.lineage.model_name,
        version=(metrics.serving_version if metrics is not None else 0) or d.lineage.model_version,
        serving=ServingView.of(metrics, t) if metrics is not None else None,
        drift=DriftView.of(report, t) if report is not None else None,
        drift_missing=drift_missing,
        incidents=[IncidentView.of(a, t) for a in alerts],
        rules=[RuleView.of(r, t) for r in rules or []],
        retrainings=await retrainings(client, name, alerts),
    )


def sse(body: dict[str, Any], event_id: str) -> bytes:
    return f"id: {event_id}\ndata: {json.dumps(body)}\n\n".encode()


async def live_update(client: la.Client, name: str, event: la.PlatformEvent, t: Translate) -> bytes | None:
    """The page's update for one monitor event about deployment ``name``: the incident (or the retraining)
    it announces, and the charts redrawn (drift after a drift event, traffic and latency after any)."""
    body: dict[str, Any] = {"id": event.id, "name": event.name}
    if event.name == RETRAINING:
        body["retraining"] = RetrainingView.of_event(event).to_json()
        return sse(body, event.id)
    if event.name not in INCIDENT_EVENTS:
        return None
    body["incident"] = asdict(IncidentView.of_event(event, t))
    metrics_call = _or_none(lambda: client.monitor.metrics(name, last_seconds=RECENT_S, history=True))
    if event.name in DRIFT_EVENTS:
        (metrics, _), (report, _) = await asyncio.gather(metrics_call, _or_none(lambda: client.monitor.drift(name)))
        if report is not None:
            drift = DriftView.of(report, t)
            body["drift"] = [f.to_json() for f in drift.features]
    else:
        metrics, _ = await metrics_call
    if metrics is not None:
        serving = ServingView.of(metrics, t)
        body["charts"] = {
            "latency": str(serving.latency) if serving.latency is not None else None,
            "traffic": str(serving.traffic) if serving.traffic is not None else None,
        }
    return sse(body, event.id)


def catch_up_from(value: str | None, now: float) -> datetime:
    """Where a page's stream starts: the time the page was drawn (``?since=``, epoch seconds), so no event
    falls between the page and its stream; at most an hour back, never ahead, a few seconds back without."""
    try:
        since = float(value) if value else now - 5.0
    except ValueError:
        since = now - 5.0
    if since != since:  # NaN
        since = now - 5.0
    return datetime.fromtimestamp(min(max(since, now - MAX_CATCH_UP_S), now), UTC)


class MonitoringPages:
    """The handlers, over the console's plumbing (sign-in, rendering, relaying a stream)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _t(self, request: web.Request) -> Translate:
        return i18n.translator(self.console._lang(request))

    async def overview(self, request: web.Request) -> web.Response:
        session = self.console._signed_in(request)
        rows = await deployment_rows(session.client)
        return self.console.render(
            request, "monitoring.html", session, section="monitoring", rows=rows, minutes=MINUTES
        )

    async def deployment(self, request: web.Request) -> web.Response:
        session = self.console._signed_in(request)
        drawn = time.time()
        detail = await monitor_detail(session.client, request.match_info["deployment"], self._t(request))
        return self.console.render(
            request, "monitor.html", session, section="monitoring", m=detail, since=f"{drawn:.3f}", minutes=MINUTES
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events for a deployment's page: each incident, retraining and redrawn chart, from the
        deployment's ``monitor.*`` events (from the time the page was drawn on)."""
        session = self.console._session(request)
        if session is None:
            return sign_in_first()
        client = session.client
        t = self._t(request)
        name = (await asyncio.to_thread(client.deployments.get, request.match_info["deployment"])).name
        since = catch_up_from(request.query.get("since"), time.time())

        async def relayed(event: la.PlatformEvent) -> Relayed:
            if not concerns(event, name):
                return None, False
            return await live_update(client, name, event, t), False

        stream = client.events.subscribe(PATTERN, since=since)
        return await self.console._relay(request, session, stream, relayed)
