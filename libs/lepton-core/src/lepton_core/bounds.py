"""Bounds every service applies to the numbers and free text of a request or an event.

One definition each, next to the name and id grammars (:mod:`lepton_core.names`), so that a
version, a seed or a fraction means the same on every RPC. Each check returns the value or
raises :class:`~lepton_core.errors.InvalidArgument` naming the field.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from lepton_core.errors import InvalidArgument
from lepton_core.names import shown

MAX_VERSION: Final = 2**31 - 1
"""The largest version number a request may name."""
MAX_SEED: Final = 2**32 - 1
"""The largest seed: numpy, scikit-learn and the trainer take 32-bit seeds."""


def check_version(value: int, field: str = "version", *, zero: str | None = None) -> int:
    """A version number from 1; 0 too where ``zero`` says what 0 means there. Never a negative sentinel."""
    if 1 <= value <= MAX_VERSION or (value == 0 and zero is not None):
        return value
    allowed = f"0 ({zero}) or " if zero is not None else ""
    raise InvalidArgument(f"must be {allowed}a version number from 1 to {MAX_VERSION}, got {shown(value)}", field=field)


def check_seed(value: int, field: str) -> int:
    """A seed: ``0 <= value <= MAX_SEED``."""
    if not 0 <= value <= MAX_SEED:
        raise InvalidArgument(f"must be between 0 and {MAX_SEED}, got {shown(value)}", field=field)
    return value


def check_fraction(value: float, field: str) -> float:
    """A fraction strictly between 0 and 1 (NaN and infinities refused)."""
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise InvalidArgument(f"must be between 0 and 1 (exclusive), got {shown(value)}", field=field)
    return value


def check_text(value: str, field: str, *, limit: int) -> str:
    """Free text of at most ``limit`` characters without control characters."""
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidArgument(
            f"must be at most {limit} characters without control characters; got {shown(value)}", field=field
        )
    return value


__all__ = ["MAX_SEED", "MAX_VERSION", "check_fraction", "check_seed", "check_text", "check_version"]


def check_timestamp(value: Timestamp, field: str) -> datetime:
    """A protobuf timestamp as a UTC datetime; refused when outside years 1-9999 or its nanos out of range."""
    try:
        if not 0 <= value.nanos < 1_000_000_000:
            raise ValueError(f"nanos {value.nanos} out of range 0-999999999")
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"not a valid timestamp ({exc})", field=field) from None
