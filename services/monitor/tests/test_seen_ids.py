"""The monitor's set of counted log ids answers as a set does, in memory that does not grow with the rate."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_monitor.live import LiveData, LogEntry
from lepton_monitor.seen import SeenIds

PREFIXES = ["0123456789abcdef", "fedcba9876543210"]


def _hex_id(prefix: int, n: int) -> str:
    return f"{PREFIXES[prefix]}{n:016x}"


_ids = st.one_of(
    st.builds(_hex_id, st.integers(0, 1), st.integers(0, 40)),
    st.builds(lambda e, i: f"ev{e}.{i}", st.integers(0, 2), st.integers(0, 40)),
    # Other forms are kept as they are, and ids that only look alike stay apart.
    st.sampled_from(["custom", "ev1.007", "ev1.7x", "0123456789ABCDEF0000000000000001", "x" * 40]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ids, max_size=120), st.lists(_ids, max_size=40))
def test_it_answers_as_a_set_does(added: list[str], probes: list[str]) -> None:
    seen, reference = SeenIds(), set()
    for log_id in added:
        assert (log_id in seen) == (log_id in reference)
        seen.add(log_id)
        reference.add(log_id)
        assert len(seen) == len(reference)
    for log_id in probes + added:
        assert (log_id in seen) == (log_id in reference)


def test_a_minute_of_logs_from_two_instances_nearly_in_order_is_a_few_runs() -> None:
    """60,000 logs, each instance's ids shuffled within 50 (requests finishing out of order)."""
    order = [(p, n) for n in range(30_000) for p in (0, 1)]
    rng = random.Random(7)
    for start in range(0, len(order), 100):
        chunk = order[start : start + 100]
        rng.shuffle(chunk)
        order[start : start + 100] = chunk
    seen = SeenIds()
    for p, n in order:
        seen.add(_hex_id(p, n))
    assert len(seen) == 60_000
    assert seen.runs() == 2
    assert _hex_id(0, 29_999) in seen and _hex_id(0, 30_000) not in seen


def test_a_redelivered_log_is_counted_once_by_the_windows() -> None:
    live = LiveData(width_seconds=60, retention=5, max_samples=100, rows_per_window=10)

    def entry(n: int) -> LogEntry:
        log_id = _hex_id(0, n)
        return LogEntry("t", "d", "m", 1, log_id, log_id, "", 120.0 + n, 1, 1.0, "")

    assert all(live.add(entry(n)) for n in range(10))
    assert not live.add(entry(3))
    assert live.duplicates == 1
    assert live.counters[("t", "d", 1)].requests == 10
