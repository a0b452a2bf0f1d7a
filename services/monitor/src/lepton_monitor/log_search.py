"""Prediction logs read back from the PREDICTIONS stream: filtered pages, and summaries of a time range.

A call reads at most ``log_scan_limit`` logs; a page token is ``<stream sequence>.<index in its batch>``, so
pages may cut a batch of logs in the middle.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lepton_core.bounds import check_version
from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_monitor.live import LogEntry
from lepton_monitor.lookups import Deployments, check_name, check_time
from lepton_monitor.ports import STREAM_SLACK_S, LogSource

MAX_PAGE = 500
DEFAULT_PAGE = 50
#: The longest request id, feature name or page token a query names.
MAX_TEXT = 256
#: The most feature ranges one query has.
MAX_RANGES = 64


@dataclass
class FeatureRange:
    """A condition on one logged input: ``low <= value <= high`` (None: no bound)."""

    feature: str
    low: float | None = None
    high: float | None = None


@dataclass
class LogQuery:
    """A filter over prediction logs; None or empty means no condition."""

    deployment: str | None = None
    version: int | None = None
    start: float | None = None
    end: float | None = None
    errors_only: bool = False
    trace_id: str = ""
    request_id: str = ""
    ranges: list[FeatureRange] = field(default_factory=list)


@dataclass
class LogPage:
    """One page of matching logs, the token of the next (empty at the end), and how many logs were read."""

    logs: list[LogEntry]
    next_token: str
    scanned: int


@dataclass
class LogSummary:
    """Counts, latencies, the most frequent errors and the slowest requests of the matching logs."""

    logs: int = 0
    errors: int = 0
    rows: int = 0
    latencies: list[float] = field(default_factory=list)
    by_version: dict[int, int] = field(default_factory=dict)
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    slowest: list[LogEntry] = field(default_factory=list)
    truncated: bool = False

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the latencies, or None without any."""
        return float(np.percentile(self.latencies, q)) if self.latencies else None


def matches(entry: LogEntry, q: LogQuery) -> bool:
    """Whether a log passes every condition of ``q`` (a feature range holds when one logged row is in all)."""
    if q.deployment and entry.deployment != q.deployment:
        return False
    if q.version and entry.version != q.version:
        return False
    if q.start is not None and entry.time < q.start:
        return False
    if q.end is not None and entry.time > q.end:
        return False
    if q.errors_only and not entry.error:
        return False
    if q.trace_id and entry.trace_id != q.trace_id:
        return False
    if q.request_id and entry.request_id != q.request_id:
        return False
    if q.ranges:
        index = {name: j for j, name in enumerate(entry.feature_names)}
        if any(r.feature not in index for r in q.ranges):
            return False
        return any(
            all(
                (r.low is None or row[index[r.feature]] >= r.low)
                and (r.high is None or row[index[r.feature]] <= r.high)
                for r in q.ranges
            )
            for row in entry.rows
        )
    return True


def check_query(q: LogQuery) -> None:
    """Raises InvalidArgument, naming the request field, for a query that cannot match sensibly."""
    if q.deployment:
        check_name(q.deployment, "deployment")
    if q.version is not None:
        check_version(q.version, zero="every version")
    if q.start is not None:
        check_time(q.start, "start_time")
    if q.end is not None:
        check_time(q.end, "end_time")
    if q.start is not None and q.end is not None and q.end < q.start:
        raise InvalidArgument("is before start_time", field="end_time")
    if q.trace_id and not re.fullmatch(r"[0-9a-f]{32}", q.trace_id):
        raise InvalidArgument("must be 32 lower-case hex digits (a W3C trace id)", field="trace_id")
    if len(q.request_id) > MAX_TEXT:
        raise InvalidArgument(f"is longer than {MAX_TEXT} characters: {shown(q.request_id)}", field="request_id")
    if len(q.ranges) > MAX_RANGES:
        raise InvalidArgument(f"{len(q.ranges)} ranges; at most {MAX_RANGES} are allowed", field="feature_ranges")
    for i, r in enumerate(q.ranges):
        if not r.feature:
            raise InvalidArgument("is required", field=f"feature_ranges[{i}].feature")
        if len(r.feature) > MAX_TEXT:
            raise InvalidArgument(
                f"is longer than {MAX_TEXT} characters: {shown(r.feature)}", field=f"feature_ranges[{i}].feature"
            )
        if r.low is None and r.high is None:
            raise InvalidArgument("needs a min, a max or both", field=f"feature_ranges[{i}]")
        for bound, name in ((r.low, "min"), (r.high, "max")):
            if bound is not None and not math.isfinite(bound):
                raise InvalidArgument("must be a finite number", field=f"feature_ranges[{i}].{name}")
        if r.low is not None and r.high is not None and r.high < r.low:
            raise InvalidArgument("is below min", field=f"feature_ranges[{i}].max")


class LogSearch:
    """Queries and summarises a tenant's prediction logs in the stream.

    Args:
        logs: Reads prediction logs back from the stream.
        deployments: The known deployments (a query naming one the tenant never had is NotFound).
        scan_limit: The most logs one call reads.
    """

    def __init__(self, logs: LogSource, deployments: Deployments, scan_limit: int) -> None:
        self._logs = logs
        self._deployments = deployments
        self._scan_limit = scan_limit

    async def query_logs(self, tenant: str, q: LogQuery, page_size: int, page_token: str) -> LogPage:
        """A page of the logs matching ``q``, in stream order, from ``page_token`` (empty: the start)."""
        check_query(q)
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument(f"must be between 0 and {MAX_PAGE}, got {page_size}", field="page_size")
        size = page_size or DEFAULT_PAGE
        start_sequence, skip = None, 0
        if page_token:
            seq, _, index = page_token.partition(".")
            if (
                len(page_token) > 40
                or not seq.isascii()
                or not seq.isdigit()
                or int(seq) < 1
                or (index and not (index.isascii() and index.isdigit()))
            ):
                raise InvalidArgument("is not a token this call returned", field="page_token")
            start_sequence, skip = int(seq), int(index or 0)
        if q.deployment:
            await self._deployments.get(tenant, q.deployment)
        out: list[LogEntry] = []
        scanned = 0
        next_token = ""
        start_time = None if q.start is None or start_sequence else q.start - STREAM_SLACK_S
        async with contextlib.aclosing(
            self._logs.scan(tenant, q.deployment or None, start_sequence=start_sequence, start_time=start_time)
        ) as logs:
            async for entry in logs:
                if entry.sequence == start_sequence and entry.index < skip:
                    continue  # returned by the previous page (the token points into a batch)
                scanned += 1
                if q.end is not None and entry.time > q.end + STREAM_SLACK_S:
                    break
                if matches(entry, q):
                    out.append(entry)
                    if len(out) >= size:
                        next_token = f"{entry.sequence}.{entry.index + 1}"
                        break
                if scanned >= self._scan_limit:
                    next_token = f"{entry.sequence}.{entry.index + 1}"
                    break
        return LogPage(logs=out, next_token=next_token, scanned=scanned)

    async def summarize_logs(self, tenant: str, q: LogQuery, top: int) -> LogSummary:
        """A summary of the logs matching ``q``, with the ``top`` (default 5) errors and slowest requests."""
        check_query(q)
        if top < 0 or top > 100:
            raise InvalidArgument(f"must be between 0 and 100, got {top}", field="top")
        if q.deployment:
            await self._deployments.get(tenant, q.deployment)
        top = top or 5
        summary = LogSummary()
        errors: Counter[str] = Counter()
        # (latency, -sequence, scan order, entry): one message's entries share a sequence and may share a
        # latency, and a LogEntry does not compare: the scan order breaks the tie (it once raised TypeError).
        slowest: list[tuple[float, int, int, LogEntry]] = []
        scanned = 0
        start_time = None if q.start is None else q.start - STREAM_SLACK_S
        async with contextlib.aclosing(
            self._logs.scan(tenant, q.deployment or None, start_sequence=None, start_time=start_time)
        ) as logs:
            async for entry in logs:
                scanned += 1
                if q.end is not None and entry.time > q.end + STREAM_SLACK_S:
                    break
                if matches(entry, q):
                    summary.logs += 1
                    summary.rows += entry.batch_rows
                    summary.by_version[entry.version] = summary.by_version.get(entry.version, 0) + 1
                    if entry.error:
                        summary.errors += 1
                        errors[entry.error] += 1
                    if entry.latency_ms is not None:
                        summary.latencies.append(entry.latency_ms)
                        item = (entry.latency_ms, -entry.sequence, -scanned, entry)
                        if len(slowest) < top:
                            heapq.heappush(slowest, item)
                        elif item[:2] > slowest[0][:2]:
                            heapq.heapreplace(slowest, item)
                if scanned >= self._scan_limit:
                    summary.truncated = True
                    break
        summary.top_errors = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        summary.slowest = [e for _, _, _, e in sorted(slowest, key=lambda t: t[:3], reverse=True)]
        return summary


__all__ = ["FeatureRange", "LogPage", "LogQuery", "LogSearch", "LogSummary", "check_query", "matches"]
