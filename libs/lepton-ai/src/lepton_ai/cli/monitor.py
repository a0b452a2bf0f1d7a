"""``lepton monitor``: serving metrics, drift, alerts and prediction logs of deployments."""

from __future__ import annotations

import itertools
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lepton_ai.cli.output import client, emit
from lepton_ai.cli.parsing import parse_since

app = typer.Typer(help="Serving metrics, drift, alerts.", no_args_is_help=True)


@app.command("metrics")
def monitor_metrics(
    deployment: str,
    last: Annotated[float, typer.Option(help="Seconds to cover (0: the current window).")] = 300,
) -> None:
    """Requests, errors and latency percentiles of a deployment."""
    from google.protobuf.json_format import MessageToDict

    with client() as c:
        found = c.monitor.metrics(deployment, last_seconds=last, triton=True)
    info = MessageToDict(found, preserving_proto_field_name=True)
    w = found.window
    text = (
        f"{deployment}: {w.requests} requests, {w.errors} errors, "
        f"p50 {w.latency_p50_ms:.2f} ms, p95 {w.latency_p95_ms:.2f} ms, p99 {w.latency_p99_ms:.2f} ms"
    )
    emit(info, text)


@app.command("drift")
def monitor_drift(
    deployment: str,
    png: Annotated[Path | None, typer.Option(help="Also write the report as a PNG here.")] = None,
) -> None:
    """Per-feature drift of a deployment's inputs and predictions against its training data."""
    with client() as c:
        report = c.monitor.drift(deployment, png=png is not None)
    if png is not None:
        png.write_bytes(report.png)
    t = Table("feature", "verdict", "psi", "ks", "live rows")
    rows = []
    for f in report.features:
        t.add_row(f.name, f.verdict, f"{f.psi:.3f}", f"{f.ks_statistic:.3f}", str(f.n_live))
        rows.append({"feature": f.name, "verdict": f.verdict, "psi": f.psi, "ks": f.ks_statistic, "n_live": f.n_live})
    emit({"drifted": list(report.drifted), "features": rows}, t)


@app.command("alerts")
def monitor_alerts(
    deployment: Annotated[str, typer.Argument(help="Deployment (default: all).")] = "",
    firing: Annotated[bool, typer.Option(help="Only those firing now.")] = False,
) -> None:
    """Alert and drift incidents, newest first."""
    with client() as c:
        found = c.monitor.alerts(deployment, firing_only=firing)
    t = Table("incident", "deployment", "kind", "rule", "state", "value")
    rows = []
    for a in found:
        t.add_row(a.incident_id, a.deployment, a.kind, a.rule, a.state, f"{a.value:.4g}")
        rows.append({"incident_id": a.incident_id, "deployment": a.deployment, "kind": a.kind, "state": a.state})
    emit(rows, t)


def _window(since: str) -> dict[str, Any]:
    """``start_time`` for a ``--since`` option (empty: no bound)."""
    if not since:
        return {}
    from google.protobuf.timestamp_pb2 import Timestamp

    start = Timestamp()
    start.FromDatetime(parse_since(since))
    return {"start_time": start}


@app.command("logs")
def monitor_logs(
    deployment: Annotated[str, typer.Argument(help="Deployment (default: all).")] = "",
    since: Annotated[str, typer.Option(help="How far back: 10m, 2h, 1d or an ISO time (default: all kept).")] = "",
    errors: Annotated[bool, typer.Option("--errors", help="Only failed requests.")] = False,
    request_id: Annotated[str, typer.Option(help="Only the request with this id.")] = "",
    trace_id: Annotated[str, typer.Option(help="Only requests of this trace (32 hex digits).")] = "",
    limit: Annotated[int, typer.Option(min=1, help="Most logs to print.")] = 20,
) -> None:
    """Prediction logs of a deployment, oldest first: time, latency, rows, error."""
    from google.protobuf.json_format import MessageToDict

    filters: dict[str, Any] = {"errors_only": errors, "request_id": request_id, "trace_id": trace_id}
    with client() as c:
        found = list(itertools.islice(c.monitor.logs(deployment, **filters, **_window(since)), limit))
    t = Table("time", "deployment", "version", "latency ms", "rows", "request", "error")
    for log in found:
        when = log.time.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")
        t.add_row(
            when, log.deployment, str(log.model_version), f"{log.latency_ms:.2f}", str(log.batch_rows),
            log.request_id, log.error,
        )  # fmt: skip
    emit([MessageToDict(log, preserving_proto_field_name=True) for log in found], t)


@app.command("summary")
def monitor_summary(
    deployment: Annotated[str, typer.Argument(help="Deployment (default: all).")] = "",
    since: Annotated[str, typer.Option(help="How far back: 10m, 2h, 1d or an ISO time (default: all kept).")] = "",
    top: Annotated[int, typer.Option(min=1, max=100, help="Top errors and slowest requests to show.")] = 5,
) -> None:
    """Counts, error rate, latency percentiles, the commonest errors and the slowest requests."""
    from google.protobuf.json_format import MessageToDict

    with client() as c:
        s = c.monitor.summary(deployment, top=top, **_window(since))
    text = (
        f"{deployment or 'all deployments'}: {s.logs} logged requests, {s.rows} rows, {s.errors} errors"
        + (f" ({s.error_rate:.1%})" if s.HasField("error_rate") else "")
        + (f", p50 {s.latency_p50_ms:.2f} ms, p99 {s.latency_p99_ms:.2f} ms" if s.HasField("latency_p50_ms") else "")
        + "".join(f"\n  {e.count} x {e.error}" for e in s.top_errors)
    )
    emit(MessageToDict(s, preserving_proto_field_name=True), text)
