"""A long wait rides through a restarting service for a bounded time (issue 19): the unit of it."""

from __future__ import annotations

import time

import pytest

from lepton_ai._transport import Outage, ride_out
from lepton_ai.errors import NotFound, Unavailable


def test_a_call_is_repeated_through_a_short_outage() -> None:
    answers = iter([Unavailable("down"), Unavailable("still down"), "answer"])

    def attempt() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert ride_out("trainer", attempt, limit=10) == "answer"


def test_an_outage_longer_than_the_limit_raises_the_last_error() -> None:
    calls = 0

    def attempt() -> str:
        nonlocal calls
        calls += 1
        raise Unavailable(f"down {calls}")

    started = time.monotonic()
    with pytest.raises(Unavailable, match="down"):
        ride_out("registry", attempt, limit=0.5)
    assert 0.4 <= time.monotonic() - started < 3 and calls >= 2


def test_other_errors_are_not_ridden() -> None:
    def attempt() -> str:
        raise NotFound("no such model")

    with pytest.raises(NotFound):
        ride_out("registry", attempt, limit=10)


def test_an_answer_ends_the_outage_so_the_next_one_has_the_whole_limit() -> None:
    outage = Outage("trainer", limit=0.3)
    outage.ride(Unavailable("a"))
    time.sleep(0.35)
    outage.over()
    assert outage.ride(Unavailable("b")) > 0.2  # a new outage, not the old one's remainder
    assert outage.notice(12.4) == "trainer unavailable, retrying (12 s left)"
