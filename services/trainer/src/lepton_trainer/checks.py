"""The trainer's checks at the edge: every request and event field before it reaches a key, a subject or a fit.

Names and ids follow the platform's one grammar (:mod:`lepton_core.names`); the numbers and sizes here
are the trainer's own bounds. Each check raises :class:`~lepton_core.errors.InvalidArgument` naming the
field, quoting the value as :func:`~lepton_core.names.shown` cuts it, and stores or sends nothing, so a
caller runs them all before its first write or publish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from lepton_core.bounds import check_fraction, check_seed, check_text
from lepton_core.errors import InvalidArgument
from lepton_core.names import check_id, check_name, is_id, shown

MAX_PARAMS: Final = 64
"""The most hyper-parameters (or search dimensions) one request names."""
MAX_PARAM_NAME: Final = 64
"""The longest hyper-parameter name."""
MAX_TEXT: Final = 256
"""The longest free-form value (a parameter value, a column name, an algorithm or metric name)."""
MAX_CANDIDATES: Final = 256
"""The most candidate values one search dimension lists."""
MAX_COMBINATIONS: Final = 10_000
"""The largest search space (product of the candidate counts) a search may describe."""
MAX_LIST_LIMIT: Final = 1000
"""The most jobs ``ListTrainingJobs`` returns."""
RETRAINING_PREFIX: Final = "job_rt_"
"""The prefix of the job ids the monitor makes for retrainings."""


def check_params(params: Mapping[str, str], field: str = "params") -> None:
    """At most :data:`MAX_PARAMS` parameters, names and values of bounded length.

    Whether each is a parameter of the algorithm, and in range, the catalogue says later; this keeps a
    huge name out of the field names and messages that say so.
    """
    if len(params) > MAX_PARAMS:
        raise InvalidArgument(f"{len(params)} parameters; at most {MAX_PARAMS} are allowed", field=field)
    for name, value in params.items():
        check_text(name, field, limit=MAX_PARAM_NAME)
        check_text(value, f"{field}.{name}", limit=MAX_TEXT)


def check_search(space: Mapping[str, Sequence[str]], trials: int, kind: str, metric: str) -> None:
    """A search spec's sizes: dimensions, candidates per dimension, combinations, trials, names."""
    check_text(kind, "search.kind", limit=MAX_TEXT)
    check_text(metric, "search.metric", limit=MAX_TEXT)
    if len(space) > MAX_PARAMS:
        raise InvalidArgument(f"{len(space)} parameters; at most {MAX_PARAMS} are allowed", field="search.space")
    combinations = 1
    for name, values in space.items():
        check_text(name, "search.space", limit=MAX_PARAM_NAME)
        if len(values) > MAX_CANDIDATES:
            raise InvalidArgument(
                f"{len(values)} candidates; at most {MAX_CANDIDATES} are allowed", field=f"search.space.{name}"
            )
        for value in values:
            check_text(value, f"search.space.{name}", limit=MAX_TEXT)
        combinations *= max(len(values), 1)
    if combinations > MAX_COMBINATIONS:
        raise InvalidArgument(
            f"{combinations} combinations; at most {MAX_COMBINATIONS} are allowed", field="search.space"
        )
    if not 0 <= trials <= MAX_COMBINATIONS:
        raise InvalidArgument(f"must be between 0 and {MAX_COMBINATIONS}, got {trials}", field="search.trials")


def check_submission(
    *,
    dataset_version_id: str,
    algorithm: str,
    target: str,
    params: Mapping[str, str],
    model_name: str,
    split_seed: int,
    test_fraction: float,
    seed: int | None,
) -> None:
    """Every field of a training submission that can be checked without the dataset.

    ``split_seed`` and ``test_fraction`` are as sent (0 means the default); ``model_name`` may be empty
    (derived from the dataset later, and checked then).
    """
    if not dataset_version_id:
        raise InvalidArgument("a dataset version id is required", field="dataset_version_id")
    check_id(dataset_version_id, "dataset_version_id", "dv")
    check_text(algorithm, "algorithm", limit=MAX_TEXT)
    check_text(target, "target", limit=MAX_TEXT)
    check_params(params)
    if model_name:
        check_name(model_name, "model_name", what="a model name")
    check_seed(split_seed, "split_seed")
    if test_fraction != 0.0:
        check_fraction(test_fraction, "test_fraction")
    if seed is not None:
        check_seed(seed, "seed")


def check_job_id(value: str, field: str = "job_id") -> str:
    """``value`` if it is a training job id (an evaluation id is refused, naming the field)."""
    if not value:
        raise InvalidArgument("a job id is required", field=field)
    return check_id(value, field, "job")


def check_retraining_job_id(value: str, field: str = "job_id") -> str:
    """``value`` if it is a job id the monitor makes for a retraining (``job_rt_<hex>``)."""
    check_job_id(value, field)
    if not value.startswith(RETRAINING_PREFIX) or not is_id(value, "job"):
        raise InvalidArgument(
            f"expected a retraining job id like '{RETRAINING_PREFIX}…'; got {shown(value)}", field=field
        )
    return value


__all__ = [
    "MAX_COMBINATIONS",
    "MAX_LIST_LIMIT",
    "MAX_PARAMS",
    "MAX_TEXT",
    "RETRAINING_PREFIX",
    "check_job_id",
    "check_params",
    "check_retraining_job_id",
    "check_search",
    "check_submission",
]
