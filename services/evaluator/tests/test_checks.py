"""The evaluator's edge checks as pure functions (no server)."""

from __future__ import annotations

import math

import pytest

from lepton_core.errors import InvalidArgument
from lepton_evaluator.checks import check_evaluation_ref, check_model, check_split


def test_job_and_evaluation_ids_do_not_mix() -> None:
    check_evaluation_ref("job_abc", "ev_abc")
    check_evaluation_ref("", "")
    with pytest.raises(InvalidArgument, match="evaluation id") as err:
        check_evaluation_ref("ev_abc", "")
    assert err.value.field == "training_job_id"
    with pytest.raises(InvalidArgument, match="training job id") as err:
        check_evaluation_ref("", "job_abc")
    assert err.value.field == "evaluation_id"


@pytest.mark.parametrize("name", ["", "churn\n", "Churn", "名字", "a.b"])
def test_model_names_follow_the_grammar(name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_model(name)
    assert err.value.field == "model_name"


@pytest.mark.parametrize(
    ("seed", "fraction", "field"),
    [(-1, 0.2, "split_seed"), (2**32, 0.2, "split_seed"), (1, math.nan, "test_fraction"), (1, 0.0, "test_fraction")],
)
def test_a_split_is_bounded(seed: int, fraction: float, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_split(seed, fraction)
    assert err.value.field == field
