"""``lepton models``: the model registry: list, show, promote, tag, search, evaluate, export, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lepton_ai.cli.output import client, emit, fields_table
from lepton_ai.cli.parsing import pairs

app = typer.Typer(help="The model registry: list, show, promote.", no_args_is_help=True)


@app.command("list")
def models_list() -> None:
    """Registered models."""
    with client() as c:
        found = c.models.list()
    t = Table("model", "latest version")
    for m in found:
        t.add_row(m.name, str(m.latest_version))
    emit([{"name": m.name, "latest_version": m.latest_version} for m in found], t)


@app.command("show")
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
    emit(info, fields_table(f"{v.model_name} v{v.version}", info))


@app.command("lineage")
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


@app.command("promote")
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


@app.command("tag")
def models_tag(
    name: str,
    version: Annotated[int, typer.Option(help="Tag this version (default: the model itself).")] = 0,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE to set (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="Tag key to remove (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    status: Annotated[str, typer.Option(help="Version status: ready or archived.")] = "",
) -> None:
    """Set a model's or a version's tags, description or status."""
    tags = pairs(tag, "--tag")
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


@app.command("search")
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
                tags=pairs(tag, "--tag"),
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


@app.command("evaluate")
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


@app.command("delete")
def models_delete(
    name: str,
    version: Annotated[int, typer.Option(help="The version to delete (required: never the latest by default).")],
) -> None:
    """Delete a version: its record, artifact, evaluations and monitoring state leave the store."""
    with client() as c:
        deleted = c.models.delete_version(name, version)
    emit(
        {"model_name": deleted.model_name, "version": deleted.version, "artifact_erased": deleted.artifact_erased},
        f"deleted {deleted.model_name} v{deleted.version}",
    )


@app.command("export")
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
