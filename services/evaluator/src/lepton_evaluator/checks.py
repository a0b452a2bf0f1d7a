"""The evaluator's checks at the edge: every request and event field before it reaches a key or a subject.

Names and ids follow the platform's one grammar (:mod:`lepton_core.names`): a field that takes a
training job id refuses an evaluation id and the other way round. Each check raises
:class:`~lepton_core.errors.InvalidArgument` naming the field; callers run them before any read, write
or publish, so a refused request or event stores and emits nothing.
"""

from __future__ import annotations

from lepton_core.bounds import check_fraction, check_seed
from lepton_core.errors import InvalidArgument
from lepton_core.names import check_id, check_name


def check_model(name: str, field: str = "model_name") -> str:
    """A model name, required."""
    if not name:
        raise InvalidArgument("a model name is required", field=field)
    return check_name(name, field, what="a model name")


def check_evaluation_ref(training_job_id: str, evaluation_id: str) -> None:
    """The two ways to name an evaluation: a training job id, an evaluation id, or both empty (refused later)."""
    if training_job_id:
        check_id(training_job_id, "training_job_id", "job")
    if evaluation_id:
        check_id(evaluation_id, "evaluation_id", "ev")


def check_split(seed: int, test_fraction: float, prefix: str = "") -> None:
    """A training split as an event carries it: a seed in range and a fraction strictly between 0 and 1."""
    check_seed(seed, f"{prefix}split_seed")
    check_fraction(test_fraction, f"{prefix}test_fraction")


__all__ = ["check_evaluation_ref", "check_model", "check_split"]
