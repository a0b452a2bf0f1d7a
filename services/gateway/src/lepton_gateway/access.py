"""Who is calling, and whether they may now: the key records, the permission table, per-tenant rates.

The gateway follows the platform's key records (:class:`lepton_core.access.KeyBook`) as
every service does, and checks each call against its own table
(:mod:`lepton_gateway.permissions`). A refusal (no key, an unknown, revoked or expired one,
a role without the permission) is written to the audit trail, as the services' interceptor
writes theirs; it is not waited for, so a refusal costs the caller no round trip to NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from lepton_core.access import KeyBook, Principal, Rule
from lepton_core.audit import AuditLog
from lepton_core.errors import LeptonError, PermissionDenied, Unauthenticated
from lepton_core.rpc import bearer_key
from lepton_gateway.allowance import Allowances
from lepton_gateway.limits import RateLimits
from lepton_gateway.permissions import RULES, full_name
from lepton_ml.triton_model.request_gate import SECRET_PARAMETER

#: The header (gRPC metadata key) that carries the gateway's secret to Triton, which forwards it to
#: the serving model as a request parameter (``--grpc-header-forward-pattern``); the model refuses
#: inference without it (``lepton_ml/triton_model/gate.py``).
SECRET_HEADER = SECRET_PARAMETER
#: The caller's trace context, passed on to Triton (and by it to the model).
TRACE_HEADERS = ("traceparent", "tracestate")


class RateLimited(LeptonError):
    """The tenant sent more requests than its rate allows (RESOURCE_EXHAUSTED, HTTP 429)."""


def may_somewhere(principal: Principal, rule: Rule) -> bool:
    """Whether ``principal`` has ``rule``'s permission by its role, or on some resource by a grant.

    A key that has it by a grant alone may call for the granted resource only: :meth:`Gate.require`
    decides once the request names one.
    """
    if principal.allows(rule.permission):
        return True
    kind = rule.resource.partition("/")[0]
    return bool(kind) and any(
        granted.partition("/")[0] == kind and principal.allows(rule.permission, granted)
        for granted, _ in principal.grants
    )


class Gate:
    """Authenticates a call by its ``authorization: Bearer <key>``, checks its permission, applies the tenant's rate.

    Args:
        book: The key records, kept current by :meth:`KeyBook.follow`.
        limits: The tenants' rates (none behind the nginx front, which takes every call's token).
        audit: Where refusals are recorded; None records nothing (unit tests).
    """

    def __init__(
        self, book: KeyBook, limits: RateLimits, audit: AuditLog | None = None, allowances: Allowances | None = None
    ) -> None:
        self._allowances = allowances
        self.book = book
        self._limits = limits
        self._audit = audit
        self._writing: set[asyncio.Task[None]] = set()

    def authenticate(self, authorization: str | None, method: str) -> Principal:
        """The principal of the key in an ``authorization`` value (``Bearer <key>``, or the bare key).

        ``method`` is the call's name (``ModelInfer``, or a REST request's ``POST /v2/...``), for the audit trail.

        Raises:
            Unauthenticated: no key, or one that is unknown, revoked or expired (saying which).
        """
        try:
            return self.book.authenticate(bearer_key({"authorization": authorization}) if authorization else None)
        except Unauthenticated as exc:
            self._record(None, method, "", "UNAUTHENTICATED", str(exc))
            raise

    def check(self, authorization: str | None, method: str) -> Principal:
        """:meth:`authenticate`, then refuses a key that has ``method``'s permission nowhere.

        Raises:
            Unauthenticated: as :meth:`authenticate`.
            PermissionDenied: naming the permission the role lacks.
        """
        principal = self.authenticate(authorization, method)
        if not may_somewhere(principal, RULES[full_name(method)]):
            self.require(principal, method)
        return principal

    def admit(self, authorization: str | None, method: str) -> Principal:
        """:meth:`check`, then one request off the tenant's rate.

        Raises:
            Unauthenticated, PermissionDenied: as :meth:`check`.
            ResourceExhausted: the tenant's plan has no prediction left this month.
            RateLimited: the tenant has no request left this moment.
        """
        principal = self.check(authorization, method)
        refusal = self._allowances.refusal(principal.tenant) if self._allowances is not None else None
        if refusal is not None:
            raise refusal
        if not self._limits.allow(principal.tenant):
            raise RateLimited(
                f"tenant {principal.tenant!r} is over its rate of {self._limits.rate_of(principal.tenant):g} "
                "requests a second; slow down and retry"
            )
        return principal

    def require(self, principal: Principal, method: str, deployment: str = "") -> None:
        """Raises :class:`PermissionDenied` unless ``principal`` may call ``method`` (for ``deployment``)."""
        rule = RULES[full_name(method)]
        resource = f"{rule.resource.partition('/')[0]}/{deployment}" if rule.resource and deployment else ""
        try:
            principal.require(rule.permission, full_name(method), resource)
        except PermissionDenied as exc:
            self._record(principal, method, resource, "PERMISSION_DENIED", str(exc))
            raise

    def deny(self, principal: Principal, method: str, message: str) -> PermissionDenied:
        """The refusal of a call no key may make here (model control and the like), recorded."""
        self._record(principal, method, "", "PERMISSION_DENIED", message)
        return PermissionDenied(message)

    def _record(self, principal: Principal | None, method: str, resource: str, outcome: str, detail: str) -> None:
        if self._audit is None:
            return
        rule = RULES.get(full_name(method))
        write = self._audit.write(
            tenant=principal.tenant if principal else "",
            principal=principal.label if principal else "anonymous",
            key_id=principal.key_id if principal else "",
            via="",
            method=full_name(method) if rule else method,
            resource=resource,
            permission=rule.permission if rule else "",
            outcome=outcome,
            detail=detail,
        )
        task = asyncio.get_running_loop().create_task(_quietly(write))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)


async def _quietly(write: Coroutine[Any, Any, None]) -> None:
    """Awaits an audit write; a failure is in the log already (:meth:`AuditLog.write` logs it)."""
    with contextlib.suppress(Exception):
        await write
