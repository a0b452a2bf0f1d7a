"""The ``lepton`` command line: the SDK's work from a shell.

Exit codes: 0 success, 1 an unexpected error, 2 bad usage, 3 invalid argument,
4 not found, 5 unauthenticated or permission denied, 6 platform unavailable,
7 conflict (an alias moved meanwhile), 8 not possible in the current state (e.g. cancelling
a finished job). ``lepton jobs watch`` exits 1 unless the job succeeded.
``--output json`` prints machine-readable results on stdout; messages go to stderr.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lepton_ai import _progress, errors
from lepton_ai.client import Client
from lepton_ai.datasets import Dataset, SplitSpec
from lepton_ai.events import PlatformEvent

app = typer.Typer(help="Lepton: data, training, registry, serving and monitoring from a shell.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: upload, inspect, validate, transform.", no_args_is_help=True)
app.add_typer(data_app, name="data")
jobs_app = typer.Typer(help="Training jobs: list, watch, cancel.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
models_app = typer.Typer(help="The model registry: list, show, promote.", no_args_is_help=True)
app.add_typer(models_app, name="models")

# Piped output is not cut to 80 columns: a table is as wide as its ids and names need.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 1000)
err = Console(stderr=True)

EXIT_CODES: dict[type[errors.LeptonError], int] = {
    errors.InvalidArgument: 3,
    errors.NotFound: 4,
    errors.Unauthenticated: 5,
    errors.PermissionDenied: 5,
    errors.Unavailable: 6,
    errors.Conflict: 7,
    errors.FailedPrecondition: 8,
}


class State:
    url: str | None = None
    api_key: str | None = None
    ca_file: Path | None = None
    output: str = "table"


state = State()


@app.callback()
def _options(
    url: Annotated[
        str | None,
        typer.Option(
            envvar="LEPTON_URL", help="Platform address: host:port of the data service, grpcs://host:port for TLS."
        ),
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LEPTON_API_KEY", help="Your API key.")] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="LEPTON_TLS_CA_FILE",
            exists=True,
            dir_okay=False,
            help="PEM CA the platform's TLS certificate must chain to (means TLS; default: system roots for grpcs://).",
        ),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    if output not in ("table", "json"):
        raise typer.BadParameter("use table or json", param_hint="--output")
    state.url, state.api_key, state.ca_file, state.output = url, api_key, ca_file, output


def client() -> Client:
    return Client(state.api_key, state.url, root_certificates=state.ca_file)


def _plain(value: Any) -> Any:
    if isinstance(value, Dataset):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def emit(value: Any, table: Any = None) -> None:
    """JSON on stdout with --output json, else the table (or text)."""
    if state.output == "json":
        sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")
    elif table is not None:
        out.print(table)


def version_table(d: Dataset) -> Table:
    t = Table(title=f"{d.name}  {d.version_id}", title_justify="left")
    t.add_column("column")
    t.add_column("type")
    for name, dtype in d.columns.items():
        t.add_row(name, dtype)
    t.caption = f"{d.row_count} rows · dataset {d.id} · origin {d.origin}" + (
        f" · parent {d.parent_version_id}" if d.parent_version_id else ""
    )
    return t


@data_app.command("upload")
def data_upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet, JSON lines or Arrow file.")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: from the file name).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, parquet, jsonl or arrow (default: from suffix).")
    ] = None,
    delimiter: Annotated[str, typer.Option(help="CSV delimiter (default: detected).")] = "",
    encoding: Annotated[str, typer.Option(help="CSV encoding (default: utf-8).")] = "",
    no_header: Annotated[bool, typer.Option("--no-header", help="The CSV has no header row.")] = False,
) -> None:
    """Upload a file as a new dataset version (with a progress bar)."""
    with client() as c:
        d = c.datasets.upload(
            path, name, format=fmt, delimiter=delimiter, encoding=encoding, has_header=False if no_header else None
        )
    if state.output == "table":
        err.print(f"{'same bytes as existing version' if d.deduplicated else 'stored new version'} {d.version_id}")
    emit(d, version_table(d))


@data_app.command("list")
def data_list(search: Annotated[str, typer.Option(help="Only names containing this.")] = "") -> None:
    """List datasets."""
    with client() as c:
        found = c.datasets.list(search)
    t = Table("dataset", "id", "versions", "latest version", "rules")
    for d in found:
        t.add_row(d.name, d.id, str(d.version_count), d.latest_version_id, str(len(d.rules)))
    emit(found, t)


@data_app.command("show")
def data_show(ref: Annotated[str, typer.Argument(help="Version id (dv_...), dataset name or id.")]) -> None:
    """Show a version: its columns, size and lineage."""
    with client() as c:
        d = c.datasets.get(ref)
    emit(d, version_table(d))


@data_app.command("versions")
def data_versions(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """List a dataset's versions, oldest first."""
    with client() as c:
        found = c.datasets.versions(name)
    t = Table("version", "origin", "parent", "rows", "columns")
    for d in found:
        t.add_row(d.version_id, d.origin, d.parent_version_id, str(d.row_count), str(len(d.columns)))
    emit(found, t)


def _json_file(path: Path, param_hint: str, expected: tuple[type, ...]) -> Any:
    """A JSON file's value; bad JSON, or JSON of another shape, is a usage error naming the file."""
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint=param_hint) from None
    if not isinstance(value, expected):
        names = " or ".join("an object" if t is dict else "a list" for t in expected)
        raise typer.BadParameter(f"{path} holds {type(value).__name__}, expected {names}", param_hint=param_hint)
    return value


@data_app.command("validate")
def data_validate(
    ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    rules: Annotated[
        Path | None, typer.Option(exists=True, help="JSON file of rules (default: the dataset's).")
    ] = None,
) -> None:
    """Check a version against validation rules; exit code 3 when a rule is broken."""
    with client() as c:
        report = c.datasets.get(ref).validate(_json_file(rules, "--rules", (list,)) if rules else None)
    t = Table("rule", "column", "rows", "problem", title=f"{report.rules_checked} rules checked", title_justify="left")
    for v in report.violations:
        t.add_row(v.kind, v.column, str(v.count), v.description)
    emit(report, t if report.violations else "[green]valid[/green]")
    if not report.valid:
        raise typer.Exit(3)


@data_app.command("profile")
def data_profile(ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")]) -> None:
    """Per-column statistics of a version."""
    with client() as c:
        prof = c.datasets.get(ref).profile()
    t = Table("column", "type", "count", "nulls", "distinct", "min", "mean", "max")
    for name, p in prof.items():
        stats = [f"{p[k]:.4g}" if k in p else "" for k in ("min", "mean", "max")]
        t.add_row(name, p["dtype"], str(p["count"]), str(p["nulls"]), str(p["distinct"]), *stats)
    emit(prof, t)


@data_app.command("apply")
def data_apply(
    ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    recipe: Annotated[Path, typer.Argument(exists=True, help='JSON file: {"steps": [...]}.')],
) -> None:
    """Apply a recipe; prints the new version."""
    with client() as c:
        d = c.datasets.get(ref).apply(_json_file(recipe, "RECIPE", (dict, list)))
    emit(d, version_table(d))


@data_app.command("split")
def data_split(
    ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    train: float = 0.8,
    validation: float = 0.0,
    test: float = 0.2,
    seed: int = 0,
    stratify: str = "",
) -> None:
    """Row counts of a deterministic train/validation/test split."""
    with client() as c:
        counts = c.datasets.get(ref).split(SplitSpec(train, validation, test, seed, stratify))
    emit(counts, f"train {counts.train} · validation {counts.validation} · test {counts.test}")


@data_app.command("delete")
def data_delete(name: Annotated[str, typer.Argument(help="Dataset name or id.")]) -> None:
    """Delete a dataset and all its versions."""
    with client() as c:
        n = c.datasets.delete(name)
    emit({"versions_deleted": n}, f"deleted {name} ({n} versions)")


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``KEY=VALUE`` options (repeatable) as a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out


@app.command("train")
def train(
    dataset: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    algorithm: Annotated[str, typer.Option("--algorithm", "-a", help="From `lepton jobs algorithms`.")],
    target: Annotated[str | None, typer.Option(help="Column to predict (default: target, label or y).")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Hyper-parameter name=value; repeat.")
    ] = None,
    name: Annotated[str, typer.Option(help="Registry name (default: <dataset>-<algorithm>).")] = "",
    seed: Annotated[int | None, typer.Option(help="Estimator seed.")] = None,
) -> None:
    """Train a model with a live progress bar; prints the registered version and its metrics."""
    from lepton_ai.models import Model

    estimator = type("CliModel", (Model,), {"algorithm": algorithm})(**_pairs(param, "--param"))
    with client() as c:
        estimator.fit(c.datasets.get(dataset), target, model_name=name, seed=seed)
    result = {
        "job_id": estimator.job_id,
        "model_name": estimator.model_name,
        "version": estimator.version,
        "metrics": estimator.metrics,
    }
    t = Table("metric", "value", title=f"{estimator.model_name} v{estimator.version}", title_justify="left")
    for k, v in sorted(estimator.metrics.items()):
        t.add_row(k, f"{v:.4f}")
    emit(result, t)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = "",
    limit: int = 20,
) -> None:
    """Recent training jobs, newest first."""
    from lepton_ai.registry import STATES, state_name

    if state and state not in STATES:
        raise typer.BadParameter(f"use one of {', '.join(STATES)}", param_hint="--state")
    with client() as c:
        found = c.jobs.list(state, limit)
    t = Table("job", "state", "algorithm", "model", "stage", "worker")
    for j in found:
        t.add_row(j.job_id, state_name(j.state), j.algorithm, j.model_name, j.stage, j.worker_id)
    emit([{"job_id": j.job_id, "state": state_name(j.state), "model_name": j.model_name} for j in found], t)


@jobs_app.command("watch")
def jobs_watch(job_id: str) -> None:
    """Follow a job until it ends."""
    from lepton_ai.registry import state_name

    with client() as c:
        last = None
        if state.output == "table" and sys.stderr.isatty():
            last = _progress.follow(c.jobs.watch(job_id), f"job {job_id}")  # a live bar, as `lepton train` draws
        else:
            for last in c.jobs.watch(job_id):
                if state.output == "table":
                    err.print(f"{state_name(last.state):<10} {last.progress:>4.0%}  {last.stage}")
    if last is not None:
        emit({"job_id": job_id, "state": state_name(last.state), "error": last.error}, None)
        if state_name(last.state) != "succeeded":
            raise typer.Exit(1)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    from lepton_ai.registry import state_name

    with client() as c:
        job = c.jobs.cancel(job_id)
    emit({"job_id": job_id, "state": state_name(job.state)}, f"{job_id}: {job.stage}")


@jobs_app.command("algorithms")
def jobs_algorithms() -> None:
    """The algorithms the trainer runs and their hyper-parameters."""
    with client() as c:
        found = c.jobs.algorithms()
    t = Table("algorithm", "task", "parameters")
    for a in found:
        t.add_row(a.name, a.task, ", ".join(f"{p.name}={p.default}" for p in a.params))
    emit([{"name": a.name, "task": a.task, "params": [p.name for p in a.params]} for a in found], t)


@models_app.command("list")
def models_list() -> None:
    """Registered models."""
    with client() as c:
        found = c.models.list()
    t = Table("model", "latest version")
    for m in found:
        t.add_row(m.name, str(m.latest_version))
    emit([{"name": m.name, "latest_version": m.latest_version} for m in found], t)


@models_app.command("show")
def models_show(
    name: str,
    version: Annotated[int, typer.Option(help="Version (default: latest).")] = 0,
    alias: Annotated[str, typer.Option(help="Or an alias, e.g. champion.")] = "",
) -> None:
    """A model version: lineage and metrics."""
    with client() as c:
        v = c.models.version(name, version, alias)
    lin = v.lineage
    info = {
        "model_name": v.model_name,
        "version": v.version,
        "algorithm": v.algorithm,
        "dataset_version_id": lin.dataset_version_id,
        "training_job_id": lin.training_job_id,
        "evaluation_id": lin.evaluation_id,
        "task": v.task,
        "status": v.status,
        "tags": dict(v.tags),
        "description": v.description,
        "plots": list(v.plots),
        "metrics": dict(v.metrics),
    }
    t = Table("field", "value", title=f"{v.model_name} v{v.version}", title_justify="left")
    for k, val in info.items():
        t.add_row(k, json.dumps(val) if isinstance(val, dict | list) else str(val))
    emit(info, t)


@models_app.command("lineage")
def models_lineage(
    name: str,
    version: Annotated[int, typer.Option(help="Version (default: latest).")] = 0,
    alias: Annotated[str, typer.Option(help="Or an alias, e.g. champion.")] = "",
) -> None:
    """Everything behind a version, as a tree: datasets and recipes, job, evaluation, deployments."""
    from google.protobuf.json_format import MessageToDict
    from rich.tree import Tree

    with client() as c:
        g = c.models.lineage(name, version, alias)
    root = Tree(f"[bold]{g.version.model_name} v{g.version.version}[/bold]  {g.version.algorithm}")
    branch = root
    for d in g.datasets:
        recipe = f"  recipe {d.recipe_digest[:19]}" if d.recipe_digest else ""
        branch = branch.add(f"dataset {d.dataset_name} {d.version_id} ({d.origin}, {d.row_count} rows){recipe}")
    if g.job.job_id:
        root.add(f"training job {g.job.job_id} {g.job.state} on {g.job.worker_id}  params {dict(g.job.params)}")
    for e in g.evaluations:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(e.metrics.items())[:4])
        on = f" on {e.dataset_version_id} ({e.rows})" if e.dataset_version_id else ""
        root.add(f"evaluation {e.evaluation_id}{on}: {shown}")
    for dep in g.deployments:
        root.add(f"deployment {dep.name} {dep.state} (Triton {dep.triton_model} v{dep.triton_version})")
    for w in g.warnings:
        root.add(f"[yellow]{w}[/yellow]")
    emit(MessageToDict(g, preserving_proto_field_name=True), root)


@models_app.command("promote")
def models_promote(
    name: str,
    version: int,
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    expected: Annotated[
        int | None, typer.Option(help="Only if the alias points at this version now (0: unset).")
    ] = None,
) -> None:
    """Point an alias (champion by default) at a version, atomically."""
    with client() as c:
        moved = c.models.set_alias(name, alias, version, expected)
    emit(
        {"model_name": name, "alias": alias, "version": moved.version, "previous_version": moved.previous_version},
        f"{name}@{alias}: v{moved.previous_version or '-'} -> v{moved.version}",
    )


@models_app.command("tag")
def models_tag(
    name: str,
    version: Annotated[int, typer.Option(help="Tag this version (default: the model itself).")] = 0,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE to set (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="Tag key to remove (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    status: Annotated[str, typer.Option(help="Version status: ready or archived.")] = "",
) -> None:
    """Set a model's or a version's tags, description or status."""
    tags = _pairs(tag, "--tag")
    with client() as c:
        if version:
            v = c.models.update_version(
                name, version, description=description, tags=tags, remove_tags=remove or [], status=status
            )
            info: dict[str, Any] = {"model_name": name, "version": v.version, "tags": dict(v.tags), "status": v.status}
        else:
            if status:
                raise typer.BadParameter("models have no status; give --version", param_hint="--status")
            m = c.models.update(name, description=description, tags=tags, remove_tags=remove or [])
            info = {"model_name": name, "description": m.description, "tags": dict(m.tags)}
    emit(info, " ".join(f"{k}={v}" for k, v in info["tags"].items()) or "(no tags)")


@models_app.command("search")
def models_search(
    name: Annotated[str, typer.Option(help="Model names containing this.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE that must match.")] = None,
    alias: Annotated[str, typer.Option(help="Only the version this alias points at.")] = "",
    dataset: Annotated[str, typer.Option(help="Trained on this dataset version.")] = "",
    metric: Annotated[str, typer.Option(help="Metric to bound with --min/--max.")] = "",
    min_value: Annotated[float | None, typer.Option("--min")] = None,
    max_value: Annotated[float | None, typer.Option("--max")] = None,
    status: Annotated[str, typer.Option(help="ready or archived (default both).")] = "",
) -> None:
    """Versions across models: by name, tag, alias, dataset and metric threshold."""
    with client() as c:
        found = list(
            c.models.search(
                name_contains=name,
                tags=_pairs(tag, "--tag"),
                alias=alias,
                dataset_version_id=dataset,
                metric=metric,
                min_value=min_value,
                max_value=max_value,
                status=status,
            )
        )
    t = Table("model", "version", "algorithm", "status", metric or "metrics")
    for v in found:
        shown = (
            f"{v.metrics[metric]:.4g}"
            if metric
            else ", ".join(f"{k} {x:.3g}" for k, x in sorted(v.metrics.items())[:3])
        )
        t.add_row(v.model_name, str(v.version), v.algorithm, v.status, shown)
    emit(
        [
            {"model_name": v.model_name, "version": v.version, "metrics": dict(v.metrics), "tags": dict(v.tags)}
            for v in found
        ],
        t,
    )


@models_app.command("evaluate")
def models_evaluate(
    name: str,
    version: Annotated[int, typer.Option(help="Version (default: latest).")] = 0,
    alias: Annotated[str, typer.Option(help="Or an alias, e.g. champion.")] = "",
    dataset: Annotated[str, typer.Option(help="Dataset version id (default: the training one).")] = "",
    rows: Annotated[str, typer.Option(help="holdout or all (default: holdout on the training data).")] = "",
    cv: Annotated[int, typer.Option(help="K-fold cross-validation folds (0: none).")] = 0,
    plots: Annotated[Path | None, typer.Option(help="Write the PNG plots into this directory.")] = None,
) -> None:
    """Evaluate a version now, on any dataset version, with optional cross-validation."""
    with client() as c:
        e = c.models.evaluate(name, version, alias=alias, dataset_version_id=dataset, rows=rows, cv_folds=cv)
        written = []
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            for plot in e.plots:
                path = plots / f"{plot}.png"
                path.write_bytes(c.models.plot(e.evaluation_id, plot))
                written.append(str(path))
    info = {
        "evaluation_id": e.evaluation_id,
        "dataset_version_id": e.lineage.dataset_version_id,
        "rows": e.rows,
        "test_rows": e.test_rows,
        "metrics": dict(e.metrics),
        "cross_validation": {
            k: [e.cross_validation.mean[k], e.cross_validation.std[k]] for k in e.cross_validation.mean
        },
        "plots": written or list(e.plots),
    }
    t = Table("metric", "value", title=f"{e.evaluation_id} ({e.rows}, {e.test_rows} rows)", title_justify="left")
    for k, val in sorted(e.metrics.items()):
        t.add_row(k, f"{val:.6g}")
    for k in sorted(e.cross_validation.mean):
        t.add_row(f"cv {k}", f"{e.cross_validation.mean[k]:.6g} ± {e.cross_validation.std[k]:.3g}")
    emit(info, t)


@models_app.command("export")
def models_export(
    name: str,
    out: Annotated[Path, typer.Option("--out", help="Where to write the zip.")],
    version: Annotated[int, typer.Option(help="Version (default: latest).")] = 0,
    alias: Annotated[str, typer.Option(help="Or an alias, e.g. champion.")] = "",
    dataset: Annotated[str, typer.Option(help="Check the conversion on this dataset version's rows.")] = "",
) -> None:
    """Export a version for edge devices: ONNX (preprocessing folded in), runner, Triton config."""
    with client() as c:
        sample = c.datasets.get(dataset).to_polars().head(500) if dataset else None
        data = c.models.export_edge(name, version, alias=alias, sample=sample)
    out.write_bytes(data)
    emit({"path": str(out), "bytes": len(data)}, f"wrote {out} ({len(data)} bytes)")


deploy_app = typer.Typer(help="Deployments on Triton: deploy, roll out, roll back, status.", no_args_is_help=True)
app.add_typer(deploy_app, name="deployments")


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
    t = Table("field", "value", title=f"deployment {info['name']}", title_justify="left")
    for k, val in info.items():
        t.add_row(k, json.dumps(val) if isinstance(val, dict | list) else str(val))
    return t


@app.command("deploy")
@deploy_app.command("create")
def deployments_create(
    name: str,
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name.")],
    version: Annotated[int, typer.Option(help="Version (default: latest, or --alias's).")] = 0,
    alias: Annotated[str, typer.Option(help="Deploy the version this alias points at.")] = "",
    host: Annotated[list[str] | None, typer.Option("--host", help="Triton gRPC address (repeatable).")] = None,
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


@deploy_app.command("list")
def deployments_list() -> None:
    """Deployments and what they serve."""
    with client() as c:
        found = [_deployment_info(d) for d in c.deployments.list()]
    t = Table("deployment", "state", "model", "version", "hosts")
    for d in found:
        t.add_row(d["name"], d["state"], d["model_name"], str(d["version"]), ", ".join(d["hosts"]))
    emit(found, t)


@deploy_app.command("show")
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


@deploy_app.command("rollback")
def deployments_rollback(name: str) -> None:
    """Roll back to the version served before the last completed rollout."""
    with client() as c:
        info = _deployment_info(c.deployments.rollback(name))
    emit(info, _deployment_table(info))


@deploy_app.command("delete")
def deployments_delete(name: str) -> None:
    """Unload a deployment from every host and forget it."""
    with client() as c:
        c.deployments.delete(name)
    emit({"deleted": name}, f"deleted {name}")


monitor_app = typer.Typer(help="Serving metrics, drift, alerts.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("metrics")
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


@monitor_app.command("drift")
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


@monitor_app.command("alerts")
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
    start.FromDatetime(_since(since))
    return {"start_time": start}


@monitor_app.command("logs")
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


@monitor_app.command("summary")
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


events_app = typer.Typer(
    help="Platform events (docs/events.md): follow what happens, live or from a point in time.",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(value: str) -> datetime:
    """``10m``, ``2h``, ``1d`` back from now, or an ISO 8601 time (local unless it has an offset)."""
    text = value.strip()
    if match := _DURATION.fullmatch(text):
        return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _SECONDS[match[2]])
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise typer.BadParameter(
            f"expected a duration (30s, 10m, 2h, 1d) or an ISO time (2025-01-31T09:00:00Z), got {value!r}",
            param_hint="--since",
        ) from None


def _event_line(ev: PlatformEvent) -> str:
    """One line: local time, event name, what it is about (its subject and lineage)."""
    about = []
    fields = ev.data.DESCRIPTOR.fields_by_name
    if "lineage" in fields and ev.data.HasField("lineage"):
        lin = ev.data.lineage  # type: ignore[attr-defined]
        model = f"model {lin.model_name}" + (f" v{lin.model_version}" if lin.model_version else "")
        for shown, value in (
            (f"dataset {lin.dataset_version_id}", lin.dataset_version_id),
            (f"job {lin.training_job_id}", lin.training_job_id),
            (f"evaluation {lin.evaluation_id}", lin.evaluation_id),
            (model, lin.model_name),
            (f"deployment {lin.deployment}", lin.deployment),
        ):
            if value:
                about.append(shown)
    shown = " ".join(about)
    # The subject (a version id, "model/3", "model@alias") unless the lineage says it already.
    if ev.subject and not all(token in shown for token in re.split(r"[/@]", ev.subject)):
        about.insert(0, ev.subject)
    when = ev.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{when}  {ev.name:<32} {'  '.join(about)}".rstrip()


@events_app.command("tail")
def events_tail(
    pattern: Annotated[
        str,
        typer.Argument(
            metavar="[PATTERN]",
            help="Event names, with '*' for one part and '>' for the rest: dataset.version.created, "
            "training.*, registry.> (default: every event).",
            show_default=False,
        ),
    ] = "",
    since: Annotated[
        str | None,
        typer.Option(help="Replay from then first: 10m, 2h, 1d ago, or an ISO time (local unless it has an offset)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after N events (default: until Ctrl-C).")] = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="table (one line per event) or json (one JSON object a line).")
    ] = None,
) -> None:
    """Follow your tenant's platform events, one line each, until Ctrl-C or --limit.

    Examples: `lepton events tail 'registry.>'`, `lepton events tail --since 1h --output json`.
    """
    if output is not None:
        if output not in ("table", "json"):
            raise typer.BadParameter("use table or json", param_hint="--output")
        state.output = output
    start = _since(since) if since is not None else None
    try:
        with client() as c, c.events.subscribe(pattern, since=start, limit=limit) as stream:
            if state.output == "table" and err.is_terminal:
                err.print(f"[dim]following {pattern or 'every event'}; Ctrl-C stops[/dim]")
            for ev in stream:
                if state.output == "json":
                    sys.stdout.write(json.dumps(ev.to_dict()) + "\n")
                    sys.stdout.flush()
                else:
                    out.print(_event_line(ev), markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        pass  # the way to stop following: not an error
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit-time flush from failing.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command("predict")
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


@app.command("up")
def up() -> None:
    """Run the whole platform on this machine until Ctrl-C."""
    from lepton_platform.embedded import main as embedded_main

    embedded_main()


def main() -> None:
    """Entry point: maps SDK errors to messages and exit codes."""
    try:
        # Without standalone mode click returns an Exit's code instead of exiting.
        code = app(standalone_mode=False, prog_name="lepton")
        if isinstance(code, int) and code:
            sys.exit(code)
    except errors.LeptonError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        sys.exit(next((code for cls, code in EXIT_CODES.items() if isinstance(exc, cls)), 1))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.BadParameter as exc:
        err.print(f"[red]error:[/red] {exc.format_message()}")  # names the option: Invalid value for '--tag'
        sys.exit(2)
    except typer.Abort as exc:
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(2)
    except typer.TyperException as exc:
        # The other usage errors: no such command or option, an extra argument, no arguments
        # (the help). Typer vendors click; `import click` is not installed and would fail here.
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"[red]error:[/red] {exc.format_message()}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
