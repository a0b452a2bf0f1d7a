"""``client.keys``, ``client.whoami()``, ``client.audit()``, ``client.usage()``, ``client.plans`` and
``client.tenants``: API keys as records, the audit trail, each tenant's plan and usage, and deleting
a tenant.

The platform's ``AccessService`` (``protos/lepton/access/v1/access.proto``), served on the
registry's address. A key's secret is shown once, when the key is created or rotated: the
platform keeps only its digest, and no other call returns it. Managing keys needs the
permission ``keys.manage`` (role admin within its tenant, role operator in any); reading the
audit trail needs ``audit.read``; deleting a tenant needs ``tenants.delete`` (role operator).

>>> created = client.keys.create("editor", name="ci", expires="30d", grants={"model/churn": "deployer"})
>>> created.secret  # store it now: it is never shown again
>>> client.keys.revoke(created.key)
>>> client.audit(since=timedelta(hours=1), resource="model/")
>>> client.usage()["datasets"]  # LimitUsage(limit='datasets', used=3, maximum=10, ...)
>>> client.plans.set("acme", "team")  # role operator
>>> client.tenants.delete("acme", confirm="acme")  # role operator; cannot be undone
"""

from __future__ import annotations

import builtins
import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp
from lepton.access.v1 import access_pb2, access_pb2_grpc

from lepton_ai import _progress
from lepton_ai._durations import Duration, whole_seconds
from lepton_ai._transport import Transport, message
from lepton_ai.errors import InvalidArgument, Unavailable

__all__ = [
    "AuditRecord",
    "AuditTrail",
    "CreatedKey",
    "Grants",
    "KeyInfo",
    "Keys",
    "LimitUsage",
    "PlanInfo",
    "Plans",
    "Principal",
    "TenantDeletion",
    "TenantPlan",
    "TenantPurge",
    "Tenants",
    "Usage",
]

#: AccessService is served by the registry's process, on its port.
SERVICE = "registry"

#: Seconds between looks at a tenant's deletion while :meth:`Tenants.delete` waits for it.
DELETION_POLL_S = 0.25

#: Permissions beyond a key's role, each on one resource: ``{"model/churn": "editor"}`` or
#: ``[("model/churn", "editor"), ("dataset/ds_1", "viewer")]``.
Grants = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True)
class KeyInfo:
    """An API key as the platform records it; never its secret.

    Attributes:
        id: ``key_`` and 12 hex digits; safe to show, log and audit.
        name: Its label (``"ci"``), unique among the tenant's active keys.
        tenant: The tenant it acts as.
        role: ``viewer``, ``inference``, ``editor``, ``deployer``, ``admin`` or ``operator``.
        grants: ``(resource, role)`` pairs beyond its role: ``("model/churn", "deployer")``.
        creator: The id of the key that created it, or ``"bootstrap"``.
        created: When it was created (UTC).
        expires: When it stops working (UTC); None: never, until revoked.
        revoked: When it was revoked (UTC); None: not revoked.
        last_used: The last call any service saw with it, to within a minute (UTC); None: never used.
        state: ``"active"``, ``"expired"`` or ``"revoked"``, as of the answer.
    """

    id: str
    name: str
    tenant: str
    role: str
    grants: tuple[tuple[str, str], ...]
    creator: str
    created: datetime
    expires: datetime | None
    revoked: datetime | None
    last_used: datetime | None
    state: str


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret, which the platform shows this once.

    Send the secret as ``authorization: Bearer <secret>`` (``la.Client(api_key=secret)``,
    ``LEPTON_API_KEY``). It is left out of ``repr`` (and so of ``str``, logs and tracebacks
    that show the object); read ``.secret`` to store it.
    """

    key: KeyInfo
    secret: str = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """The caller as the platform sees it (:meth:`lepton_ai.Client.whoami`).

    Attributes:
        tenant: The tenant the key acts as.
        key_id: The key's id (``key_...``).
        key_name: The key's label.
        role: The key's role.
        permissions: What the role allows (``"models.read"``, ``"keys.manage"``, ...).
        grants: ``(resource, role)`` pairs beyond the role.
        expires: When the key stops working (UTC); None: never, until revoked.
    """

    tenant: str
    key_id: str
    key_name: str
    role: str
    permissions: tuple[str, ...]
    grants: tuple[tuple[str, str], ...]
    expires: datetime | None


@dataclass(frozen=True)
class AuditRecord:
    """One mutating call or one refusal, as the service that served it recorded it.

    Attributes:
        time: When (UTC).
        tenant: The tenant it was in.
        principal: ``"key:<id>"`` for a caller's key, ``"service:<name>"`` when a service acted
            on its own (a retraining policy), ``"anonymous"`` for a call without a valid key.
        key_id: The caller's key id, or ``""``.
        via: The service that acted on the caller's behalf, when one did (``"trainer"``).
        service: The service that served it: data, trainer, evaluator, registry, deployer,
            monitor or gateway.
        method: The full gRPC method, ``"/lepton.data.v1.DataService/DeleteDataset"``.
        resource: What the call was about (``"dataset/<id>"``, ``"model/<name>"``), or ``""``.
        permission: The permission the call needed.
        outcome: The status code's name: ``"OK"``, ``"PERMISSION_DENIED"``, ...
        detail: The refusal's or failure's message; ``""`` when it succeeded.
        trace_id: The call's W3C trace id (32 hex digits): find it in your traces.
    """

    time: datetime
    tenant: str
    principal: str
    key_id: str
    via: str
    service: str
    method: str
    resource: str
    permission: str
    outcome: str
    detail: str
    trace_id: str

    @property
    def method_name(self) -> str:
        """The method's own name: ``"DeleteDataset"`` for ``"/lepton.data.v1.DataService/DeleteDataset"``."""
        return self.method.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class AuditTrail(Sequence[AuditRecord]):
    """Audit records, oldest first: index it, iterate it, take its ``len``.

    Attributes:
        records: The records, oldest first.
        truncated: More records matched than the ``limit`` asked for: narrow the query
            (a later ``since``, a ``principal``, a ``resource``) to see the rest.
    """

    records: tuple[AuditRecord, ...]
    truncated: bool

    @overload
    def __getitem__(self, index: int) -> AuditRecord: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[AuditRecord, ...]: ...

    def __getitem__(self, index: int | slice) -> AuditRecord | tuple[AuditRecord, ...]:
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.records)


@dataclass(frozen=True)
class LimitUsage:
    """One limit of a tenant's plan and what the tenant uses of it.

    Attributes:
        limit: The limit's name, as a ``ResourceExhausted`` refusal names it: ``stored_bytes``,
            ``datasets``, ``concurrent_jobs``, ``queued_jobs``, ``job_run_seconds``,
            ``trials_per_search``, ``deployments``, ``predictions_per_second``, ``predictions_per_month``.
        used: What the tenant uses now (this month, for ``predictions_per_month``); 0 when not metered.
        maximum: The limit; 0: no limit.
        metered: False for limits on one thing at a time (``job_run_seconds``,
            ``trials_per_search``) or on a rate (``predictions_per_second``): no total to show.
        unit: ``"bytes"``, ``"s"``, ``"/s"``, or ``""`` for a count.
    """

    limit: str
    used: int
    maximum: int
    metered: bool
    unit: str


@dataclass(frozen=True)
class Usage:
    """A tenant's plan and its usage of each limit (:meth:`lepton_ai.Client.usage`); ``usage["datasets"]``
    is one :class:`LimitUsage`.

    Attributes:
        tenant: Whose usage.
        plan: The tenant's plan (``trial``, ``team``, ``unlimited``).
        limits: Every limit, in the platform's order.
        month: The month ``predictions_per_month`` counts, ``"2025-01"`` (UTC).
        metered_at: When the platform last metered an event of the tenant (UTC); None: never yet.
    """

    tenant: str
    plan: str
    limits: tuple[LimitUsage, ...]
    month: str
    metered_at: datetime | None

    def __getitem__(self, limit: str) -> LimitUsage:
        for line in self.limits:
            if line.limit == limit:
                return line
        raise KeyError(f"{limit!r} is not a limit; expected one of {', '.join(u.limit for u in self.limits)}")


@dataclass(frozen=True)
class PlanInfo:
    """A plan the platform offers (:meth:`Plans.list`).

    Attributes:
        name: ``trial``, ``team`` or ``unlimited``.
        limits: Each limit's value; 0: no limit.
        default: Whether a tenant without a plan of its own is on this one.
    """

    name: str
    limits: dict[str, int]
    default: bool


@dataclass(frozen=True)
class TenantPlan:
    """A tenant's plan as an operator set it (:meth:`Plans.set`).

    Attributes:
        tenant: The tenant.
        plan: Its plan.
        limits: The limits that apply: the plan's, with ``overrides``.
        overrides: The limits of this tenant alone.
        assigned: False when the tenant has no plan of its own (the default applies).
        assigned_by: The key id that assigned it.
        assigned_at: When (UTC); None when not assigned.
    """

    tenant: str
    plan: str
    limits: dict[str, int]
    overrides: dict[str, int]
    assigned: bool
    assigned_by: str
    assigned_at: datetime | None


class Plans:
    """The plans tenants are on; reached as ``client.plans``.

    Listing needs ``usage.read`` (roles admin and operator); putting a tenant on a plan needs
    ``tenants.manage`` (role operator).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def list(self) -> builtins.list[PlanInfo]:
        """The plans there are, each with its limits, and which is the default."""
        answer = self._t.call(SERVICE, _stub(self._t).ListPlans, access_pb2.ListPlansRequest())
        return [PlanInfo(p.name, _limits(p.limits), p.name == answer.default_plan) for p in answer.plans]

    def set(self, tenant: str, plan: str, *, limits: Mapping[str, int] | None = None) -> TenantPlan:
        """Puts ``tenant`` on ``plan``, with ``limits`` of its own where it differs.

        Args:
            tenant: The tenant.
            plan: ``trial``, ``team`` or ``unlimited`` (:meth:`list`).
            limits: Limits of this tenant alone, by name (``{"datasets": 50}``; 0: no limit);
                the others are the plan's.

        Raises:
            InvalidArgument: Not a plan, not a limit, or a negative value.
            PermissionDenied: Your key is not an operator's.
        """
        request = message(access_pb2.SetPlanRequest, tenant=tenant, plan=plan)
        for name, value in (limits or {}).items():
            if name not in access_pb2.Limits.DESCRIPTOR.fields_by_name:
                known = ", ".join(access_pb2.Limits.DESCRIPTOR.fields_by_name)
                raise InvalidArgument(f"limits: {name!r} is not a limit; expected one of {known}")
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"limits.{name}: expected a whole number (0: no limit), got {value!r}")
            setattr(request.overrides, name, value)
        pb = self._t.call(SERVICE, _stub(self._t).SetPlan, request)
        return TenantPlan(
            tenant=pb.tenant,
            plan=pb.plan,
            limits=_limits(pb.limits),
            overrides=_limits(pb.overrides),
            assigned=pb.assigned,
            assigned_by=pb.assigned_by,
            assigned_at=_when(pb.assigned_at, pb.HasField("assigned_at")),
        )


def usage(transport: Transport, tenant: str | None) -> Usage:
    """A tenant's plan and usage (``GetUsage``); :meth:`lepton_ai.Client.usage` says more."""
    pb = transport.call(SERVICE, _stub(transport).GetUsage, access_pb2.GetUsageRequest(tenant=tenant or ""))
    return Usage(
        tenant=pb.tenant,
        plan=pb.plan,
        limits=tuple(LimitUsage(u.limit, u.used, u.maximum, u.metered, u.unit) for u in pb.limits),
        month=pb.month,
        metered_at=_when(pb.metered_at, pb.HasField("metered_at")),
    )


def _limits(pb: access_pb2.Limits) -> dict[str, int]:
    """The limits a message sets, by name."""
    return {f.name: int(value) for f, value in pb.ListFields()}


@dataclass(frozen=True)
class TenantPurge:
    """What one service erased of a deleted tenant (:attr:`TenantDeletion.purged`).

    Attributes:
        service: The service: ``data``, ``trainer``, ``evaluator``, ``registry``, ``deployer``
            or ``monitor``.
        purged_at: When it had erased its part (UTC).
        records: Records erased from its key-value buckets.
        objects: Objects erased from its object stores.
        messages: Messages erased from streams (the job queue, prediction logs, events).
        deployments: Deployments unloaded from serving (the deployer's).
    """

    service: str
    purged_at: datetime
    records: int
    objects: int
    messages: int
    deployments: int


@dataclass(frozen=True)
class TenantDeletion:
    """A tenant's deletion and how far it has come (:meth:`Tenants.delete`, :meth:`Tenants.deletion`).

    Attributes:
        tenant: The deleted tenant.
        requested_by: The id of the key that deleted it.
        requested_at: When (UTC).
        keys: How many of the tenant's keys were erased (at once, on the request).
        purged: The services that have erased their part, in the order they did.
        pending: The services still to report.
        done_at: When every service had erased its part and the tenant's events were erased (UTC);
            None: not yet.
    """

    tenant: str
    requested_by: str
    requested_at: datetime
    keys: int
    purged: tuple[TenantPurge, ...]
    pending: tuple[str, ...]
    done_at: datetime | None

    @property
    def done(self) -> bool:
        """Whether nothing of the tenant is left: ``done_at`` is set."""
        return self.done_at is not None


class Tenants:
    """Whole tenants, deleted for good; reached as ``client.tenants``.

    Calls need the permissions ``tenants.delete`` and ``tenants.read`` (role operator).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def delete(
        self,
        tenant: str,
        *,
        confirm: str,
        wait: bool = True,
        timeout: float = 120.0,
        progress: bool | None = None,
    ) -> TenantDeletion:
        """Deletes ``tenant`` and everything it has; this cannot be undone.

        The tenant's keys are refused at once and erased, its plan and usage erased; then each
        service erases what it keeps of the tenant (records, objects, the job queue, prediction
        logs, serving models), and the registry erases the tenant's events last. The platform
        answers at once; with ``wait`` this looks again every :data:`DELETION_POLL_S` seconds
        until the last service has reported.

        Args:
            tenant: The tenant to delete.
            confirm: ``tenant`` again. The platform refuses the deletion when it differs.
            wait: Wait until every service has erased its part; False: return the deletion as
                the platform answered it (:meth:`deletion` follows it).
            timeout: Seconds to wait, with ``wait``.
            progress: Draw a bar of the services done of all, on stderr, while waiting; None: on a
                terminal or in a notebook.

        Returns:
            The deletion: done (``done_at`` set) with ``wait``, else as requested.

        Raises:
            InvalidArgument: ``confirm`` is not ``tenant``, or ``timeout`` is not above 0 (here,
                before any call).
            PermissionDenied: Your key is not an operator's.
            Unavailable: ``wait``, and services had still to report after ``timeout``; the message
                names them. The deletion goes on: :meth:`deletion` follows it.
        """
        if wait and not timeout > 0:
            raise InvalidArgument(f"timeout: must be more than 0 seconds (or wait=False), got {timeout}")
        request = access_pb2.DeleteTenantRequest(tenant=tenant, confirm=confirm)
        deletion = _deletion(self._t.call(SERVICE, _stub(self._t).DeleteTenant, request))
        if not wait or deletion.done:
            return deletion
        return self._wait(deletion, timeout, _progress.wanted(progress))

    def deletion(self, tenant: str) -> TenantDeletion:
        """How far a tenant's deletion has come: the services that have erased their part and
        those still to report.

        Raises:
            NotFound: The tenant was never deleted.
            PermissionDenied: Your key is not an operator's.
        """
        request = access_pb2.GetTenantDeletionRequest(tenant=tenant)
        return _deletion(self._t.call(SERVICE, _stub(self._t).GetTenantDeletion, request))

    def _wait(self, deletion: TenantDeletion, timeout: float, show: bool) -> TenantDeletion:
        """Looks again until ``deletion`` is done; Unavailable naming the pending services at ``timeout``."""
        deadline = time.monotonic() + timeout
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(_deletion_bar(deletion)) if show else None
            while True:
                if bar is not None:
                    _advance(bar, deletion)
                if deletion.done:
                    return deletion
                left = deadline - time.monotonic()
                if left <= 0:
                    waiting = ", ".join(deletion.pending) or "none (the platform has not marked it done)"
                    raise Unavailable(
                        f"timeout: tenant {deletion.tenant}'s deletion is not done after {timeout:g} s; still to "
                        f"report: {waiting}. It goes on when they run: follow it with "
                        f"client.tenants.deletion({deletion.tenant!r}) or `lepton tenants deletion {deletion.tenant}`",
                        code="DEADLINE_EXCEEDED",
                    )
                time.sleep(min(DELETION_POLL_S, left))
                deletion = self.deletion(deletion.tenant)


def _deletion_bar(deletion: TenantDeletion) -> _progress.ProgressBar:
    """A bar of the services that have erased their part, of all that have a part to erase."""
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    total = len(deletion.purged) + len(deletion.pending)
    return _progress.ProgressBar(f"delete tenant {deletion.tenant}", total, *columns)


def _advance(bar: _progress.ProgressBar, deletion: TenantDeletion) -> None:
    waiting = f": waiting on {', '.join(deletion.pending)}" if deletion.pending else ""
    bar.update(
        completed=len(deletion.purged),
        total=len(deletion.purged) + len(deletion.pending),
        description=f"delete tenant {deletion.tenant}{waiting}",
    )


class Keys:
    """The API keys of a tenant; reached as ``client.keys``.

    Calls need the permission ``keys.manage``: role admin (within its own tenant) or role
    operator (in any tenant, named by ``tenant=``).
    """

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create(
        self,
        role: str,
        *,
        name: str,
        tenant: str | None = None,
        expires: Duration | None = None,
        grants: Grants | None = None,
    ) -> CreatedKey:
        """A new key, and its secret: the only time the platform shows it.

        Args:
            role: ``viewer``, ``inference``, ``editor``, ``deployer``, ``admin`` or ``operator``.
            name: A label people recognise (``"ci"``, ``"alice-laptop"``), unique among the
                tenant's active keys; ``""``: the platform names it ``<role>-<YYYYMMDD-HHMMSS>``.
            tenant: The tenant it acts as; None: yours. Another tenant needs role operator.
            expires: How long it lives: a ``timedelta``, seconds, or ``"30d"``, ``"12h"``,
                ``"90m"``; None: until revoked.
            grants: Permissions beyond ``role``, each on one resource (``"model/<name>"`` or
                ``"dataset/<id>"``) with role ``viewer``, ``editor`` or ``deployer``:
                ``{"model/churn": "deployer"}`` or ``[("model/churn", "deployer")]``.

        Returns:
            The key's record and its ``secret``; the secret is not in the result's ``repr``.

        Raises:
            InvalidArgument: A bad ``expires`` or ``grants`` (here, before any call), or a
                role, name or grant the platform refuses.
            Conflict: An active key of the tenant has that name already.
            PermissionDenied: Your key may not manage keys (of that tenant).
        """
        request = message(
            access_pb2.CreateKeyRequest,
            tenant=tenant or "",
            role=role,
            name=name,
            grants=_grants_pb(grants),
        )
        if expires is not None:
            request.ttl_seconds = whole_seconds(expires, "expires", zero="the key never expires")
        return _created(self._t.call(SERVICE, self._stub().CreateKey, request))

    def list(self, *, tenant: str | None = None, include_inactive: bool = False) -> builtins.list[KeyInfo]:
        """The keys of a tenant, newest first; never a secret.

        Args:
            tenant: Whose keys; None: yours. Another tenant needs role operator.
            include_inactive: Also the revoked and expired keys.
        """
        request = message(access_pb2.ListKeysRequest, tenant=tenant or "", include_inactive=include_inactive)
        return [_key(k) for k in self._t.call(SERVICE, self._stub().ListKeys, request).keys]

    def revoke(self, key: str | KeyInfo, *, tenant: str | None = None) -> KeyInfo:
        """Refuses a key on every service within two seconds; its record stays, marked revoked.

        Args:
            key: The key's id or name, or its :class:`KeyInfo`.
            tenant: Its tenant; None: yours (or the ``KeyInfo``'s).

        Returns:
            The key's record, now revoked.

        Raises:
            NotFound: No such key in that tenant.
        """
        ref, tenant = _reference(key, tenant)
        request = message(access_pb2.RevokeKeyRequest, key=ref, tenant=tenant)
        return _key(self._t.call(SERVICE, self._stub().RevokeKey, request))

    def rotate(self, key: str | KeyInfo, *, tenant: str | None = None, grace: Duration | None = None) -> CreatedKey:
        """A new secret for the same name, role and grants; the old key is revoked, or keeps
        working for ``grace``.

        Args:
            key: The key's id or name, or its :class:`KeyInfo`.
            tenant: Its tenant; None: yours (or the ``KeyInfo``'s).
            grace: How long the old secret keeps working (``"1h"``, a ``timedelta``, seconds),
                so that what uses it can move to the new one; None: revoked at once.

        Returns:
            The new key's record and its secret, shown this once.

        Raises:
            NotFound: No such key in that tenant.
        """
        ref, tenant = _reference(key, tenant)
        request = message(access_pb2.RotateKeyRequest, key=ref, tenant=tenant)
        if grace is not None:
            request.grace_seconds = whole_seconds(grace, "grace")
        return _created(self._t.call(SERVICE, self._stub().RotateKey, request))

    def _stub(self) -> access_pb2_grpc.AccessServiceStub:
        return _stub(self._t)


def whoami(transport: Transport) -> Principal:
    """The caller as the platform sees it (``WhoAmI``); :meth:`lepton_ai.Client.whoami` says more."""
    pb = transport.call(SERVICE, _stub(transport).WhoAmI, access_pb2.WhoAmIRequest())
    return Principal(
        tenant=pb.tenant,
        key_id=pb.key_id,
        key_name=pb.key_name,
        role=pb.role,
        permissions=tuple(pb.permissions),
        grants=_grants(pb.grants),
        expires=_when(pb.expires, pb.HasField("expires")),
    )


def audit(
    transport: Transport,
    since: datetime | timedelta | None,
    *,
    principal: str | None,
    resource: str | None,
    limit: int,
    tenant: str | None,
) -> AuditTrail:
    """Audit records (``QueryAudit``); :meth:`lepton_ai.Client.audit` says more."""
    if limit < 1:
        raise InvalidArgument(f"limit: must be at least 1 (the platform gives at most 1000), got {limit}")
    request = message(
        access_pb2.QueryAuditRequest,
        principal=principal or "",
        resource=resource or "",
        limit=limit,
        tenant=tenant or "",
    )
    if since is not None:
        start = datetime.now(UTC) - since if isinstance(since, timedelta) else since.astimezone(UTC)
        request.since.FromDatetime(start)
    answer = transport.call(SERVICE, _stub(transport).QueryAudit, request)
    return AuditTrail(records=tuple(_record(r) for r in answer.records), truncated=answer.truncated)


# -- wire to types --------------------------------------------------------------------------------


def _stub(transport: Transport) -> access_pb2_grpc.AccessServiceStub:
    return access_pb2_grpc.AccessServiceStub(transport.channel(SERVICE))


def _reference(key: str | KeyInfo, tenant: str | None) -> tuple[str, str]:
    """The key's id or name and its tenant, for a request: a ``KeyInfo`` knows both."""
    if isinstance(key, KeyInfo):
        return key.id, tenant or key.tenant
    return key, tenant or ""


def _grants_pb(grants: Grants | None) -> builtins.list[access_pb2.Grant]:
    """``grants`` as the wire's Grant messages; a shape that is not one raises InvalidArgument."""
    if grants is None:
        return []
    if isinstance(grants, str | bytes):
        raise InvalidArgument(
            "grants: expected a mapping of resource to role ({'model/churn': 'editor'}) or (resource, role) "
            f"pairs ([('model/churn', 'editor')]); got the string {grants!r}"
        )
    pairs = grants.items() if isinstance(grants, Mapping) else grants
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidArgument(
                f"grants[{i}]: expected a (resource, role) pair such as ('model/churn', 'editor'), got {pair!r}"
            )
        resource, role = pair
        if not isinstance(resource, str) or not isinstance(role, str) or not resource or not role:
            raise InvalidArgument(
                f"grants[{i}]: expected a resource and a role, both non-empty strings, such as "
                f"('model/churn', 'editor'); got {pair!r}"
            )
        out.append(access_pb2.Grant(resource=resource, role=role))
    return out


def _grants(grants: Iterable[access_pb2.Grant]) -> tuple[tuple[str, str], ...]:
    return tuple((g.resource, g.role) for g in grants)


def _when(stamp: Timestamp, present: bool) -> datetime | None:
    """An optional timestamp field as an aware UTC datetime; unset is None."""
    return stamp.ToDatetime(tzinfo=UTC) if present else None


def _deletion(pb: access_pb2.TenantDeletion) -> TenantDeletion:
    return TenantDeletion(
        tenant=pb.tenant,
        requested_by=pb.requested_by,
        requested_at=pb.requested_at.ToDatetime(tzinfo=UTC),
        keys=pb.keys,
        purged=tuple(
            TenantPurge(
                service=p.service,
                purged_at=p.purged_at.ToDatetime(tzinfo=UTC),
                records=p.records,
                objects=p.objects,
                messages=p.messages,
                deployments=p.deployments,
            )
            for p in pb.purged
        ),
        pending=tuple(pb.pending),
        done_at=_when(pb.done_at, pb.HasField("done_at")),
    )


def _key(pb: access_pb2.Key) -> KeyInfo:
    return KeyInfo(
        id=pb.id,
        name=pb.name,
        tenant=pb.tenant,
        role=pb.role,
        grants=_grants(pb.grants),
        creator=pb.creator,
        created=pb.created.ToDatetime(tzinfo=UTC),
        expires=_when(pb.expires, pb.HasField("expires")),
        revoked=_when(pb.revoked, pb.HasField("revoked")),
        last_used=_when(pb.last_used, pb.HasField("last_used")),
        state=pb.state,
    )


def _created(pb: access_pb2.CreatedKey) -> CreatedKey:
    return CreatedKey(key=_key(pb.key), secret=pb.secret)


def _record(pb: access_pb2.AuditRecord) -> AuditRecord:
    return AuditRecord(
        time=pb.time.ToDatetime(tzinfo=UTC),
        tenant=pb.tenant,
        principal=pb.principal,
        key_id=pb.key_id,
        via=pb.via,
        service=pb.service,
        method=pb.method,
        resource=pb.resource,
        permission=pb.permission,
        outcome=pb.outcome,
        detail=pb.detail,
        trace_id=pb.trace_id,
    )
