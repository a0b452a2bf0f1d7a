"""``lepton events``: follow the platform's events (docs/events.md), live or from a point in time."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import typer
from rich.table import Table

from lepton_ai.cli.output import client, emit, err, out, state
from lepton_ai.cli.parsing import parse_since
from lepton_ai.events import DeadLetter, PlatformEvent

app = typer.Typer(
    help="Platform events (docs/events.md): follow what happens, live or from a point in time; "
    "list the dead letters and replay one after a fix.",
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


def _dead_letter_json(d: DeadLetter) -> dict[str, object]:
    """A dead letter as JSON-able values, its event as ``PlatformEvent.to_dict`` gives it."""
    return {
        "id": d.id,
        "consumer": d.consumer,
        "service": d.service,
        "error": d.error,
        "dead_lettered_at": d.dead_lettered_at.isoformat().replace("+00:00", "Z"),
        "deliveries": d.deliveries,
        "original_subject": d.original_subject,
        "event": d.event.to_dict() if d.event is not None else None,
    }


def _dead_letters_table(letters: list[DeadLetter], title: str) -> Table:
    t = Table("id", "dead-lettered", "consumer", "event", "deliveries", "error", title=title, title_justify="left")
    for d in letters:
        shown = _event_line(d.event).split("  ", 1)[1].strip() if d.event is not None else d.original_subject
        when = d.dead_lettered_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        t.add_row(str(d.id), when, d.consumer, shown, str(d.deliveries), d.error)
    return t


@app.command("dead-letters")
def events_dead_letters(
    consumer: Annotated[
        str, typer.Option(help="Only this consumer's: evaluator, trainers, registry, deployer, monitor, ...")
    ] = "",
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 20,
) -> None:
    """Events a platform consumer gave up on (kept 30 days), newest first, each with why.

    After fixing the cause, `lepton events replay ID` hands one back to its consumer.
    """
    with client() as c:
        letters = c.events.dead_letters(consumer=consumer, limit=limit)
    if state.output == "json":
        emit([_dead_letter_json(d) for d in letters])
    elif not letters:
        err.print("no dead letters" + (f" of {consumer}" if consumer else ""))
    else:
        out.print(_dead_letters_table(letters, "dead letters, newest first"))


@app.command("replay")
def events_replay(
    id: Annotated[int, typer.Argument(min=1, help="The dead letter's id (`lepton events dead-letters`).")],
) -> None:
    """Hands one dead letter back to the consumer that gave up on it, once (role admin).

    It returns when the consumer handled the event, and the dead letter is gone; if the consumer
    fails again, the error says why and the dead letter stays.
    """
    with client() as c:
        replayed = c.events.replay_dead_letter(id)
    if state.output == "json":
        emit(_dead_letter_json(replayed))
    else:
        err.print(f"dead letter {replayed.id} handled by {replayed.consumer} ({replayed.service}); it is gone")
