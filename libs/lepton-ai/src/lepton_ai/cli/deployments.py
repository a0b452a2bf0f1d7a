"""``lepton deployments`` (and ``lepton deploy``), ``lepton predict``: models served by Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lepton_ai.cli.output import client, emit, fields_table

app = typer.Typer(help="Deployments on Triton: deploy, roll out, roll back, status.", no_args_is_help=True)


def _deployment_info(d: Any) -> dict[str, Any]:
    from lepton.deployer.v1 import deployer_pb2

    return {
        "name": d.name,
        "state": deployer_pb2.DeploymentState.Name(d.state).removeprefix("DEPLOYMENT_STATE_").lower(),
        "model_name": d.lineage.model_name,
        "version": d.lineage.model_version,
        "hosts": list(d.hosts),
        "follow": d.follow,
        "routes": [{"model": r.triton_model, "version": r.model_version, "weight": r.weight} for r in d.routes],
        "error": d.error,
        "last_rollout": (
            {"from": d.history[-1].from_version, "to": d.history[-1].to_version, "outcome": d.history[-1].outcome,
             "reason": d.history[-1].reason, "seconds": round(d.history[-1].seconds, 2)}
            if d.history else None
        ),
    }  # fmt: skip


def _deployment_table(info: dict[str, Any]) -> Table:
    return fields_table(f"deployment {info['name']}", info)


# Also `lepton deploy`, on the root app (lepton_ai.cli registers it).
@app.command("create")
def deployments_create(
    name: str,
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name.")],
    version: Annotated[int, typer.Option(help="Version (default: latest, or --alias's).")] = 0,
    alias: Annotated[str, typer.Option(help="Deploy the version this alias points at.")] = "",
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host", help="Triton host, by its name in the deployer's host pool (repeatable; default: 'default')."
        ),
    ] = None,
    canary: Annotated[str, typer.Option(help="Canary shares, e.g. 0.1,0.5 (default: all at once).")] = "",
    follow: Annotated[str | None, typer.Option(help="Roll out whatever this alias moves to (e.g. champion).")] = None,
    batch: Annotated[int, typer.Option(help="Triton max_batch_size.")] = 0,
    instances: Annotated[int, typer.Option(help="Model instances per host.")] = 0,
    gpu: Annotated[bool, typer.Option(help="Run the instances on GPU.")] = False,
) -> None:
    """Deploy a model version to a named deployment (or roll it out to another version)."""
    try:
        weights = [float(w) for w in canary.split(",")] if canary else []
    except ValueError:
        raise typer.BadParameter(f"expected shares like 0.1,0.5, got {canary!r}", param_hint="--canary") from None
    config: dict[str, Any] = {"max_batch_size": batch, "instance_count": instances}
    if gpu:
        config["instance_kind"] = "gpu"
    with client() as c:
        d = c.deployments.deploy(
            name, model, version, alias=alias, hosts=host, strategy="canary" if weights else "",
            canary_weights=weights, follow=follow, config=config,
        )  # fmt: skip
    info = _deployment_info(d)
    emit(info, _deployment_table(info))
    if (
        info["last_rollout"]
        and info["last_rollout"]["outcome"] == "rolled_back"
        and info["last_rollout"]["to"] == d.target_version
    ):
        raise typer.Exit(8)


@app.command("list")
def deployments_list() -> None:
    """Deployments and what they serve."""
    with client() as c:
        found = [_deployment_info(d) for d in c.deployments.list()]
    t = Table("deployment", "state", "model", "version", "hosts")
    for d in found:
        t.add_row(d["name"], d["state"], d["model_name"], str(d["version"]), ", ".join(d["hosts"]))
    emit(found, t)


@app.command("show")
def deployments_show(name: str) -> None:
    """One deployment, with Triton's statistics per host and version."""
    with client() as c:
        status = c.deployments.status(name)
    info = _deployment_info(status.deployment)
    info["statistics"] = [
        {"host": s.host, "version": s.triton_version, "ready": s.ready, "success": s.success_count,
         "failure": s.failure_count, "avg_request_us": round(s.avg_request_us, 1)}
        for s in status.statistics
    ]  # fmt: skip
    info["warnings"] = list(status.warnings)
    emit(info, _deployment_table(info))


@app.command("rollback")
def deployments_rollback(name: str) -> None:
    """Roll back to the version served before the last completed rollout."""
    with client() as c:
        info = _deployment_info(c.deployments.rollback(name))
    emit(info, _deployment_table(info))


@app.command("delete")
def deployments_delete(name: str) -> None:
    """Unload a deployment from every host and forget it."""
    with client() as c:
        c.deployments.delete(name)
    emit({"deleted": name}, f"deleted {name}")


# `lepton predict`: a command of the root app (lepton_ai.cli registers it).
def predict(
    deployment: str,
    rows: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet or JSON-lines file of rows.")],
    limit: Annotated[int, typer.Option(help="Only the first N rows (0: all).")] = 0,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a deployment that is still loading.")] = 120,
) -> None:
    """Predictions from a deployment for the rows of a file (one per line); extra columns are ignored."""
    import time

    import polars as pl

    readers: dict[str, Any] = {
        ".csv": pl.read_csv,
        ".parquet": pl.read_parquet,
        ".jsonl": pl.read_ndjson,
        ".json": pl.read_ndjson,
    }
    reader = readers.get(rows.suffix.lower())
    if reader is None:
        raise typer.BadParameter(f"expected one of {sorted(readers)}, got {rows.suffix!r}", param_hint="ROWS")
    frame = reader(rows)
    frame = frame.head(limit) if limit else frame
    with client() as c:
        deadline = time.monotonic() + wait
        found = c.deployments.get_or_none(deployment)
        while (found is None or not found.routes) and time.monotonic() < deadline:
            time.sleep(0.5)  # a model just trained is still being deployed
            found = c.deployments.get_or_none(deployment)
        out = c.deployments.predict(deployment, frame)
    emit([float(v) for v in out], "\n".join(f"{v:.6g}" for v in out))
