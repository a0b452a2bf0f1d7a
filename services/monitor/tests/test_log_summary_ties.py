"""The slowest requests of a log summary when several logs tie: one stream message (a batch) holds many
logs at one sequence, and they may share a latency. The heap compared the logs themselves then, and
``SummarizeLogs`` answered INTERNAL (TypeError: LogEntry does not compare)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast

from lepton_monitor.live import LogEntry
from lepton_monitor.log_search import LogQuery, LogSearch
from lepton_monitor.lookups import Deployments


def entry(index: int, latency: float, sequence: int = 7) -> LogEntry:
    return LogEntry(
        tenant="t",
        deployment="d",
        model_name="m",
        version=1,
        log_id=f"log-{sequence}-{index}",
        request_id=f"r{index}",
        trace_id="",
        time=1.0,
        batch_rows=1,
        latency_ms=latency,
        error="",
        sequence=sequence,
        index=index,
    )


class Batch:
    """A LogSource whose stream holds one batch message of logs, two of them as slow as each other."""

    def __init__(self, logs: list[LogEntry]) -> None:
        self.logs = logs

    async def scan(self, tenant: str, deployment: str | None, **_: Any) -> AsyncGenerator[LogEntry, None]:
        for log in self.logs:
            yield log


async def test_logs_of_one_batch_with_the_same_latency_are_ranked_not_compared() -> None:
    logs = [entry(0, 5.0), entry(1, 9.0), entry(2, 9.0), entry(3, 9.0), entry(4, 1.0), entry(0, 9.0, sequence=8)]
    search = LogSearch(Batch(logs), cast(Deployments, None), scan_limit=100)
    summary = await search.summarize_logs("t", LogQuery(), top=3)
    assert summary.logs == 6
    # Three of the four 9 ms logs: the earlier message's first, in the order they were read.
    assert [log.log_id for log in summary.slowest] == ["log-7-1", "log-7-2", "log-7-3"]
