"""The monitor's edge checks as pure functions (no server): names, versions, times and durations."""

from __future__ import annotations

import math

import pytest

from lepton_core.errors import InvalidArgument
from lepton_monitor.log_search import LogQuery, check_query
from lepton_monitor.lookups import MAX_TIME_S, check_duration, check_name, check_time


@pytest.mark.parametrize("value", ["dep\n", "名字", "a.b", "a*", "a>", "a b", "Dep"])
def test_names_follow_the_platform_grammar(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_name(value, "deployment")
    assert err.value.field == "deployment"
    with pytest.raises(InvalidArgument, match="is required"):
        check_name("", "deployment")


@pytest.mark.parametrize("value", [-1.0, MAX_TIME_S, math.inf, math.nan, 1e300])
def test_times_are_between_1970_and_2200(value: float) -> None:
    with pytest.raises(InvalidArgument):
        check_time(value, "start_time")
    with pytest.raises(InvalidArgument) as err:
        check_query(LogQuery(end=value))
    assert err.value.field == "end_time"


@pytest.mark.parametrize("value", [-1.0, math.inf, math.nan, 400 * 86_400.0])
def test_durations_are_finite_and_at_most_a_year(value: float) -> None:
    with pytest.raises(InvalidArgument):
        check_duration(value, "last_seconds")
    assert check_duration(0.0, "last_seconds") == 0.0
