"""Deleting a whole tenant: what each service erases of it, and how the registry follows it.

``AccessService.DeleteTenant`` (the registry's process, :class:`TenantDeletions`):

1. writes the deletion record (``deletion.<tenant>`` in the ``tenants`` bucket), so a retry
   finds it and the usage meter stops metering the tenant;
2. deletes each of the tenant's key records, which every process follows (the key is
   refused at once, as a revoked one), then erases them, and their last-used entries;
3. deletes and erases the tenant's plan;
4. publishes ``registry.tenant.deleted``.

Every service consumes that event on a durable of its own (``<service>-tenants``,
:class:`TenantPurger`): it runs its own steps first (the deployer unloads the tenant's
models from serving, the trainer stops its jobs), erases what it keeps of the tenant
(:func:`erase_tenant`: the records of its KV buckets under ``<tenant>.``, the objects of
the stores it writes under ``<tenant>/``, the tenant's messages in the streams
:attr:`~lepton_core.nats_identity.Grants.purge` names), and reports to the registry on
``lepton.access.purged.<service>``, a subject only that service may publish. A service
that is down when the event comes does its part when it starts again; a report the
registry does not answer is retried with the event.

Once every service has reported, the registry erases the tenant's events (``EVENTS``) and
its usage record, and sets ``done_at``. The audit trail keeps its records of the tenant:
who did what, and who deleted it. docs/security.md, "Deletion", says what else stays.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import errors as js_errors
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from lepton_core import events, quotas
from lepton_core.access import KeyBook, seen_key
from lepton_core.bus import (
    DEADLETTER_ROOT,
    DEADLETTER_STREAM,
    EVENTS_ROOT,
    EVENTS_STREAM,
    TENANT_BUCKETS,
    EraseRefused,
    ObjectStore,
    bucket_keys,
    erase_messages,
)
from lepton_core.errors import FailedPrecondition, InvalidArgument, NotFound
from lepton_core.nats_identity import GRANTS, PURGED_ROOT, check_tenant

log = logging.getLogger(__name__)

DELETION_PREFIX = "deletion."
"""Deletion records live in the ``tenants`` bucket as ``deletion.<tenant>`` (plans are ``plan.<tenant>``)."""
DURABLE_SUFFIX = "-tenants"
"""Each service's durable for ``registry.tenant.deleted`` is ``<service>-tenants``."""
REPORT_TIMEOUT_S = 30.0


def durable_of(service: str) -> str:
    return f"{service}{DURABLE_SUFFIX}"


def deletion_key(tenant: str) -> str:
    return f"{DELETION_PREFIX}{tenant}"


@dataclass
class Erased:
    """What one service erased of a tenant."""

    records: int = 0
    objects: int = 0
    messages: int = 0
    deployments: int = 0

    def __add__(self, other: Erased) -> Erased:
        return Erased(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))


class Purge(BaseModel):
    """A service's report, as the deletion record keeps it."""

    service: str
    purged_at: datetime
    records: int = 0
    objects: int = 0
    messages: int = 0
    deployments: int = 0


class DeletionRecord(BaseModel):
    tenant: str
    requested_by: str
    requested_at: datetime
    keys: int = 0
    services: list[str]
    purged: list[Purge] = []
    done_at: datetime | None = None

    def pending(self) -> list[str]:
        done = {p.service for p in self.purged}
        return [s for s in self.services if s not in done]


# --- what a service erases -------------------------------------------------------------------


async def erase_subjects(js: JetStreamContext, stream: str, subject: str) -> int:
    """Erases every message of ``stream`` on ``subject``; purges them where the stream denies deletes."""
    try:
        return await erase_messages(js, stream, subject)
    except EraseRefused:
        log.warning("stream %s denies deletes: purging %s without erasing its bytes", stream, subject)
        await js.purge_stream(stream, subject=subject)
        return 0


async def erase_tenant(js: JetStreamContext, objects: ObjectStore, service: str, tenant: str) -> Erased:
    """Erases what ``service`` keeps of ``tenant``, as its NATS grants say it keeps it.

    Its KV buckets' records under ``<tenant>.`` (every revision), its object stores' objects
    under ``<tenant>/``, the tenant's messages in the streams it purges, and its durables'
    dead letters of the tenant.
    """
    check_tenant(tenant)
    grants = GRANTS[service]
    erased = Erased()
    for bucket in grants.kv_write:
        if bucket not in TENANT_BUCKETS:
            continue
        erased.records += len(await bucket_keys(js, bucket, f"{tenant}.>"))
        await erase_subjects(js, f"KV_{bucket}", f"$KV.{bucket}.{tenant}.>")
    for bucket in grants.objects_write:
        for name in await objects.names(bucket, f"{tenant}/"):
            erased.objects += await objects.erase_name(bucket, name)
    for stream, root in grants.purge:
        erased.messages += await erase_subjects(js, stream, f"{root}.{tenant}.>")
    for durable in grants.durables:
        erased.messages += await erase_subjects(js, DEADLETTER_STREAM, f"{DEADLETTER_ROOT}.{durable}.{tenant}")
    return erased


TenantStep = Callable[[str], Awaitable[Erased]]
"""A service's own step before its records are erased (unload serving models, stop jobs)."""


@dataclass
class TenantPurger:
    """The handler of ``registry.tenant.deleted`` every service runs (:func:`lepton_core.service.run_service`)."""

    service: str
    nc: NATS
    js: JetStreamContext
    objects: ObjectStore
    steps: list[TenantStep] = field(default_factory=list)

    async def __call__(self, event: events.Event[events_pb2.TenantDeleted]) -> None:
        # The subject names the tenant, and only the registry may publish in its area.
        tenant = check_tenant(event.tenant)
        erased = Erased()
        for step in self.steps:
            erased += await step(tenant)
        erased += await erase_tenant(self.js, self.objects, self.service, tenant)
        log.info("tenant %s erased: %s", tenant, erased)
        reply = await self.nc.request(
            f"{PURGED_ROOT}.{self.service}",
            json.dumps({"tenant": tenant, **asdict(erased)}).encode(),
            timeout=REPORT_TIMEOUT_S,
        )
        if reply.data != b"ok":
            # Redelivered: the erasing finds nothing more, the report goes again.
            raise FailedPrecondition(f"the registry did not take the report of tenant {tenant}: {reply.data!r}")


# --- the registry's side ---------------------------------------------------------------------


class TenantDeletions:
    """The registry's part: starts deletions, takes the services' reports, finishes them."""

    def __init__(
        self,
        js: JetStreamContext,
        keys: KeyValue,
        tenants: KeyValue,
        book: KeyBook,
        usage: KeyValue | None,
        services: Sequence[str],
    ) -> None:
        self._js = js
        self._keys = keys
        self._tenants = tenants
        self._book = book
        self._usage = usage
        self._services = list(services)
        self._lock = asyncio.Lock()
        #: Tenants whose deletion is not done: the usage meter skips their events.
        self.deleting: set[str] = set()

    async def load(self) -> None:
        """Reads the deletions not done yet (a restarted registry keeps skipping their usage)."""
        for key in await bucket_keys(self._js, quotas.TENANTS_BUCKET, f"{DELETION_PREFIX}*"):
            record = await self._get(key[len(DELETION_PREFIX) :])
            if record is not None and record[0].done_at is None:
                self.deleting.add(record[0].tenant)

    async def _get(self, tenant: str) -> tuple[DeletionRecord, int] | None:
        try:
            entry = await self._tenants.get(deletion_key(tenant))
        except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        return DeletionRecord.model_validate_json(entry.value), entry.revision or 0

    async def get(self, tenant: str) -> DeletionRecord:
        check_tenant(tenant)
        found = await self._get(tenant)
        if found is None:
            raise NotFound(f"tenant {tenant!r} was never deleted", field="tenant")
        return found[0]

    async def delete(self, tenant: str, confirm: str, by: str, caller_tenant: str) -> DeletionRecord:
        """Starts the deletion of ``tenant`` (idempotent: a retry of an unfinished one starts it again)."""
        check_tenant(tenant)
        if confirm != tenant:
            raise InvalidArgument(
                f"must repeat the tenant's name ({tenant!r}) to confirm: a deletion cannot be undone", field="confirm"
            )
        if tenant == caller_tenant:
            raise FailedPrecondition(
                f"the calling key belongs to tenant {tenant!r}: delete it with a key of another tenant", field="tenant"
            )
        async with self._lock:
            found = await self._get(tenant)
            if found is not None and found[0].done_at is None:
                record = found[0]  # a retry: its steps below are idempotent
            else:
                record = DeletionRecord(
                    tenant=tenant, requested_by=by, requested_at=datetime.now(UTC), services=self._services
                )
            self.deleting.add(tenant)
            await self._tenants.put(deletion_key(tenant), record.model_dump_json().encode())
            record.keys += await self._erase_keys(tenant)
            await self._forget(self._tenants, quotas.TENANTS_BUCKET, quotas.plan_key(tenant))
            await self._tenants.put(deletion_key(tenant), record.model_dump_json().encode())
        deleted_at = datetime.now(UTC)
        message = events_pb2.TenantDeleted(tenant=tenant, deleted_by=by)
        message.deleted_at.FromDatetime(deleted_at)
        await events.publish(
            self._js,
            message,
            tenant=tenant,
            event_id=f"registry.tenant.deleted:{tenant}:{record.requested_at.isoformat()}",
            source="/lepton/registry",
        )
        log.info("tenant %s deleted by %s: %d keys erased; the services erase the rest", tenant, by, record.keys)
        return record

    async def _erase_keys(self, tenant: str) -> int:
        erased = 0
        for record in [r for r in self._book.records() if r.tenant == tenant]:
            await self._forget(self._keys, "keys", record.id)
            await self._forget(self._keys, "keys", seen_key(record.id))
            erased += 1
        # The book drops a deleted record at once: wait until this process has, as RevokeKey does.
        for _ in range(200):
            if not any(r.tenant == tenant for r in self._book.records()):
                break
            await asyncio.sleep(0.01)
        return erased

    async def _forget(self, kv: KeyValue, bucket: str, key: str) -> None:
        """Deletes ``key`` (the processes that follow the bucket see it go), then erases every revision,
        the delete's tombstone included (a key that was never there leaves nothing either)."""
        await kv.delete(key)
        await erase_subjects(self._js, f"KV_{bucket}", f"$KV.{bucket}.{key}")

    async def on_report(self, msg: Msg) -> None:
        """A service's report (``lepton.access.purged.<service>``): the subject names the service."""
        service = msg.subject.rsplit(".", 1)[-1]
        try:
            body = json.loads(msg.data)
            tenant = check_tenant(str(body["tenant"]))
            purge = Purge(
                service=service,
                purged_at=datetime.now(UTC),
                **{k: int(body.get(k, 0)) for k in ("records", "objects", "messages", "deployments")},
            )
            answer = await self._take(tenant, purge)
        except (ValueError, KeyError, TypeError, ValidationError, InvalidArgument, NotFound) as exc:
            log.warning("report of %s refused: %s", service, exc)
            answer = f"refused: {exc}"
        except Exception as exc:
            log.exception("report of %s failed", service)
            answer = f"failed: {type(exc).__name__}"
        if msg.reply:
            await msg.respond(answer.encode())

    async def _take(self, tenant: str, purge: Purge) -> str:
        if purge.service not in self._services:
            raise InvalidArgument(f"{purge.service!r} is not a service that erases tenants", field="service")
        async with self._lock:
            found = await self._get(tenant)
            if found is None:
                raise NotFound(f"tenant {tenant!r} is not being deleted", field="tenant")
            record = found[0]
            # A service reports again after a retry: what it erased before still counts.
            for earlier in [p for p in record.purged if p.service == purge.service]:
                for what in ("records", "objects", "messages", "deployments"):
                    setattr(purge, what, getattr(purge, what) + getattr(earlier, what))
            record.purged = [p for p in record.purged if p.service != purge.service] + [purge]
            if not record.pending() and record.done_at is None:
                messages = await erase_subjects(self._js, EVENTS_STREAM, f"{EVENTS_ROOT}.{tenant}.>")
                if self._usage is not None:
                    await self._forget(self._usage, "usage", tenant)
                record.done_at = datetime.now(UTC)
                self.deleting.discard(tenant)
                log.info("tenant %s deleted: every service erased its part; %d events erased", tenant, messages)
            await self._tenants.put(deletion_key(tenant), record.model_dump_json().encode())
        return "ok"
