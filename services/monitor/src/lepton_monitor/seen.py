"""The log ids a window has counted, kept in memory that does not grow with the log rate.

A prediction log's id is its model instance's prefix and a counter that instance increments for each log
it makes (``<16 hex><16 hex>``, :mod:`lepton_ml.triton_model.model`), or, for a log that came without one,
its stream message's event id and its index in that message (``<event id>.<n>``). Logs arrive nearly in
order, so the counters each prefix has counted form a few runs: :class:`SeenIds` keeps those runs
(``[lo, hi)`` bounds in one sorted list per prefix) instead of every id. 60,000 logs a minute from one
instance take two integers, where a set of their ids took about 7 MiB. An id of any other form is kept
as it is, in a set.
"""

from __future__ import annotations

import bisect
import re

#: ``<prefix><16 hex digits>`` (the serving model's ids) or ``<prefix>.<decimal>`` (a batch's index).
_HEX_ID = re.compile(r"([0-9a-f]{16})([0-9a-f]{16})")
_INDEXED_ID = re.compile(r"(.+)\.([0-9]{1,18})")


def _split(log_id: str) -> tuple[str, int] | None:
    """``(prefix, counter)`` of an id of a known form; None for any other."""
    match = _HEX_ID.fullmatch(log_id)
    if match is not None:
        return match.group(1), int(match.group(2), 16)
    match = _INDEXED_ID.fullmatch(log_id)
    if match is not None and (match.group(2) == "0" or not match.group(2).startswith("0")):
        return match.group(1) + ".", int(match.group(2))
    return None


class SeenIds:
    """A set of log ids: ``id in seen``, ``seen.add(id)``, ``len(seen)``."""

    __slots__ = ("_other", "_runs")

    def __init__(self) -> None:
        self._runs: dict[str, list[int]] = {}
        self._other: set[str] = set()

    def __len__(self) -> int:
        runs = sum(bounds[k + 1] - bounds[k] for bounds in self._runs.values() for k in range(0, len(bounds), 2))
        return runs + len(self._other)

    def __contains__(self, log_id: object) -> bool:
        if not isinstance(log_id, str):
            return False
        split = _split(log_id)
        if split is None:
            return log_id in self._other
        bounds = self._runs.get(split[0])
        # An odd insertion point lies inside a run [bounds[i-1], bounds[i]).
        return bounds is not None and bisect.bisect_right(bounds, split[1]) % 2 == 1

    def add(self, log_id: str) -> None:
        """Adds ``log_id`` (nothing when it is in already)."""
        split = _split(log_id)
        if split is None:
            self._other.add(log_id)
            return
        prefix, n = split
        bounds = self._runs.setdefault(prefix, [])
        if bounds and bounds[-1] == n:  # the next one in order: the usual case
            bounds[-1] = n + 1
            return
        i = bisect.bisect_right(bounds, n)
        if i % 2 == 1:
            return
        joins_left = i > 0 and bounds[i - 1] == n
        joins_right = i < len(bounds) and bounds[i] == n + 1
        if joins_left and joins_right:
            del bounds[i - 1 : i + 1]
        elif joins_left:
            bounds[i - 1] = n + 1
        elif joins_right:
            bounds[i] = n
        else:
            bounds[i:i] = [n, n + 1]

    def runs(self) -> int:
        """How many runs (and ids of another form) are kept: what its memory grows with."""
        return sum(len(b) // 2 for b in self._runs.values()) + len(self._other)
