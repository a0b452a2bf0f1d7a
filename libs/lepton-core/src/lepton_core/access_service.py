"""``AccessService``: keys as records, the audit trail, and plans and usage, served by the registry's process.

The registry's process is the one writer of the ``keys`` bucket (NATS grants it alone); every
process follows the bucket (:class:`~lepton_core.access.KeyBook`). See docs/security.md.

Rules that keep a key from reaching further than its maker:

- a key is made, listed, revoked or rotated in the caller's tenant; another tenant's needs
  the operator role (``tenants.manage``), and is NOT_FOUND-silent otherwise: the refusal is
  PERMISSION_DENIED naming the permission, since the tenant was named by the caller;
- a new key's role and grants give no permission its maker lacks (no admin makes an operator);
- names are unique among a tenant's active keys, so ``revoke ci`` means one key.

It is also the one writer of the ``tenants`` bucket (plans, :mod:`lepton_core.quotas`): only an
operator assigns a plan (``SetPlan``); ``GetUsage`` reads what :mod:`lepton_core.usage` metered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.access.v1 import access_pb2, access_pb2_grpc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from lepton_core import audit, quotas
from lepton_core.access import (
    ANY_TENANT,
    AUTHENTICATED,
    KEYS_BUCKET,
    ROLES,
    SEEN_PREFIX,
    TENANTS_DELETE,
    TENANTS_READ,
    KeyBook,
    KeyRecord,
    Principal,
    Rule,
    check_grants,
    check_role,
    new_key_id,
    new_secret,
    rules_for,
    seen_key,
)
from lepton_core.access import digest as digest_of
from lepton_core.bounds import check_timestamp
from lepton_core.bus import bucket_keys
from lepton_core.errors import AlreadyExists, Conflict, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from lepton_core.names import check_name
from lepton_core.nats_identity import KEY_USE_ROOT, PURGED_ROOT
from lepton_core.rpc import current_principal
from lepton_core.tenant_deletion import DeletionRecord, TenantDeletions
from lepton_core.usage import UsageMeter, month_of, usage_of

log = logging.getLogger(__name__)

SERVICE = access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name
RULES = rules_for(
    SERVICE,
    {
        "CreateKey": Rule("keys.manage"),
        "ListKeys": Rule("keys.manage"),
        "RevokeKey": Rule("keys.manage"),
        "RotateKey": Rule("keys.manage"),
        "WhoAmI": Rule(AUTHENTICATED),
        "QueryAudit": Rule("audit.read"),
        "SetPlan": Rule(ANY_TENANT),
        "GetUsage": Rule("usage.read"),
        "ListPlans": Rule("usage.read"),
        "DeleteTenant": Rule(TENANTS_DELETE),
        "GetTenantDeletion": Rule(TENANTS_READ),
    },
)
"""AccessService's permission table (the registry's table includes it)."""

MAX_TTL_S = 10 * 365 * 24 * 3600
SEEN_SUBJECT = KEY_USE_ROOT
"""Where each process reports, every :data:`SEEN_EVERY_S`, the keys it has seen used (``.<service>``)."""
SEEN_EVERY_S = 30.0


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def key_message(record: KeyRecord, last_used: datetime | None = None) -> access_pb2.Key:
    return access_pb2.Key(
        id=record.id,
        name=record.name,
        tenant=record.tenant,
        role=record.role,
        grants=[access_pb2.Grant(resource=g.resource, role=g.role) for g in record.grants],
        creator=record.creator,
        created=timestamp(record.created),
        expires=timestamp(record.expires),
        revoked=timestamp(record.revoked),
        last_used=timestamp(last_used),
        state=record.state(),
    )


def tenant_for(caller: Principal, asked: str) -> str:
    """The tenant a call acts in: the caller's, or another when the caller is an operator."""
    if not asked or asked == caller.tenant:
        return caller.tenant
    if ANY_TENANT not in caller.permissions:
        raise PermissionDenied(
            f"acting in tenant {asked!r} needs the permission {ANY_TENANT} (role operator); key {caller.key_id} "
            f"has role {caller.role} in tenant {caller.tenant!r}",
            field="tenant",
        )
    check_name(asked, "tenant", what="a tenant")
    return asked


def limits_message(values: quotas.Limits | dict[str, int]) -> access_pb2.Limits:
    """Every limit of ``values`` (a :class:`~lepton_core.quotas.Limits`), or only those named (overrides)."""
    named = values.model_dump() if isinstance(values, quotas.Limits) else values
    return access_pb2.Limits(**named)


def plan_message(plan: quotas.TenantPlan) -> access_pb2.TenantPlan:
    record = plan.record
    return access_pb2.TenantPlan(
        tenant=plan.tenant,
        plan=plan.plan,
        limits=limits_message(plan.limits),
        overrides=limits_message(dict(plan.overrides)),
        assigned=plan.assigned,
        assigned_by=record.assigned_by if record else "",
        assigned_at=timestamp(record.assigned_at) if record else None,
    )


def deletion_message(record: DeletionRecord) -> access_pb2.TenantDeletion:
    return access_pb2.TenantDeletion(
        tenant=record.tenant,
        requested_by=record.requested_by,
        requested_at=timestamp(record.requested_at),
        keys=record.keys,
        purged=[
            access_pb2.TenantPurge(
                service=p.service,
                purged_at=timestamp(p.purged_at),
                records=p.records,
                objects=p.objects,
                messages=p.messages,
                deployments=p.deployments,
            )
            for p in record.purged
        ],
        pending=record.pending(),
        done_at=timestamp(record.done_at),
    )


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    def __init__(
        self,
        kv: KeyValue,
        book: KeyBook,
        js: JetStreamContext,
        plans: quotas.PlanBook | None = None,
        tenants: KeyValue | None = None,
        usage: UsageMeter | None = None,
        services: Sequence[str] = (),
    ) -> None:
        self._kv = kv
        self._book = book
        self._js = js
        self._last_used: dict[str, datetime] = {}
        self._plans = plans or quotas.PlanBook()
        self._tenants = tenants
        self._usage = usage
        self.deletions = (
            TenantDeletions(js, kv, tenants, book, usage.kv if usage else None, services) if tenants else None
        )
        if usage is not None and self.deletions is not None:
            usage.skip = self.deletions.deleting.__contains__

    # --- last used ---

    async def load_seen(self) -> None:
        for key in await self._seen_keys():
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                self._last_used[key[len(SEEN_PREFIX) :]] = datetime.fromtimestamp(float(entry.value), UTC)

    async def _seen_keys(self) -> list[str]:
        return await bucket_keys(self._js, KEYS_BUCKET, f"{SEEN_PREFIX}>")

    async def on_seen(self, msg: Msg) -> None:
        """A process's report of keys it saw: ``{"key_id": unix time}``; kept in the bucket."""
        try:
            seen = {str(k): float(v) for k, v in json.loads(msg.data).items()}
        except (ValueError, AttributeError):
            log.warning("a key-use report on %s is not valid JSON; ignored", msg.subject)
            return
        await self.note_seen(seen)

    async def note_seen(self, seen: dict[str, float]) -> None:
        for key_id, when in seen.items():
            if self._book.get(key_id) is None:
                continue
            at = datetime.fromtimestamp(when, UTC)
            previous = self._last_used.get(key_id)
            if previous is None or at > previous:
                self._last_used[key_id] = at
                await self._kv.put(seen_key(key_id), str(when).encode())

    # --- reads and writes of records ---

    async def _record(self, tenant: str, key: str) -> tuple[KeyRecord, int]:
        """The record of ``key`` in ``tenant``: by id, or the newest active key of that name (a
        rotation's old key, in its grace, shares the name); NOT_FOUND otherwise."""
        found = [r for r in self._book.records() if r.tenant == tenant and r.id == key]
        if not found:
            named = [r for r in self._book.records() if r.tenant == tenant and r.name == key and r.state() == "active"]
            found = sorted(named, key=lambda r: r.created, reverse=True)[:1]
        if not found:
            raise NotFound(f"no key {key!r} in tenant {tenant!r} (by id, or by the name of an active key)", field="key")
        entry = await self._kv.get(found[0].id)
        return KeyRecord.model_validate_json(entry.value or b"{}"), entry.revision or 0

    async def _write(self, record: KeyRecord, revision: int | None = None) -> None:
        data = record.model_dump_json().encode()
        try:
            if revision is None:
                await self._kv.create(record.id, data)
            else:
                await self._kv.update(record.id, data, last=revision)
        except KeyWrongLastSequenceError as exc:
            raise Conflict(f"key {record.id} changed while this call ran; try again") from exc
        # The answer comes after the book has the change, so a caller that revokes and then
        # calls this process sees the revocation.
        for _ in range(200):
            current = self._book.get(record.id)
            if current is not None and current == record:
                return
            await asyncio.sleep(0.01)

    def _check_name(self, tenant: str, name: str, but: str = "") -> str:
        check_name(name, "name", what="a key name")
        for record in self._book.records():
            if record.tenant == tenant and record.name == name and record.state() == "active" and record.id != but:
                raise AlreadyExists(
                    f"tenant {tenant!r} has an active key named {name!r} ({record.id}); revoke it or pick another name",
                    field="name",
                )
        return name

    def _check_reach(self, caller: Principal, role: str, grants: list[tuple[str, str]]) -> None:
        """Refuses a key that would hold a permission its maker lacks."""
        beyond = ROLES[role] - caller.permissions
        for resource, granted in grants:
            beyond |= {p for p in ROLES[granted] if not caller.allows(p, resource)}
        if beyond:
            raise PermissionDenied(
                f"key {caller.key_id} (role {caller.role}) cannot make or change a key with permissions it lacks: "
                + ", ".join(sorted(beyond)),
                field="role",
            )

    def _new_record(
        self, caller: Principal, tenant: str, role: str, name: str, ttl_s: int, grants: list[tuple[str, str]]
    ) -> tuple[KeyRecord, str]:
        if ttl_s < 0 or ttl_s > MAX_TTL_S:
            raise InvalidArgument(
                f"{ttl_s} is out of range; expected 0 (no expiry) to {MAX_TTL_S}", field="ttl_seconds"
            )
        now = datetime.now(UTC)
        secret = new_secret()
        record = KeyRecord(
            id=new_key_id(),
            name=name,
            tenant=tenant,
            role=role,
            digest=digest_of(secret),
            creator=caller.key_id or f"service:{caller.service}",
            created=now,
            expires=now + timedelta(seconds=ttl_s) if ttl_s else None,
            grants=check_grants(grants),
        )
        return record, secret

    # --- RPCs ---

    async def CreateKey(
        self, request: access_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.CreatedKey:
        caller = current_principal()
        tenant = tenant_for(caller, request.tenant)
        role = check_role(request.role)
        grants = [(g.resource, g.role) for g in request.grants]
        check_grants(grants)
        self._check_reach(caller, role, grants)
        name = self._check_name(tenant, request.name or f"{role}-{datetime.now(UTC):%Y%m%d-%H%M%S}")
        record, secret = self._new_record(caller, tenant, role, name, request.ttl_seconds, grants)
        await self._write(record)
        log.info("key %s (%s, role %s) created in tenant %s by %s", record.id, name, role, tenant, caller.label)
        return access_pb2.CreatedKey(key=key_message(record), secret=secret)

    async def ListKeys(
        self, request: access_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.ListKeysResponse:
        tenant = tenant_for(current_principal(), request.tenant)
        records = [
            r
            for r in self._book.records()
            if r.tenant == tenant and (request.include_inactive or r.state() == "active")
        ]
        records.sort(key=lambda r: r.created, reverse=True)
        return access_pb2.ListKeysResponse(keys=[key_message(r, self._last_used.get(r.id)) for r in records])

    async def _target(self, key: str, tenant: str, verb: str) -> tuple[Principal, str, KeyRecord, int]:
        """The caller, the tenant, and the record of the key a revoke or rotate names, which must
        hold no permission the caller lacks (no admin revokes or takes over an operator's key)."""
        caller = current_principal()
        tenant = tenant_for(caller, tenant)
        if not key:
            raise InvalidArgument(f"name the key to {verb}, by id or name", field="key")
        record, revision = await self._record(tenant, key)
        self._check_reach(caller, record.role, [(g.resource, g.role) for g in record.grants])
        return caller, tenant, record, revision

    async def RevokeKey(
        self, request: access_pb2.RevokeKeyRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.Key:
        caller, tenant, record, revision = await self._target(request.key, request.tenant, "revoke")
        if record.state() != "revoked":
            record = record.model_copy(update={"revoked": datetime.now(UTC)})
            await self._write(record, revision)
            log.info("key %s revoked in tenant %s by %s", record.id, tenant, caller.label)
        return key_message(record, self._last_used.get(record.id))

    async def RotateKey(
        self, request: access_pb2.RotateKeyRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.CreatedKey:
        caller, tenant, old, revision = await self._target(request.key, request.tenant, "rotate")
        if old.state() != "active":
            raise InvalidArgument(f"key {old.id} is {old.state()}; only an active key is rotated", field="key")
        grants = [(g.resource, g.role) for g in old.grants]
        if request.grace_seconds > 7 * 24 * 3600:
            raise InvalidArgument(
                f"{request.grace_seconds} is out of range; expected 0 to 604800 (a week)", field="grace_seconds"
            )
        ttl = int((old.expires - datetime.now(UTC)).total_seconds()) if old.expires else 0
        new, secret = self._new_record(caller, tenant, old.role, old.name, max(ttl, 1) if old.expires else 0, grants)
        await self._write(
            old.model_copy(update={"revoked": datetime.now(UTC) + timedelta(seconds=request.grace_seconds)}), revision
        )
        await self._write(new)
        log.info("key %s rotated to %s in tenant %s by %s", old.id, new.id, tenant, caller.label)
        return access_pb2.CreatedKey(key=key_message(new), secret=secret)

    async def WhoAmI(
        self, request: access_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.Principal:
        p = current_principal()
        return access_pb2.Principal(
            tenant=p.tenant,
            key_id=p.key_id,
            key_name=p.name,
            role=p.role,
            permissions=sorted(p.permissions),
            grants=[access_pb2.Grant(resource=r, role=g) for r, g in p.grants],
            expires=timestamp(p.expires),
        )

    async def QueryAudit(
        self, request: access_pb2.QueryAuditRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.QueryAuditResponse:
        caller = current_principal()
        tenant = request.tenant or caller.tenant
        if tenant == audit.ANONYMOUS:
            if ANY_TENANT not in caller.permissions:
                raise PermissionDenied(f"the refusals without a key need the permission {ANY_TENANT}", field="tenant")
        else:
            tenant = tenant_for(caller, request.tenant)
        since = check_timestamp(request.since, "since") if request.HasField("since") else None
        records, truncated = await audit.query(
            self._js,
            tenant,
            since=since,
            principal=request.principal,
            resource=request.resource,
            limit=request.limit,
        )
        return access_pb2.QueryAuditResponse(records=records, truncated=truncated)

    # --- plans and usage ---

    async def SetPlan(
        self, request: access_pb2.SetPlanRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.TenantPlan:
        caller = current_principal()
        if not request.tenant:
            raise InvalidArgument("name the tenant to put on a plan", field="tenant")
        tenant = tenant_for(caller, request.tenant)
        plan = quotas.check_plan(request.plan)
        overrides = quotas.check_overrides(
            {f.name: value for f, value in request.overrides.ListFields()}, field="overrides"
        )
        record = quotas.PlanRecord(
            tenant=tenant,
            plan=plan,
            overrides=overrides,
            assigned_by=caller.key_id or caller.label,
            assigned_at=datetime.now(UTC),
        )
        await self._put_plan(quotas.plan_key(tenant), record)
        log.info("tenant %s put on plan %s %s by %s", tenant, plan, overrides or "", caller.label)
        return plan_message(self._plans.plan_of(tenant))

    async def _put_plan(self, key: str, record: quotas.PlanRecord) -> None:
        if self._tenants is None:
            raise FailedPrecondition("this process keeps no plans (no tenants bucket)")
        await self._tenants.put(key, record.model_dump_json().encode())
        # As with keys: the answer comes once this process applies the plan it wrote.
        for _ in range(200):
            current = self._plans.plan_of(record.tenant)
            if record.tenant and current.record == record:
                return
            if not record.tenant and self._plans.default == record.plan:
                return
            await asyncio.sleep(0.01)

    async def ensure_default_plan(self, plan: str) -> None:
        """Writes the default plan (the registry's ``default_plan`` setting) unless the bucket says so already."""
        quotas.check_plan(plan, "default_plan")
        if self._tenants is None:
            return
        try:
            entry = await self._tenants.get(quotas.DEFAULT_KEY)
            if entry.value and quotas.PlanRecord.model_validate_json(entry.value).plan == plan:
                return
        except KeyNotFoundError:
            pass
        await self._put_plan(
            quotas.DEFAULT_KEY, quotas.PlanRecord(plan=plan, assigned_by="setting", assigned_at=datetime.now(UTC))
        )

    async def GetUsage(
        self, request: access_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.Usage:
        tenant = tenant_for(current_principal(), request.tenant)
        if self._usage is None:
            raise FailedPrecondition("this process meters no usage")
        plan = self._plans.plan_of(tenant)
        record = await self._usage.get(tenant)
        month = month_of(datetime.now(UTC))
        return access_pb2.Usage(
            tenant=tenant,
            plan=plan.plan,
            limits=[
                access_pb2.LimitUsage(limit=u.limit, used=u.used, maximum=u.maximum, metered=u.metered, unit=u.unit)
                for u in usage_of(plan, record, month)
            ],
            month=month,
            metered_at=timestamp(record.metered_at),
        )

    async def DeleteTenant(
        self, request: access_pb2.DeleteTenantRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.TenantDeletion:
        caller = current_principal()
        if self.deletions is None:
            raise FailedPrecondition("this process keeps no tenants (no tenants bucket)")
        record = await self.deletions.delete(request.tenant, request.confirm, caller.label, caller.tenant)
        return deletion_message(record)

    async def GetTenantDeletion(
        self, request: access_pb2.GetTenantDeletionRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.TenantDeletion:
        if self.deletions is None:
            raise FailedPrecondition("this process keeps no tenants (no tenants bucket)")
        return deletion_message(await self.deletions.get(request.tenant))

    async def ListPlans(
        self, request: access_pb2.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.ListPlansResponse:
        return access_pb2.ListPlansResponse(
            plans=[access_pb2.Plan(name=name, limits=limits_message(limits)) for name, limits in quotas.PLANS.items()],
            default_plan=self._plans.default,
        )


async def serve_access(
    nc: NATS,
    js: JetStreamContext,
    book: KeyBook,
    plans: quotas.PlanBook | None = None,
    usage: UsageMeter | None = None,
    default_plan: str = quotas.DEFAULT_PLAN,
    services: Sequence[str] = (),
) -> AccessServicer:
    """The servicer, with last-used times loaded, the processes' reports followed and the default plan written.

    ``services`` are those that erase a deleted tenant's data and report it (:mod:`lepton_core.tenant_deletion`).
    """
    servicer = AccessServicer(
        await js.key_value("keys"), book, js, plans, await js.key_value(quotas.TENANTS_BUCKET), usage, services
    )
    await servicer.ensure_default_plan(default_plan)
    await servicer.load_seen()
    await nc.subscribe(f"{SEEN_SUBJECT}.>", cb=servicer.on_seen)
    if servicer.deletions is not None:
        await servicer.deletions.load()
        await nc.subscribe(f"{PURGED_ROOT}.>", cb=servicer.deletions.on_report)
    return servicer


async def report_seen(nc: NATS, service: str, book: KeyBook) -> None:
    """Tells the registry which keys this process saw used since the last report."""
    seen = book.take_seen()
    if seen:
        await nc.publish(f"{SEEN_SUBJECT}.{service}", json.dumps(seen).encode())
