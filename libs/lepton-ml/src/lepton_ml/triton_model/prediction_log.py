"""Prediction logs of the serving model (``model.py``): sampled in ``execute``, published off its path.

``execute`` queues a :class:`LogItem` without blocking; :class:`PredictionLogger`'s daemon thread,
with its own asyncio loop, owns the NATS connection (the ``serving`` identity's nkey) and
publishes ``PredictionLogBatch`` CloudEvents on ``lepton.pred.<tenant>.<deployment>``.
Imported by ``model.py`` as ``lepton_ml.triton_model.prediction_log`` (Triton copies only
``model.py`` into a model's folder), so it needs only numpy, nats-py and the Lepton protos.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

log = logging.getLogger("lepton.triton_model")

CE_TYPE = "ai.lepton.prediction.batch.logged.v1"
CONTENT_TYPE = "application/protobuf; proto=lepton.events.v1.PredictionLogBatch"

#: How long logs gather before the publisher sends them (one message per interval). Each
#: message costs the broker and the monitor more than the logs in it: at 1000 logs a second,
#: 10 ms batches cut serving throughput to 0.80-0.83x the hand-loaded model, 50 ms batches gave
#: 0.90-1.02x and 200 ms 0.98-1.06x (docs/benchmarks.md, serving, runs 11-26).
PUBLISH_INTERVAL_S = 0.2
#: ...or sooner, as soon as this many logs wait: traffic logged without a rate cap must not
#: fill the queue between two publishes.
PUBLISH_AT = 1024
#: How often the publisher looks at the queue while it waits.
POLL_S = 0.01
#: Encoded size at which a batch message is closed (NATS's default max payload is 1 MiB).
MAX_BATCH_BYTES = 256 * 1024
QUEUE_SIZE = 4096
FLUSH_TIMEOUT_S = 2.0
PUBLISH_TIMEOUT_S = 2.0


@dataclass(slots=True)
class LogItem:
    """One sampled prediction, queued by ``execute`` for the publisher thread.

    The values stay numpy arrays here: turning them into protobuf fields is the
    publisher's work, off the request's path.
    """

    log_id: str
    time_ns: int
    batch_rows: int
    latency_us: int
    error: str
    trace_id: str
    #: The request's first rows (``logged_rows`` of them, 2-D), and one prediction per row.
    rows: np.ndarray[Any, Any]
    outputs: np.ndarray[Any, Any]
    #: Its first row and that row's prediction (also when no rows are kept).
    first_row: np.ndarray[Any, Any]
    first_output: np.ndarray[Any, Any]
    request_id: str = ""
    #: The caller's W3C traceparent, when the request carried one.
    traceparent: str = ""


class PredictionLogger:
    """Publishes sampled prediction logs to JetStream from a background thread.

    ``submit`` never blocks: the queue is bounded and a full queue drops the item
    (counted in :attr:`dropped`). Publish errors are logged and the item dropped:
    prediction logs are telemetry, and serving must not depend on NATS being up.
    """

    def __init__(
        self,
        *,
        url: str,
        seed_file: str | None,
        subject: str,
        source: str,
        tenant: str,
        deployment: str,
        model_name: str,
        model_version: int,
        feature_names: list[str] | None = None,
    ) -> None:
        self.url = url
        self.seed_file = seed_file
        self.feature_names = list(feature_names or [])
        self.subject = subject
        self.source = source
        self.tenant = tenant
        self.deployment = deployment
        self.model_name = model_name
        self.model_version = model_version
        # A deque, not a queue.Queue: append/popleft are atomic and lock-free, and the
        # publisher polls it on its interval anyway.
        self.queue: collections.deque[LogItem] = collections.deque()
        self.dropped = 0
        self.published = 0
        #: Requests not logged (sample rate, rate cap), and how many of them batches reported.
        self.unlogged = 0
        self._unlogged_sent = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._thread_main, name="lepton-prediction-log", daemon=True)
        self._thread.start()

    def submit(self, item: LogItem) -> None:
        """Queues ``item`` without blocking; drops it when ``QUEUE_SIZE`` logs wait already."""
        if len(self.queue) < QUEUE_SIZE:
            self.queue.append(item)
            return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("prediction log queue full: %d logs dropped so far", self.dropped)

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Publishes what is queued, waiting at most ``timeout`` seconds, then disconnects."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Still connecting or publishing: give up on the rest rather than hold unload.
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(task.cancel)
            self._thread.join(0.5)
            log.warning("prediction log flush timed out; %d logs not published", len(self.queue))

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._run())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("prediction log publisher stopped")
        finally:
            with contextlib.suppress(Exception):
                loop.close()

    async def _run(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.warning("NATS error (serving identity): %s", exc)

        nc = await nats.connect(
            [url.strip() for url in self.url.split(",") if url.strip()],  # a cluster: every node, comma-separated
            name=self.source,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=2,
            error_cb=on_error,
            nkeys_seed=self.seed_file,
        )
        try:
            while True:
                stopping = self._stopping.is_set()
                items: list[LogItem] = []
                while self.queue and len(items) < QUEUE_SIZE:
                    items.append(self.queue.popleft())
                if items or self.unlogged != self._unlogged_sent:
                    await self._publish(nc, items)  # no logs but unlogged requests: an empty batch counts them
                elif stopping:
                    break
                if not stopping:
                    # Let logs gather: one message per interval, not one per request.
                    await self._gather()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 1.0)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _gather(self) -> None:
        """Waits ``PUBLISH_INTERVAL_S``, or less once ``PUBLISH_AT`` logs wait or the logger closes."""
        waited = 0.0
        while waited < PUBLISH_INTERVAL_S and len(self.queue) < PUBLISH_AT and not self._stopping.is_set():
            await asyncio.sleep(POLL_S)
            waited += POLL_S

    async def _publish(self, nc: Any, items: list[LogItem]) -> None:
        """Publishes ``items`` as few ``PredictionLogBatch`` messages, then one flush for all.

        Plain NATS publishes (the PREDICTIONS stream stores them; ``Nats-Msg-Id`` still
        de-duplicates) rather than JetStream publishes awaiting acks, and one message per
        batch rather than one per request: measured, per-request messages cost the broker
        and the monitor more CPU than the prediction itself. A batch the server does not
        store is lost, as the sampling already allows.
        """
        sent = 0
        try:
            for count, payload, headers in self.encode(items):
                await nc.publish(self.subject, payload, headers=headers)
                sent += count
            await nc.flush(timeout=PUBLISH_TIMEOUT_S)
            self.published += sent
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.dropped += len(items) - sent
            log.warning("%d prediction logs not published: %s", len(items), exc)

    def encode(self, items: list[LogItem]) -> list[tuple[int, bytes, dict[str, str]]]:
        """``items`` as ``PredictionLogBatch`` payloads of at most ``MAX_BATCH_BYTES`` each.

        Returns:
            For each message: how many logs it holds, the protobuf payload, and the
            CloudEvents binary-mode headers.
        """
        from lepton.common.v1 import common_pb2
        from lepton.events.v1 import events_pb2

        out: list[tuple[int, bytes, dict[str, str]]] = []
        batch: Any = None
        size = 0

        def finish() -> None:
            batch.dropped_total = self.dropped
            unlogged = self.unlogged
            batch.unlogged = unlogged - self._unlogged_sent
            self._unlogged_sent = unlogged
            now = time.time_ns()
            when = datetime.fromtimestamp(now / 1e9, UTC).isoformat().replace("+00:00", "Z")
            headers = {
                "ce-specversion": "1.0",
                "ce-id": batch.batch_id,
                "ce-type": CE_TYPE,
                "ce-source": self.source,
                "ce-time": when,
                "ce-subject": self.deployment,
                "content-type": CONTENT_TYPE,
                "Nats-Msg-Id": batch.batch_id,
                # The batch is no request's child: a trace of its own, not sampled.
                "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00",
            }
            out.append((len(batch.logs), batch.SerializeToString(), headers))

        def start() -> Any:
            return events_pb2.PredictionLogBatch(
                tenant=self.tenant,
                lineage=common_pb2.Lineage(
                    model_name=self.model_name, model_version=self.model_version, deployment=self.deployment
                ),
                feature_names=self.feature_names,
                batch_id=uuid.uuid4().hex,
            )

        for item in items:
            if batch is None:
                batch = start()
                size = 0
            entry = batch.logs.add(
                log_id=item.log_id,
                batch_rows=item.batch_rows,
                latency_us=item.latency_us,
                first_row_inputs=item.first_row.tolist(),
                first_row_outputs=item.first_output.tolist(),
                error=item.error,
                inputs=item.rows.ravel().tolist(),
                outputs=item.outputs.tolist(),
                logged_rows=len(item.rows),
                request_id=item.request_id or item.log_id,
                trace_id=item.trace_id,
                traceparent=item.traceparent,
            )
            entry.time.FromNanoseconds(item.time_ns)
            # An upper bound of the entry's encoded size, cheaper than ByteSize() per entry.
            size += 160 + 9 * (item.rows.size + item.outputs.size + item.first_row.size) + len(item.error)
            if size >= MAX_BATCH_BYTES:
                finish()
                batch = None
        if batch is None and self.unlogged != self._unlogged_sent:
            batch = start()
        if batch is not None:
            finish()
        return out
