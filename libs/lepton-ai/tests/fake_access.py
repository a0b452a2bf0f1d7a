"""The fake platform's AccessService: API keys as records, an audit trail, plans and usage, and
tenant deletions, on the registry's port.

Served beside the fake registry as the platform serves it (fakes.py). Keys made here join
``fake.api_keys``, so their secrets can call the fake; a revoked one leaves it. The rules
are the platform's where the SDK shows them: a name defaults to ``<role>-<time>`` and is
unique among the tenant's active keys, a rotated key's old secret is revoked after its grace.
A deleted tenant's keys are erased at once; its services then report one a look
(``GetTenantDeletion``), in ``purging`` order, except the ``stalled`` ones, which never do.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.access.v1 import access_pb2, access_pb2_grpc

from .fake_services import INVALID, NOT_FOUND, abort

if TYPE_CHECKING:
    from .fakes import FakePlatform

ROLES: dict[str, tuple[str, ...]] = {
    "viewer": ("datasets.read", "models.read"),
    "inference": ("deployments.predict",),
    "editor": ("datasets.read", "datasets.write", "models.read", "models.write"),
    "deployer": ("deployments.manage", "models.read"),
    "admin": ("audit.read", "datasets.read", "datasets.write", "keys.manage", "models.read", "models.write"),
    "operator": ("audit.read", "keys.manage", "tenants.delete", "tenants.manage", "tenants.read"),
}


#: The services that erase a deleted tenant's part, in the order they report: the registry last,
#: as it erases the tenant's events after the others.
PURGING = ("data", "trainer", "evaluator", "deployer", "monitor", "registry")

#: What each service reports it erased: records, objects, messages, deployments.
PURGED: dict[str, tuple[int, int, int, int]] = {
    "data": (7, 3, 0, 0),
    "trainer": (4, 2, 5, 0),
    "evaluator": (2, 2, 0, 0),
    "deployer": (1, 0, 0, 1),
    "monitor": (3, 0, 120, 0),
    "registry": (6, 4, 42, 0),
}


def _stamp(moment: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(moment)
    return out


class FakeAccess(access_pb2_grpc.AccessServiceServicer):
    """Keys by id (with their secrets) and audit records a test adds."""

    add_to = staticmethod(access_pb2_grpc.add_AccessServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.keys: dict[str, access_pb2.Key] = {}  # by id, in the order made
        self.secrets: dict[str, str] = {}  # secret -> key id
        self.records: list[access_pb2.AuditRecord] = []  # oldest first
        self._ids = itertools.count(1)
        self.usage: dict[str, access_pb2.Usage] = {}  # what GetUsage answers, by tenant
        self.set_plans: list[access_pb2.SetPlanRequest] = []  # every SetPlan, in order
        self.deletions: dict[str, access_pb2.TenantDeletion] = {}  # by tenant, as GetTenantDeletion answers
        self.purging: tuple[str, ...] = PURGING  # the services a deletion waits on, in the order they report
        self.stalled: set[str] = set()  # services that never report: a deletion waits on them until its timeout

    # -- what tests set and read --------------------------------------------------------------

    def add_key(
        self,
        tenant: str,
        role: str,
        name: str,
        *,
        secret: str = "",
        ttl: timedelta | None = None,
        grants: list[access_pb2.Grant] | None = None,
        creator: str = "bootstrap",
    ) -> tuple[access_pb2.Key, str]:
        """A new active key and its secret (made up unless given), able to call the fake."""
        n = next(self._ids)
        now = datetime.now(UTC)
        key = access_pb2.Key(
            id=f"key_{n:012x}",
            name=name,
            tenant=tenant,
            role=role,
            grants=grants or [],
            creator=creator,
            created=_stamp(now + timedelta(microseconds=n)),  # strictly newer than the one before
        )
        if ttl is not None:
            key.expires.CopyFrom(_stamp(now + ttl))
        secret = secret or "lk_" + hashlib.sha256(f"fake secret {n}".encode()).hexdigest()[:40]
        with self.fake.lock:
            self.keys[key.id] = key
            self.secrets[secret] = key.id
            self.fake.api_keys[secret] = tenant
        return key, secret

    def add_record(self, **fields: object) -> access_pb2.AuditRecord:
        """An audit record (``time`` a datetime, default now; the other fields as in the proto)."""
        moment = fields.pop("time", None)
        record = access_pb2.AuditRecord(**fields)
        record.time.CopyFrom(_stamp(moment if isinstance(moment, datetime) else datetime.now(UTC)))
        with self.fake.lock:
            self.records.append(record)
        return record

    # -- helpers -------------------------------------------------------------------------------

    def _caller(self, context: grpc.ServicerContext) -> access_pb2.Key:
        auth = dict((m.key, m.value) for m in context.invocation_metadata()).get("authorization", "")
        key_id = self.secrets.get(auth.removeprefix("Bearer "), "")
        if key_id not in self.keys:
            abort(context, grpc.StatusCode.UNAUTHENTICATED, "authorization: unknown API key")
        return self.keys[key_id]

    def _answer(self, key: access_pb2.Key) -> access_pb2.Key:
        """The key as the platform answers: its state as of now."""
        out = access_pb2.Key()
        out.CopyFrom(key)
        now = datetime.now(UTC)
        if key.HasField("revoked") and key.revoked.ToDatetime(tzinfo=UTC) <= now:
            out.state = "revoked"
        elif key.HasField("expires") and key.expires.ToDatetime(tzinfo=UTC) <= now:
            out.state = "expired"
        else:
            out.state = "active"
        return out

    def _find(self, tenant: str, ref: str, context: grpc.ServicerContext) -> access_pb2.Key:
        for key in self.keys.values():
            if key.tenant == tenant and (key.id == ref or (key.name == ref and self._answer(key).state == "active")):
                return key
        abort(context, NOT_FOUND, f"key: no key {ref!r} in tenant {tenant!r} (by id, or by the name of an active key)")

    def _check_new(self, tenant: str, role: str, name: str, context: grpc.ServicerContext) -> None:
        if role not in ROLES:
            abort(context, INVALID, f"role: expected one of {', '.join(ROLES)}; got {role!r}")
        for key in self.keys.values():
            if key.tenant == tenant and key.name == name and self._answer(key).state == "active":
                abort(
                    context,
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"name: tenant {tenant!r} has an active key named {name!r} ({key.id}); revoke it or pick another",
                )

    def _created(self, key: access_pb2.Key, secret: str) -> access_pb2.CreatedKey:
        return access_pb2.CreatedKey(key=self._answer(key), secret=secret)

    # -- the RPCs --------------------------------------------------------------------------------

    def CreateKey(self, request: access_pb2.CreateKeyRequest, context: grpc.ServicerContext) -> access_pb2.CreatedKey:
        caller = self._caller(context)
        tenant = request.tenant or caller.tenant
        name = request.name or f"{request.role}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        with self.fake.lock:
            self._check_new(tenant, request.role, name, context)
            ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
            key, secret = self.add_key(
                tenant, request.role, name, ttl=ttl, grants=list(request.grants), creator=caller.id
            )
        return self._created(key, secret)

    def ListKeys(
        self, request: access_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> access_pb2.ListKeysResponse:
        tenant = request.tenant or self._caller(context).tenant
        with self.fake.lock:
            keys = [self._answer(k) for k in reversed(self.keys.values()) if k.tenant == tenant]
        return access_pb2.ListKeysResponse(keys=[k for k in keys if request.include_inactive or k.state == "active"])

    def RevokeKey(self, request: access_pb2.RevokeKeyRequest, context: grpc.ServicerContext) -> access_pb2.Key:
        tenant = request.tenant or self._caller(context).tenant
        with self.fake.lock:
            key = self._find(tenant, request.key, context)
            if self._answer(key).state != "revoked":  # a rotated key in its grace is revoked now
                key.revoked.CopyFrom(_stamp(datetime.now(UTC)))
            for secret in [s for s, i in self.secrets.items() if i == key.id]:
                self.fake.api_keys.pop(secret, None)
            return self._answer(key)

    def RotateKey(self, request: access_pb2.RotateKeyRequest, context: grpc.ServicerContext) -> access_pb2.CreatedKey:
        caller = self._caller(context)
        tenant = request.tenant or caller.tenant
        with self.fake.lock:
            old = self._find(tenant, request.key, context)
            if self._answer(old).state != "active":
                abort(
                    context, INVALID, f"key: key {old.id} is {self._answer(old).state}; only an active key is rotated"
                )
            now = datetime.now(UTC)
            ttl = old.expires.ToDatetime(tzinfo=UTC) - now if old.HasField("expires") else None
            old.revoked.CopyFrom(_stamp(now + timedelta(seconds=request.grace_seconds)))
            if not request.grace_seconds:
                for secret in [s for s, i in self.secrets.items() if i == old.id]:
                    self.fake.api_keys.pop(secret, None)
            key, secret = self.add_key(tenant, old.role, old.name, ttl=ttl, grants=list(old.grants), creator=caller.id)
        return self._created(key, secret)

    def WhoAmI(self, request: access_pb2.WhoAmIRequest, context: grpc.ServicerContext) -> access_pb2.Principal:
        key = self._caller(context)
        principal = access_pb2.Principal(
            tenant=key.tenant,
            key_id=key.id,
            key_name=key.name,
            role=key.role,
            permissions=sorted(ROLES.get(key.role, ())),
            grants=key.grants,
        )
        if key.HasField("expires"):
            principal.expires.CopyFrom(key.expires)
        return principal

    def QueryAudit(
        self, request: access_pb2.QueryAuditRequest, context: grpc.ServicerContext
    ) -> access_pb2.QueryAuditResponse:
        tenant = request.tenant or self._caller(context).tenant
        since = (
            request.since.ToDatetime(tzinfo=UTC)
            if request.HasField("since")
            else datetime.now(UTC) - timedelta(hours=24)
        )
        principal = request.principal.removeprefix("key:")
        resource = request.resource
        limit = min(request.limit or 1000, 1000)
        with self.fake.lock:
            found = [
                r
                for r in self.records
                if r.tenant == tenant
                and r.time.ToDatetime(tzinfo=UTC) >= since
                and (not principal or r.key_id == principal)
                and (
                    not resource
                    or r.resource == resource
                    or (resource.endswith("/") and r.resource.startswith(resource))
                )
            ]
        return access_pb2.QueryAuditResponse(records=found[:limit], truncated=len(found) > limit)

    # -- plans and usage: the platform's presets, usage as a test sets it -------------------------

    PLANS = {
        "trial": access_pb2.Limits(stored_bytes=2**30, datasets=10, deployments=2, job_run_seconds=1800),
        "team": access_pb2.Limits(stored_bytes=100 * 2**30, datasets=500, deployments=25, job_run_seconds=86400),
        "unlimited": access_pb2.Limits(stored_bytes=0, datasets=0, deployments=0, job_run_seconds=0),
    }

    def SetPlan(self, request: access_pb2.SetPlanRequest, context: grpc.ServicerContext) -> access_pb2.TenantPlan:
        caller = self._caller(context)
        if "tenants.manage" not in ROLES.get(caller.role, ()):
            abort(context, grpc.StatusCode.PERMISSION_DENIED, "SetPlan needs the permission tenants.manage")
        if request.plan not in self.PLANS:
            abort(context, INVALID, f"plan: {request.plan!r} is not a plan; expected one of {', '.join(self.PLANS)}")
        with self.fake.lock:
            self.set_plans.append(request)
        limits = access_pb2.Limits()
        limits.CopyFrom(self.PLANS[request.plan])
        limits.MergeFrom(request.overrides)
        answer = access_pb2.TenantPlan(
            tenant=request.tenant,
            plan=request.plan,
            limits=limits,
            overrides=request.overrides,
            assigned=True,
            assigned_by=caller.id,
        )
        answer.assigned_at.CopyFrom(_stamp(datetime.now(UTC)))
        return answer

    def GetUsage(self, request: access_pb2.GetUsageRequest, context: grpc.ServicerContext) -> access_pb2.Usage:
        tenant = request.tenant or self._caller(context).tenant
        with self.fake.lock:
            return self.usage.get(tenant) or access_pb2.Usage(tenant=tenant, plan="unlimited", month="2025-01")

    def ListPlans(
        self, request: access_pb2.ListPlansRequest, context: grpc.ServicerContext
    ) -> access_pb2.ListPlansResponse:
        self._caller(context)
        plans = [access_pb2.Plan(name=name, limits=limits) for name, limits in self.PLANS.items()]
        return access_pb2.ListPlansResponse(plans=plans, default_plan="unlimited")

    # -- deleting a tenant: its keys at once, its services one a look -----------------------------

    def _may_delete(self, context: grpc.ServicerContext) -> access_pb2.Key:
        caller = self._caller(context)
        if "tenants.delete" not in ROLES.get(caller.role, ()):
            abort(context, grpc.StatusCode.PERMISSION_DENIED, "tenants.delete: only role operator deletes tenants")
        return caller

    def DeleteTenant(
        self, request: access_pb2.DeleteTenantRequest, context: grpc.ServicerContext
    ) -> access_pb2.TenantDeletion:
        caller = self._may_delete(context)
        if not request.tenant:
            abort(context, INVALID, "tenant: name the tenant to delete")
        if request.confirm != request.tenant:
            abort(
                context,
                INVALID,
                f"confirm: must be the tenant's name, {request.tenant!r}, again (a deletion cannot be undone); "
                f"got {request.confirm!r}",
            )
        with self.fake.lock:
            if request.tenant not in self.deletions:  # deleting again answers the deletion under way
                erased = [k for k in self.keys.values() if k.tenant == request.tenant]
                for key in erased:
                    del self.keys[key.id]
                for secret in [s for s, i in self.secrets.items() if i not in self.keys]:
                    del self.secrets[secret]
                    self.fake.api_keys.pop(secret, None)
                deletion = access_pb2.TenantDeletion(
                    tenant=request.tenant, requested_by=caller.id, keys=len(erased), pending=self.purging
                )
                deletion.requested_at.CopyFrom(_stamp(datetime.now(UTC)))
                self.deletions[request.tenant] = deletion
            return self.deletions[request.tenant]

    def GetTenantDeletion(
        self, request: access_pb2.GetTenantDeletionRequest, context: grpc.ServicerContext
    ) -> access_pb2.TenantDeletion:
        self._may_delete(context)
        with self.fake.lock:
            deletion = self.deletions.get(request.tenant)
            if deletion is None:
                abort(context, NOT_FOUND, f"tenant: tenant {request.tenant!r} was never deleted")
            reporting = next((s for s in deletion.pending if s not in self.stalled), None)
            if reporting is not None:
                records, objects, messages, deployments = PURGED.get(reporting, (0, 0, 0, 0))
                purge = access_pb2.TenantPurge(
                    service=reporting, records=records, objects=objects, messages=messages, deployments=deployments
                )
                purge.purged_at.CopyFrom(_stamp(datetime.now(UTC)))
                deletion.purged.append(purge)
                deletion.pending.remove(reporting)
            if not deletion.pending and not deletion.HasField("done_at"):
                deletion.done_at.CopyFrom(_stamp(datetime.now(UTC)))
            return deletion
