"""gRPC plumbing shared by every service.

- :func:`create_server` builds a ``grpc.aio`` server with ``grpc.health.v1``, server
  reflection and one interceptor that authenticates the API key (or a peer service's
  token), checks the method's permission (:mod:`lepton_core.access`), writes the audit
  trail (:mod:`lepton_core.audit`), continues the caller's trace and maps
  :class:`~lepton_core.errors.LeptonError` to status codes.
- :func:`current_principal` and :func:`current_tenant` give handlers the caller.
- :func:`client_channel` makes a channel whose calls carry a key or :func:`on_behalf`'s
  token, and the current trace context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from nats import errors as nats_errors
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from lepton_core import errors
from lepton_core.access import MUTATING, SERVICE_TOKEN_HEADER, Access, Principal, Rule, ServiceSigner
from lepton_core.audit import AuditLog
from lepton_core.bus import NOT_TAKEN, STALLED_REMEDY, STORE_FULL_REMEDY, StoreStalled, store_full
from lepton_core.telemetry import extract_context, inject_context
from lepton_core.tls import Peer

log = logging.getLogger(__name__)

_PRINCIPAL: ContextVar[Principal | None] = ContextVar("lepton_principal", default=None)
_SIGNER: ContextVar[ServiceSigner | None] = ContextVar("lepton_signer", default=None)

#: Methods served without an API key: probes must work before any key exists.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
SUBSCRIBED_HEADER = "lepton-subscribed"
"""The header EventService.Subscribe sends once its consumer exists (lepton_core.event_stream).
A call refused before that ends with its status alone (trailers only): a client that gets
headers without this one reads the status at once instead of racing its arrival."""

STATUS_OF: dict[type[errors.LeptonError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DataIntegrityError: grpc.StatusCode.DATA_LOSS,
}


#: Status codes of a peer's answer that pass through to the caller unchanged.
_PASSED_ON = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def status_code_for(exc: errors.LeptonError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN


def current_principal() -> Principal:
    """Who the gRPC call being served is from; raises outside an authenticated call."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise errors.Unauthenticated("no authenticated caller in this context")
    return principal


def current_principal_or_none() -> Principal | None:
    """The caller of the gRPC call being served, or None outside one (an event handler, a timer)."""
    return _PRINCIPAL.get()


def current_tenant() -> str:
    """The tenant of the gRPC call being served; raises outside an authenticated call."""
    return current_principal().tenant


def on_behalf() -> list[tuple[str, str]]:
    """Metadata for a call to another service on the current caller's behalf.

    A token this service signs, naming the caller's principal (never the caller's key): the
    other service checks the signature and then the caller's permissions as if it had called.
    """
    signer = _SIGNER.get()
    if signer is None:
        raise errors.Unavailable("this process has no service identity to call another service with")
    return [(SERVICE_TOKEN_HEADER, signer.token(current_principal()))]


def bearer_key(metadata: Mapping[str, str]) -> str | None:
    """The API key from ``authorization: Bearer <key>`` (a bare key is accepted too)."""
    value = metadata.get("authorization")
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else value.strip()


def authenticate(access: Access, metadata: Mapping[str, str]) -> Principal:
    """The principal of a call: a service token's, when one is sent, else the API key's.

    Raises:
        Unauthenticated: neither is valid.
    """
    token = metadata.get(SERVICE_TOKEN_HEADER)
    if token:
        return access.verifier.verify(token)
    return access.book.authenticate(bearer_key(metadata))


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, permissions, the audit trail, tracing and error mapping around every handler."""

    def __init__(self, access: Access, service: str, audit: AuditLog | None = None) -> None:
        self._access = access
        self._service = service
        self._audit = audit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        return _wrap(handler, _Call(self, method, metadata))


@dataclass
class _Call:
    """One call's checks: who it is from, whether that may call ``method``, and its audit record."""

    interceptor: ServiceInterceptor
    method: str
    metadata: Mapping[str, str]
    principal: Principal | None = None
    rule: Rule | None = None
    resource: str = ""

    async def enter(self, context: grpc.aio.ServicerContext, request: object) -> Any:
        """Refuses a call that is not authenticated or not permitted; binds the caller; opens the span."""
        access = self.interceptor._access
        self.rule = access.rules.get(self.method)
        try:
            self.principal = authenticate(access, self.metadata)
        except errors.Unauthenticated as exc:
            await self.record("UNAUTHENTICATED", str(exc))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, errors.details(exc))
        assert self.principal is not None
        if self.rule is None:
            what = f"{self.method} has no entry in the {self.interceptor._service} service's permission table"
            await self.record("PERMISSION_DENIED", what)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, what)
        assert self.rule is not None
        self.resource = self.rule.resource_of(request)
        try:
            self.principal.require(self.rule.permission, self.method, self.resource)
        except errors.PermissionDenied as exc:
            await self.record("PERMISSION_DENIED", str(exc))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, errors.details(exc))
        _PRINCIPAL.set(self.principal)
        _SIGNER.set(access.signer)
        return trace.get_tracer("lepton.rpc").start_as_current_span(
            self.method.lstrip("/"),
            context=extract_context(self.metadata),
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.method": self.method,
                "lepton.tenant": self.principal.tenant,
                "lepton.key_id": self.principal.key_id,
            },
        )

    async def done(self, outcome: str, detail: str = "") -> None:
        """Records a mutating call's outcome (reads are not recorded unless refused)."""
        if self.rule is not None and (self.rule.permission in MUTATING or outcome == "PERMISSION_DENIED"):
            await self.record(outcome, detail)

    async def record(self, outcome: str, detail: str) -> None:
        audit = self.interceptor._audit
        if audit is None:
            return
        p = self.principal
        await audit.write(
            tenant=p.tenant if p else "",
            principal=p.label if p else "anonymous",
            key_id=p.key_id if p else "",
            via=p.via if p else "",
            method=self.method,
            resource=self.resource,
            permission=self.rule.permission if self.rule else "",
            outcome=outcome,
            detail=detail,
        )


#: Failures of NATS or JetStream that mean "not now" rather than "no": a timeout (nats-py's is an
#: ``asyncio.TimeoutError``), no responders (a stream without a leader), a connection being re-made.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError,
    *NOT_TAKEN,
    nats_errors.ConnectionClosedError,
    nats_errors.NoServersError,
    nats_errors.StaleConnectionError,
)


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """The status a failed call answers with: its code, its details, and what its audit record says."""
    if isinstance(exc, errors.LeptonError):
        return status_code_for(exc), errors.details(exc), str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        # A service this call asked on the caller's behalf said no: the caller gets that
        # answer, not an INTERNAL that hides it.
        code = exc.code()
        if code in _PASSED_ON:
            return code, errors.details(exc.details() or code.name), exc.details() or ""
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return (
                grpc.StatusCode.UNAVAILABLE,
                errors.details(f"a service this call needs did not answer ({code.name}: {exc.details()})"),
                exc.details() or "",
            )
    if store_full(exc):
        # The store is full: a retry fails the same way until an operator frees room or raises the limit.
        log.error("the store refused a write, it is full: %s", exc)
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.details(
                f"the platform's store is full and refused the write (nothing was stored); {STORE_FULL_REMEDY}"
            ),
            "store full",
        )
    if errors.disk_full(exc):
        # A disk this service writes to (an upload's spool) is full: not the caller's input, and no retry
        # helps until an operator frees room. The path stays in the log: it says nothing to a caller.
        log.error("a write on this service's disk found no room: %s", exc)
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.details(
                f"a disk of the platform is full ({os.strerror(exc.errno or 0)} on the host of the service "
                "this call reached); this call did not complete and nothing of it was kept; an operator frees "
                "room on that host's disk (docs/operations.md, 'A disk that filled up')"
            ),
            "disk full",
        )
    if isinstance(exc, StoreStalled):
        # A stream that stopped writing (its disk filled up) stays so until nats-server restarts: not a
        # "try again" (UNAVAILABLE, which the SDK's waits ride out for a minute) but what an operator must do.
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            errors.details(f"{exc}; this call did not complete; {STALLED_REMEDY}"),
            "store stalled",
        )
    if isinstance(exc, STORE_UNAVAILABLE):
        # NATS did not answer in time, or JetStream has no leader for the stream (a restart, a cluster
        # without quorum): nothing was decided, so the caller may try again. UNAVAILABLE says so; the
        # SDK's long waits ride it out.
        log.warning("the store did not answer: %s: %s", type(exc).__name__, exc)
        return (
            grpc.StatusCode.UNAVAILABLE,
            errors.details(f"a part of the platform this call needs did not answer ({type(exc).__name__}); try again"),
            type(exc).__name__,
        )
    error_id = uuid.uuid4().hex[:12]
    log.error("unhandled error %s", error_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the service log", f"error id {error_id}"


#: How long a failed call waits to record its failure in the audit trail: it changed nothing, and a store that
#: just failed the call should not hold its answer for another failover's length.
FAILED_AUDIT_WAIT_S = 3.0


async def _fail(context: grpc.aio.ServicerContext, exc: BaseException, call: _Call) -> None:
    """Maps an exception to a status (:func:`_status_for`), records it, and aborts the call with it.

    A failed call whose audit record cannot be stored either (the store is down) still answers with its
    own status, after :data:`FAILED_AUDIT_WAIT_S` at most: audit.write logs the lost record.
    """
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))
    code, details, recorded = _status_for(exc)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(call.done(code.name, recorded), FAILED_AUDIT_WAIT_S)
    await context.abort(code, details)


async def _done(context: grpc.aio.ServicerContext, call: _Call) -> None:
    """Records a call that succeeded; one whose audit record cannot be stored is not answered as a success."""
    try:
        await call.done("OK")
    except Exception as exc:  # audit.write logged it
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            errors.details(
                f"the call was carried out, but its audit record could not be stored ({type(exc).__name__}): "
                "check its effect before trying again"
            ),
        )


def _wrap(handler: grpc.RpcMethodHandler, call: _Call) -> grpc.RpcMethodHandler:
    _abort = grpc.aio.AbortError

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with await call.enter(context, request):
                try:
                    response = await inner(request, context)
                except _abort:
                    raise
                except Exception as exc:
                    await _fail(context, exc, call)
                await _done(context, call)
                return response

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with await call.enter(context, request):
            try:
                async for item in inner_stream(request, context):
                    yield item
            except _abort:
                raise
            except Exception as exc:
                await _fail(context, exc, call)
            await _done(context, call)

    make_stream = (
        grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    )
    return make_stream(
        stream_response,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Server:
    """A started gRPC server with its health servicer."""

    def __init__(self, server: grpc.aio.Server, health: health_aio.HealthServicer, port: int) -> None:
        self.server = server
        self.health = health
        self.port = port

    async def set_serving(self, service_names: Iterable[str]) -> None:
        for name in ["", *service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def create_server(
    *,
    service: str,
    host: str,
    port: int,
    access: Access,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    credentials: grpc.ServerCredentials | None = None,
    audit: AuditLog | None = None,
) -> Server:
    """Builds and starts a server; ``register`` adds servicers and returns their full names.

    With ``credentials`` (:func:`lepton_core.tls.server_credentials`) it serves TLS only;
    without, plaintext.
    """
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(access, service, audit)],
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    names = list(register(server))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    wrapped = Server(server, health, bound)
    await wrapped.set_serving(names)
    return wrapped


Auth = str | Sequence[tuple[str, str]] | None
"""How a channel's calls authenticate: an API key, metadata pairs (:func:`on_behalf`), or nothing."""


def call_metadata(auth: Auth) -> list[tuple[str, str]]:
    """Metadata for one outgoing call: the key or service token, and the current trace context."""
    carrier: dict[str, str] = {}
    inject_context(carrier)
    md = list(carrier.items())
    if isinstance(auth, str):
        md.append(("authorization", f"Bearer {auth}"))
    elif auth:
        md.extend(auth)
    return md


class _CallMetadata:
    """Adds the key or service token and ``traceparent`` to every call of a channel."""

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        md = grpc.aio.Metadata(*(details.metadata or ()))
        for k, v in call_metadata(self._auth):
            if k not in md:
                md.add(k, v)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, md, details.credentials, details.wait_for_ready
        )


# grpc.aio files each channel interceptor under the first call kind it matches, so
# one class per kind is needed for all four kinds to carry the metadata.
class _UnaryUnary(_CallMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_CallMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_CallMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_CallMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


def client_channel(target: str | Peer, auth: Auth) -> grpc.aio.Channel:
    """A channel to another service whose calls carry ``auth`` and the trace context.

    A service calling another on a caller's behalf passes :func:`on_behalf` (a token it
    signs), never the caller's key.

    ``target`` is a :class:`~lepton_core.tls.Peer` (``settings.peer(url)``: TLS as the
    service's settings say) or an address: ``grpcs://host:port`` for TLS against the
    system's roots, ``host:port`` for plaintext.
    """
    peer = target if isinstance(target, Peer) else Peer.parse(target)
    interceptors = [cls(auth) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
    options = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    credentials = peer.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(peer.address, interceptors=interceptors, options=options)
    return grpc.aio.secure_channel(peer.address, credentials, interceptors=interceptors, options=options)
