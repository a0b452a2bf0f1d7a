"""The ``lepton`` command line: the SDK's work from a shell.

Exit codes: 0 success, 1 an unexpected error, 2 bad usage, 3 invalid argument,
4 not found, 5 unauthenticated or permission denied, 6 platform unavailable,
7 conflict (an alias moved meanwhile), 8 not possible in the current state (e.g. cancelling
a finished job, or ``lepton up`` where lepton-platform is not installed), 9 a limit of the
tenant's plan (``lepton usage`` shows them).
``lepton jobs watch`` exits 1 unless the job succeeded.
``--output json`` prints machine-readable results on stdout; messages go to stderr.

One module per command group: :mod:`~lepton_ai.cli.data`, :mod:`~lepton_ai.cli.jobs`
(``lepton train`` too), :mod:`~lepton_ai.cli.models`, :mod:`~lepton_ai.cli.deployments`
(``lepton deploy`` and ``lepton predict`` too), :mod:`~lepton_ai.cli.monitor`,
:mod:`~lepton_ai.cli.events`, :mod:`~lepton_ai.cli.access` (``lepton keys``, ``lepton whoami``,
``lepton audit``, ``lepton usage``, ``lepton plans``), :mod:`~lepton_ai.cli.up`. What they share: the global options,
the client and the printing in :mod:`~lepton_ai.cli.output`, option values they parse alike in
:mod:`~lepton_ai.cli.parsing`. This module puts the tree together and maps errors to exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from lepton_ai import errors
from lepton_ai.cli import access, data, deployments, events, jobs, models, monitor, up
from lepton_ai.cli.output import err, state

__all__ = ["EXIT_CODES", "app", "main"]

app = typer.Typer(help="Lepton: data, training, registry, serving and monitoring from a shell.", no_args_is_help=True)
# In the order `lepton --help` lists them: the commands, then the groups.
app.command("train")(jobs.train)
app.command("deploy")(deployments.deployments_create)
app.command("predict")(deployments.predict)
app.command("up")(up.up)
app.command("whoami")(access.whoami)
app.command("audit")(access.audit)
app.command("usage")(access.usage)
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(deployments.app, name="deployments")
app.add_typer(monitor.app, name="monitor")
app.add_typer(events.app, name="events")
app.add_typer(access.app, name="keys")
app.add_typer(access.plans_app, name="plans")
app.add_typer(access.tenants_app, name="tenants")

EXIT_CODES: dict[type[errors.LeptonError], int] = {
    errors.InvalidArgument: 3,
    errors.NotFound: 4,
    errors.Unauthenticated: 5,
    errors.PermissionDenied: 5,
    errors.Unavailable: 6,
    errors.Conflict: 7,
    errors.FailedPrecondition: 8,
    errors.ResourceExhausted: 9,
}


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


def main() -> None:
    """Entry point: maps SDK errors to messages and exit codes."""
    try:
        # Without standalone mode click returns an Exit's code instead of exiting.
        code = app(standalone_mode=False, prog_name="lepton")
        if isinstance(code, int) and code:
            sys.exit(code)
    except errors.LeptonError as exc:
        # Escaped: a message may hold brackets (`pip install 'lepton-ai[platform]'`) that rich would take as markup.
        err.print(f"[red]error:[/red] {escape(exc.message)}")
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
