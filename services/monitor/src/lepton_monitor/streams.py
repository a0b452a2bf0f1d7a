"""Reading prediction logs (and labels) back from JetStream, decoded to the monitor's domain types.

The PREDICTIONS stream keeps every log for seven days, so the monitor stores no copy of its own: a query
reads the stream through an ephemeral pull consumer that starts at a time or a sequence and filters on the
tenant's (and deployment's) subject, and the page token of a query is the stream sequence to go on from.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime

from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js import errors as js_errors

from lepton_core import events
from lepton_core.bus import EVENTS_ROOT, EVENTS_STREAM, PREDICTIONS_ROOT, PREDICTIONS_STREAM
from lepton_monitor.live import LabelIn, LogEntry

#: Messages fetched per pull request while scanning.
BATCH = 256
FETCH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Shared:
    """What a batch's entries leave empty, read once per batch."""

    tenant: str
    lineage: common_pb2.Lineage
    names: list[str]

    @classmethod
    def of(cls, batch: events_pb2.PredictionLogBatch) -> _Shared:
        return cls(tenant=batch.tenant, lineage=batch.lineage, names=list(batch.feature_names))


def log_entry(
    log: events_pb2.PredictionLogged,
    shared: _Shared | None = None,
    *,
    event_id: str = "",
    sequence: int = 0,
    fallback_time: float = 0.0,
    index: int = 0,
) -> LogEntry:
    """A :class:`LogEntry` from a ``PredictionLogged`` payload, alone or entry ``index`` of a batch.

    Tenant, lineage and feature names a batch's entry leaves empty come from ``shared``. Logged rows whose
    values do not fill ``logged_rows x len(feature_names)`` are left out (a malformed log still counts as a
    request).
    """
    names = list(log.feature_names) if log.feature_names or shared is None else shared.names
    lineage = log.lineage if log.HasField("lineage") or shared is None else shared.lineage
    values = list(log.inputs)
    rows: list[list[float]] = []
    n = int(log.logged_rows)
    if names and n > 0 and len(values) == n * len(names):
        width = len(names)
        rows = [values[k * width : (k + 1) * width] for k in range(n)]
    when = log.time.ToNanoseconds() / 1e9 if log.HasField("time") else 0.0
    log_id = log.log_id or (f"{event_id}.{index}" if shared is not None else event_id)
    return LogEntry(
        tenant=log.tenant or (shared.tenant if shared is not None else ""),
        deployment=lineage.deployment,
        model_name=lineage.model_name,
        version=int(lineage.model_version),
        log_id=log_id,
        request_id=log.request_id or log_id,
        trace_id=log.trace_id,
        time=when or fallback_time or time.time(),
        batch_rows=int(log.batch_rows),
        latency_ms=log.latency_us / 1000.0,
        error=log.error,
        feature_names=names,
        rows=rows,
        outputs=list(log.outputs),
        sequence=sequence,
        index=index,
        traceparent=log.traceparent,
    )


def log_entries(data: object, *, event_id: str = "", sequence: int = 0, fallback_time: float = 0.0) -> list[LogEntry]:
    """The logs of one PREDICTIONS message: a ``PredictionLogBatch`` or a single ``PredictionLogged``.

    Anything else gives no logs.
    """
    if isinstance(data, events_pb2.PredictionLogBatch):
        shared = _Shared.of(data)
        return [
            log_entry(log, shared, event_id=event_id, sequence=sequence, fallback_time=fallback_time, index=i)
            for i, log in enumerate(data.logs)
        ]
    if isinstance(data, events_pb2.PredictionLogged):
        return [log_entry(data, event_id=event_id, sequence=sequence, fallback_time=fallback_time)]
    return []


def _stream_time(msg: Msg) -> float:
    try:
        return float(msg.metadata.timestamp.timestamp())
    except Exception:
        return 0.0


async def _scan(
    js: JetStreamContext,
    stream: str,
    subject: str,
    *,
    start_sequence: int | None,
    start_time: float | None,
) -> AsyncGenerator[Msg, None]:
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
        filter_subject=subject,
    )
    if start_sequence:
        config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start_sequence
    elif start_time is not None:
        config.deliver_policy = js_api.DeliverPolicy.BY_START_TIME
        config.opt_start_time = datetime.fromtimestamp(max(start_time, 0.0), UTC)
    else:
        config.deliver_policy = js_api.DeliverPolicy.ALL
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            try:
                msgs = await sub.fetch(min(BATCH, pending), timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, js_errors.FetchTimeoutError):
                return
            for msg in msgs:
                pending = int(msg.metadata.num_pending or 0)
                yield msg
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            pass


class StreamLogs:
    """The :class:`~lepton_monitor.ports.LogSource` over the PREDICTIONS stream."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def scan(
        self, tenant: str, deployment: str | None, *, start_sequence: int | None, start_time: float | None
    ) -> AsyncGenerator[LogEntry, None]:
        subject = f"{PREDICTIONS_ROOT}.{tenant}.{deployment or '*'}"
        scan = _scan(self._js, PREDICTIONS_STREAM, subject, start_sequence=start_sequence, start_time=start_time)
        async with contextlib.aclosing(scan) as msgs:
            async for msg in msgs:
                try:
                    event = events.decode(msg)
                except ValueError:
                    continue
                for entry in log_entries(
                    event.data,
                    event_id=event.id,
                    sequence=int(msg.metadata.sequence.stream),
                    fallback_time=_stream_time(msg),
                ):
                    yield entry

    async def erase_version(self, tenant: str, model: str, version: int) -> int:
        """Erases the prediction logs ``version`` of ``model`` served (``registry.version.deleted``).

        Each message (a batch is one serving model instance's, so of one version) whose lineage
        names the version is deleted with nats-server's erasing delete: its request rows are
        overwritten on disk, not only marked deleted. Returns the messages erased.
        """
        subject = f"{PREDICTIONS_ROOT}.{tenant}.*"
        found: list[int] = []
        scan = _scan(self._js, PREDICTIONS_STREAM, subject, start_sequence=None, start_time=None)
        async with contextlib.aclosing(scan) as msgs:
            async for msg in msgs:
                try:
                    lineage = getattr(events.decode(msg).data, "lineage", None)
                except ValueError:
                    continue
                if lineage is not None and (lineage.model_name, lineage.model_version) == (model, version):
                    found.append(int(msg.metadata.sequence.stream))
        for sequence in found:
            try:
                await self._js.delete_msg(PREDICTIONS_STREAM, sequence)
            except js_errors.NotFoundError:
                pass  # gone by the stream's age limit meanwhile
        return len(found)


async def read_labels(
    js: JetStreamContext, since: float
) -> AsyncGenerator[tuple[str, str, list[LabelIn], float], None]:
    """Every ``monitor.labels.received`` since ``since``: (tenant, deployment, labels, received at)."""
    spec = events.spec_of(events_pb2.LabelsReceived)
    subject = f"{EVENTS_ROOT}.*.{spec.name}"
    async with contextlib.aclosing(_scan(js, EVENTS_STREAM, subject, start_sequence=None, start_time=since)) as msgs:
        async for msg in msgs:
            try:
                event = events.decode(msg)
            except ValueError:
                continue
            data = event.data
            if not isinstance(data, events_pb2.LabelsReceived):
                continue
            labels = [
                LabelIn(request_id=r, row=int(k), value=float(v))
                for r, k, v in zip(data.request_ids, data.rows, data.values, strict=False)
            ]
            at = data.received_at.ToNanoseconds() / 1e9 if data.HasField("received_at") else _stream_time(msg)
            yield data.tenant, data.lineage.deployment, labels, at


__all__ = ["StreamLogs", "log_entries", "log_entry", "read_labels"]
