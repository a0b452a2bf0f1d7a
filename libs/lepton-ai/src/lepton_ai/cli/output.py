"""What every ``lepton`` command shares: the global options, the client they make, and how results print.

Results go to stdout (a table, or JSON with ``--output json``); messages go to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lepton_ai.client import Client
from lepton_ai.datasets import Dataset

# Piped output is not cut to 80 columns: a table is as wide as its ids and names need.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 1000)
err = Console(stderr=True)


class State:
    """The global options (``lepton --url ... --output json COMMAND``), set before a command runs."""

    url: str | None = None
    api_key: str | None = None
    ca_file: Path | None = None
    output: str = "table"


state = State()


def client() -> Client:
    """A client for the platform the global options name."""
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


def fields_table(title: str, info: dict[str, Any]) -> Table:
    """One thing as a two-column table: each field and its value (lists and dicts as JSON)."""
    t = Table("field", "value", title=title, title_justify="left")
    for k, val in info.items():
        t.add_row(k, json.dumps(val) if isinstance(val, dict | list) else str(val))
    return t
