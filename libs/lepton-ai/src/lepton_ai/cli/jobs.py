"""``lepton train`` and ``lepton jobs``: train a model, follow and cancel training jobs."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from lepton_ai import _progress
from lepton_ai.cli.output import client, emit, err, state
from lepton_ai.cli.parsing import pairs

app = typer.Typer(help="Training jobs: list, watch, cancel.", no_args_is_help=True)


# `lepton train`: a command of the root app (lepton_ai.cli registers it).
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

    estimator = type("CliModel", (Model,), {"algorithm": algorithm})(**pairs(param, "--param"))
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


@app.command("list")
def jobs_list(
    state: Annotated[str, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = "",
    limit: int = 20,
) -> None:
    """Recent training jobs, newest first."""
    from lepton_ai.jobs import STATES, state_name

    if state and state not in STATES:
        raise typer.BadParameter(f"use one of {', '.join(STATES)}", param_hint="--state")
    with client() as c:
        found = c.jobs.list(state, limit)
    t = Table("job", "state", "algorithm", "model", "stage", "worker")
    for j in found:
        t.add_row(j.job_id, state_name(j.state), j.algorithm, j.model_name, j.stage, j.worker_id)
    emit([{"job_id": j.job_id, "state": state_name(j.state), "model_name": j.model_name} for j in found], t)


@app.command("watch")
def jobs_watch(job_id: str) -> None:
    """Follow a job until it ends."""
    from lepton_ai.jobs import state_name

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


@app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    from lepton_ai.jobs import state_name

    with client() as c:
        job = c.jobs.cancel(job_id)
    emit({"job_id": job_id, "state": state_name(job.state)}, f"{job_id}: {job.stage}")


@app.command("algorithms")
def jobs_algorithms() -> None:
    """The algorithms the trainer runs and their hyper-parameters."""
    with client() as c:
        found = c.jobs.algorithms()
    t = Table("algorithm", "task", "parameters")
    for a in found:
        t.add_row(a.name, a.task, ", ".join(f"{p.name}={p.default}" for p in a.params))
    emit([{"name": a.name, "task": a.task, "params": [p.name for p in a.params]} for a in found], t)
