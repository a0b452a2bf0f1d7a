"""``lepton data``: upload, inspect, validate and transform datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lepton_ai.cli.output import client, emit, err, state
from lepton_ai.datasets import Dataset, SplitSpec

app = typer.Typer(help="Datasets: upload, inspect, validate, transform.", no_args_is_help=True)


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


@app.command("upload")
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


@app.command("list")
def data_list(search: Annotated[str, typer.Option(help="Only names containing this.")] = "") -> None:
    """List datasets."""
    with client() as c:
        found = c.datasets.list(search)
    t = Table("dataset", "id", "versions", "latest version", "rules")
    for d in found:
        t.add_row(d.name, d.id, str(d.version_count), d.latest_version_id, str(len(d.rules)))
    emit(found, t)


@app.command("show")
def data_show(ref: Annotated[str, typer.Argument(help="Version id (dv_...), dataset name or id.")]) -> None:
    """Show a version: its columns, size and lineage."""
    with client() as c:
        d = c.datasets.get(ref)
    emit(d, version_table(d))


@app.command("versions")
def data_versions(name: Annotated[str, typer.Argument(help="Dataset name.")]) -> None:
    """List a dataset's versions, oldest first."""
    with client() as c:
        found = c.datasets.versions(name)
    t = Table("version", "origin", "parent", "rows", "columns")
    for d in found:
        t.add_row(d.version_id, d.origin, d.parent_version_id, str(d.row_count), str(len(d.columns)))
    emit(found, t)


def json_file(path: Path, param_hint: str, expected: tuple[type, ...]) -> Any:
    """A JSON file's value; bad JSON, or JSON of another shape, is a usage error naming the file."""
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint=param_hint) from None
    if not isinstance(value, expected):
        names = " or ".join("an object" if t is dict else "a list" for t in expected)
        raise typer.BadParameter(f"{path} holds {type(value).__name__}, expected {names}", param_hint=param_hint)
    return value


@app.command("validate")
def data_validate(
    ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    rules: Annotated[
        Path | None, typer.Option(exists=True, help="JSON file of rules (default: the dataset's).")
    ] = None,
) -> None:
    """Check a version against validation rules; exit code 3 when a rule is broken."""
    with client() as c:
        report = c.datasets.get(ref).validate(json_file(rules, "--rules", (list,)) if rules else None)
    t = Table("rule", "column", "rows", "problem", title=f"{report.rules_checked} rules checked", title_justify="left")
    for v in report.violations:
        t.add_row(v.kind, v.column, str(v.count), v.description)
    emit(report, t if report.violations else "[green]valid[/green]")
    if not report.valid:
        raise typer.Exit(3)


@app.command("profile")
def data_profile(ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")]) -> None:
    """Per-column statistics of a version."""
    with client() as c:
        prof = c.datasets.get(ref).profile()
    t = Table("column", "type", "count", "nulls", "distinct", "min", "mean", "max")
    for name, p in prof.items():
        stats = [f"{p[k]:.4g}" if k in p else "" for k in ("min", "mean", "max")]
        t.add_row(name, p["dtype"], str(p["count"]), str(p["nulls"]), str(p["distinct"]), *stats)
    emit(prof, t)


@app.command("apply")
def data_apply(
    ref: Annotated[str, typer.Argument(help="Version id, dataset name or id.")],
    recipe: Annotated[Path, typer.Argument(exists=True, help='JSON file: {"steps": [...]}.')],
) -> None:
    """Apply a recipe; prints the new version."""
    with client() as c:
        d = c.datasets.get(ref).apply(json_file(recipe, "RECIPE", (dict, list)))
    emit(d, version_table(d))


@app.command("split")
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


@app.command("delete")
def data_delete(name: Annotated[str, typer.Argument(help="Dataset name or id.")]) -> None:
    """Delete a dataset and all its versions: their rows and records leave the store."""
    with client() as c:
        n = c.datasets.delete(name)
    emit({"versions_deleted": n}, f"deleted {name} ({n} versions)")
