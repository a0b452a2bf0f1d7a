"""The trainer's edge checks as pure functions (no server): bounds, sizes and id kinds."""

from __future__ import annotations

import math

import pytest

from lepton_core.bounds import MAX_SEED, check_seed
from lepton_core.errors import InvalidArgument
from lepton_trainer.checks import (
    check_job_id,
    check_retraining_job_id,
    check_search,
    check_submission,
)

GOOD = {
    "dataset_version_id": "dv_0123abcd",
    "algorithm": "ridge",
    "target": "target",
    "params": {"alpha": "1.0"},
    "model_name": "churn",
    "split_seed": 0,
    "test_fraction": 0.0,
    "seed": None,
}


def test_a_good_submission_passes() -> None:
    check_submission(**GOOD)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_name": "churn\n"}, "model_name"),
        ({"model_name": "名字"}, "model_name"),
        ({"dataset_version_id": "ev_0123"}, "dataset_version_id"),
        ({"dataset_version_id": ""}, "dataset_version_id"),
        ({"split_seed": -1}, "split_seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"test_fraction": math.nan}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"params": {f"p{i}": "1" for i in range(65)}}, "params"),
        ({"params": {"alpha": "1\x00"}}, "params.alpha"),
        ({"target": "t" * 300}, "target"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_submission(**{**GOOD, **change})  # type: ignore[arg-type]
    assert err.value.field == field


def test_seeds_are_bounded_on_both_sides() -> None:
    assert check_seed(0, "seed") == 0 and check_seed(MAX_SEED, "seed") == MAX_SEED == 2**32 - 1
    for bad in (-1, MAX_SEED + 1, 2**63 - 1):
        with pytest.raises(InvalidArgument):
            check_seed(bad, "seed")


def test_job_ids_refuse_other_kinds_and_retraining_ids_need_their_prefix() -> None:
    assert check_job_id("job_abc_t1") == "job_abc_t1"
    with pytest.raises(InvalidArgument, match="evaluation id"):
        check_job_id("ev_abc")
    assert check_retraining_job_id("job_rt_0123") == "job_rt_0123"
    with pytest.raises(InvalidArgument, match="retraining"):
        check_retraining_job_id("job_0123")


def test_search_sizes_are_checked_before_the_grid_is_built() -> None:
    check_search({"alpha": ["1", "2"]}, 0, "grid", "")
    with pytest.raises(InvalidArgument, match="combinations") as err:
        check_search({f"p{i}": [str(v) for v in range(40)] for i in range(5)}, 0, "grid", "")
    assert err.value.field == "search.space"
    with pytest.raises(InvalidArgument) as err:
        check_search({"alpha": ["1"]}, -1, "random", "")
    assert err.value.field == "search.trials"
