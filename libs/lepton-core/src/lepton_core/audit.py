"""The audit trail: one record per mutating call and per refusal, on its own JetStream stream.

Every process's interceptor (:mod:`lepton_core.rpc`) writes them through :class:`AuditLog`,
on ``lepton.audit.<tenant>.<service>``: NATS lets each service publish only under its own
name, so a record's service is vouched for by its subject. The ``AUDIT`` stream keeps them a
year (:data:`~lepton_core.bus.AUDIT_MAX_AGE_S`), apart from the events' 30 days; the
registry's process reads them back for ``AccessService.QueryAudit`` (:func:`query`).

A refusal of a call without a valid key has no tenant: it is filed under
:data:`ANONYMOUS`, and at most :data:`ANONYMOUS_PER_S` a second per process are written, so
that nobody without a key can flood the trail (the rest are counted in the log).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp
from lepton.access.v1 import access_pb2
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError
from opentelemetry import trace

from lepton_core.bus import AUDIT_ROOT, AUDIT_STREAM
from lepton_core.errors import InvalidArgument

log = logging.getLogger(__name__)

ANONYMOUS: Final = "_anonymous"
"""The subject token of refusals that name no tenant (no key, or a key that is not valid)."""
ANONYMOUS_PER_S: Final = 20.0
QUERY_CAP: Final = 1000


def subject(tenant: str, service: str) -> str:
    return f"{AUDIT_ROOT}.{tenant}.{service}"


#: The kind of resource an event's ``ce-subject`` names, by the event's area.
_SUBJECT_KINDS = {
    "dataset": "dataset_version",
    "training": "job",
    "evaluation": "evaluation",
    "registry": "model",
    "deployment": "deployment",
    "monitor": "deployment",
}


def event_resource(name: str, ce_subject: str) -> str:
    """The resource an event is about, as the audit trail names resources (``model/churn/3``)."""
    if not ce_subject:
        return ""
    return f"{_SUBJECT_KINDS.get(name.split('.')[0], name.split('.')[0])}/{ce_subject}"


def trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else ""


class AuditLog:
    """Writes one service's records. ``publish`` is awaited: a mutating call's answer waits
    for its record to be stored, so no acknowledged change goes unrecorded."""

    def __init__(self, js: JetStreamContext, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._js = js
        self._service = service
        self._clock = clock
        self._tokens = ANONYMOUS_PER_S
        self._last = clock()
        self.dropped = 0

    async def write(
        self,
        *,
        tenant: str,
        principal: str,
        key_id: str,
        via: str,
        method: str,
        resource: str,
        permission: str,
        outcome: str,
        detail: str = "",
    ) -> None:
        if not tenant and not self._take():
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("audit: %d refusals without a key not recorded (over %s/s)", self.dropped, ANONYMOUS_PER_S)
            return
        now = Timestamp()
        now.GetCurrentTime()
        record = access_pb2.AuditRecord(
            time=now,
            tenant=tenant,
            principal=principal,
            key_id=key_id,
            via=via,
            service=self._service,
            method=method,
            resource=resource,
            permission=permission,
            outcome=outcome,
            detail=detail[:500],
            trace_id=trace_id(),
        )
        try:
            await self._js.publish(subject(tenant or ANONYMOUS, self._service), record.SerializeToString(), timeout=5)
        except Exception:
            log.exception("audit record of %s %s could not be stored", method, outcome)
            raise

    def _take(self) -> bool:
        now = self._clock()
        self._tokens = min(ANONYMOUS_PER_S, self._tokens + (now - self._last) * ANONYMOUS_PER_S)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def _matches(record: access_pb2.AuditRecord, principal: str, resource: str) -> bool:
    if principal and principal not in (record.principal, record.key_id, f"key:{record.key_id}"):
        return False
    if resource:
        if resource.endswith("/"):
            return record.resource.startswith(resource)
        return record.resource == resource
    return True


async def query(
    js: JetStreamContext,
    tenant: str,
    *,
    since: datetime | None = None,
    principal: str = "",
    resource: str = "",
    limit: int = 0,
) -> tuple[list[access_pb2.AuditRecord], bool]:
    """The records of ``tenant`` from ``since`` (default: a day ago), oldest first, at most ``limit``.

    Returns:
        The records, and whether more matched than ``limit``.
    """
    if limit < 0 or limit > QUERY_CAP:
        raise InvalidArgument(f"{limit} is out of range; expected 1 to {QUERY_CAP} (0: {QUERY_CAP})", field="limit")
    limit = limit or QUERY_CAP
    start = since or datetime.now(UTC) - timedelta(days=1)
    try:
        info = await js.stream_info(AUDIT_STREAM)
    except NotFoundError:
        return [], False
    if info.state.messages == 0:
        return [], False
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
        opt_start_time=start.astimezone(UTC),
        ack_policy=js_api.AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    sub = await js.pull_subscribe(subject(tenant, "*"), stream=AUDIT_STREAM, config=config)
    records: list[access_pb2.AuditRecord] = []
    truncated = False
    try:
        while True:
            pending = (await sub.consumer_info()).num_pending or 0
            if pending == 0:
                break
            try:
                batch = await sub.fetch(min(pending, 256), timeout=2)
            except TimeoutError:
                break
            for msg in batch:
                record = access_pb2.AuditRecord.FromString(msg.data)
                if record.tenant != tenant or not _matches(record, principal, resource):
                    continue
                if len(records) == limit:
                    truncated = True
                    return records, truncated
                records.append(record)
    finally:
        await sub.unsubscribe()
    return records, truncated
