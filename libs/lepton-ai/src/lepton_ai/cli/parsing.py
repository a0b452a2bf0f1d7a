"""Option values that several ``lepton`` commands parse alike: ``KEY=VALUE`` pairs, ``--since``, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from lepton_ai._durations import FORM, parse_duration
from lepton_ai.errors import InvalidArgument


def duration(value: str, option: str) -> timedelta:
    """A ``30d``, ``12h``, ``90m`` or ``45s`` option, as the SDK parses it (:mod:`lepton_ai._durations`)."""
    try:
        return parse_duration(value, option)
    except InvalidArgument as exc:
        raise typer.BadParameter(exc.message.removeprefix(f"{option}: "), param_hint=option) from None


def parse_since(value: str) -> datetime:
    """``10m``, ``2h``, ``1d`` back from now, or an ISO 8601 time (local unless it has an offset)."""
    text = value.strip()
    try:
        return datetime.now(UTC) - parse_duration(text, "--since")
    except InvalidArgument:
        pass
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise typer.BadParameter(
            f"expected {FORM} (back from now) or an ISO time (2025-01-31T09:00:00Z), got {value!r}",
            param_hint="--since",
        ) from None


def pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``KEY=VALUE`` options (repeatable) as a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out
