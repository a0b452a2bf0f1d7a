"""Durations as people write them (``30d``, ``12h``, ``90m``, ``45s``): one parser for the SDK and the CLI."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from lepton_ai.errors import InvalidArgument

#: What a duration may be: a ``timedelta``, seconds, or a number and a unit (``"30d"``, ``"1.5h"``).
Duration = timedelta | int | float | str

#: The written form, for messages.
FORM = "a duration such as 30d, 12h, 90m or 45s"

_WRITTEN = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Duration, field: str) -> timedelta:
    """``value`` as a ``timedelta``: a ``timedelta`` as it is, a number as seconds, a string as
    a number and one unit (``s``, ``m``, ``h``, ``d``: ``"30d"``, ``"12h"``, ``"90m"``, ``"1.5h"``).

    Raises:
        InvalidArgument: Anything else, or a negative duration, naming ``field`` and the form
            expected (``expires: expected a duration such as 30d, 12h, 90m or 45s, got '30 days'``).
    """
    if isinstance(value, timedelta):
        found = value
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        found = timedelta(seconds=value)
    elif isinstance(value, str):
        match = _WRITTEN.fullmatch(value.strip())
        if match is None:
            raise InvalidArgument(f"{field}: expected {FORM}, got {value!r}")
        found = timedelta(seconds=float(match[1]) * _SECONDS[match[2]])
    else:
        raise InvalidArgument(
            f"{field}: expected a timedelta, seconds as a number, or {FORM}; got {type(value).__name__} {value!r}"
        )
    if found < timedelta(0):
        raise InvalidArgument(f"{field}: expected {FORM}, not a negative one, got {value!r}")
    return found


def whole_seconds(value: Duration, field: str, *, zero: str = "") -> int:
    """:func:`parse_duration`'s result in whole seconds, a fraction rounded up.

    Args:
        value: The duration.
        field: Its name, for messages.
        zero: What a zero duration would mean on the wire (``"never expires"``), when that
            is not what a caller asking for zero meant: then zero is refused, saying so.
    """
    seconds = math.ceil(parse_duration(value, field).total_seconds())
    if seconds == 0 and zero:
        raise InvalidArgument(f"{field}: expected {FORM}, above zero (None: {zero}), got {value!r}")
    return seconds
