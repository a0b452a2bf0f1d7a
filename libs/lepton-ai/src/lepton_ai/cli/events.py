"""``lepton events``: follow the platform's events (docs/events.md), live or from a point in time."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import typer

from lepton_ai.cli.output import client, err, out, state
from lepton_ai.cli.parsing import parse_since
from lepton_ai.events import PlatformEvent

app = typer.Typer(
    help="Platform events (docs/events.md): follow what happens, live or from a point in time.",
    no_args_is_help=True,
)


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


@app.command("tail")
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
    start = parse_since(since) if since is not None else None
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
