"""Option values that several ``lepton`` commands parse alike: ``KEY=VALUE`` pairs, ``--since``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import typer

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> datetime:
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


def pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``KEY=VALUE`` options (repeatable) as a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key] = value
    return out
