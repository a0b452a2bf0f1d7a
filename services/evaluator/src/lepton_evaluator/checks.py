"""The evaluator's checks at the edge: every request and event field before it reaches a key or a subject.

Names and ids follow the platform's one grammar (:mod:`lepton_core.names`): a field that takes a
training job id refuses an evaluation id and the other way round. Each check raises
:class:`~lepton_core.errors.InvalidArgument` naming the field; callers run them before any read, write
or publish, so a refused request or event stores and emits nothing.
"""

from __future__ import annotations

import math
from typing import Final

from lepton_core.errors import InvalidArgument
from lepton_core.names import check_id, check_name

MAX_SEED: Final = 2**32
"""Split seeds are in ``0 .. 2**32 - 1``."""
MAX_VERSION: Final = 2**31 - 1
"""The largest model version number a request may name."""


def check_model(name: str, field: str = "model_name") -> str:
    """A model name, required."""
    if not name:
        raise InvalidArgument("a model name is required", field=field)
    return check_name(name, field, what="a model name")


def check_version(value: int, field: str = "model_version") -> int:
    """A model version: a positive number, or 0 for "absent" (never a negative sentinel)."""
    if not 0 <= value <= MAX_VERSION:
        raise InvalidArgument(f"must be 0 (none given) or a version number from 1, got {value}", field=field)
    return value


def check_evaluation_ref(training_job_id: str, evaluation_id: str) -> None:
    """The two ways to name an evaluation: a training job id, an evaluation id, or both empty (refused later)."""
    if training_job_id:
        check_id(training_job_id, "training_job_id", "job")
    if evaluation_id:
        check_id(evaluation_id, "evaluation_id", "ev")


def check_split(seed: int, test_fraction: float, prefix: str = "") -> None:
    """A training split as an event carries it: a seed in range and a fraction strictly between 0 and 1."""
    if not 0 <= seed < MAX_SEED:
        raise InvalidArgument(f"must be between 0 and {MAX_SEED - 1}, got {seed}", field=f"{prefix}split_seed")
    if not (math.isfinite(test_fraction) and 0.0 < test_fraction < 1.0):
        raise InvalidArgument(f"must be between 0 and 1, got {test_fraction}", field=f"{prefix}test_fraction")


__all__ = ["MAX_SEED", "MAX_VERSION", "check_evaluation_ref", "check_model", "check_split", "check_version"]
