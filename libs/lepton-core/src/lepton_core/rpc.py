"""gRPC plumbing shared by every service.

- :func:`create_server` builds a ``grpc.aio`` server with ``grpc.health.v1``, server
  reflection and one interceptor that authenticates the API key, continues the
  caller's trace and maps :class:`~lepton_core.errors.LeptonError` to status codes.
- :func:`current_tenant` gives handlers the tenant of the call.
- :func:`client_channel` makes a channel whose calls carry the API key and the
  current trace context.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from lepton_core import errors
from lepton_core.telemetry import extract_context, inject_context
from lepton_core.tls import Peer

log = logging.getLogger(__name__)

_TENANT: ContextVar[str | None] = ContextVar("lepton_tenant", default=None)
_API_KEY: ContextVar[str | None] = ContextVar("lepton_api_key", default=None)

#: Methods served without an API key: probes must work before any key exists.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

STATUS_OF: dict[type[errors.LeptonError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
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
    }
)


def status_code_for(exc: errors.LeptonError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.UNKNOWN


def current_tenant() -> str:
    """The tenant of the gRPC call being served; raises outside an authenticated call."""
    tenant = _TENANT.get()
    if tenant is None:
        raise errors.Unauthenticated("no authenticated tenant in this context")
    return tenant


def current_api_key() -> str | None:
    """The caller's API key, for calls a service makes to another on the caller's behalf."""
    return _API_KEY.get()


def bearer_key(metadata: Mapping[str, str]) -> str | None:
    """The API key from ``authorization: Bearer <key>`` (a bare key is accepted too)."""
    value = metadata.get("authorization")
    if not value:
        return None
    scheme, _, rest = value.partition(" ")
    return rest.strip() if rest and scheme.lower() == "bearer" else value.strip()


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Authentication, tracing and error mapping around every handler."""

    def __init__(self, api_keys: Mapping[str, str], service: str) -> None:
        self._api_keys = dict(api_keys)
        self._service = service

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
        key = bearer_key(metadata)
        tenant = self._api_keys.get(key) if key else None
        return _wrap(handler, method, metadata, tenant, key is not None)


async def _guard(
    context: grpc.aio.ServicerContext, method: str, metadata: Mapping[str, str], tenant: str | None, had_key: bool
) -> Any:
    """Shared prologue: refuse bad keys, bind the tenant, open the server span."""
    if tenant is None:
        what = "the API key is not valid" if had_key else "no API key: send 'authorization: Bearer <key>'"
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, what)
    _TENANT.set(tenant)
    _API_KEY.set(bearer_key(metadata))
    return trace.get_tracer("lepton.rpc").start_as_current_span(
        method.lstrip("/"),
        context=extract_context(metadata),
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.method": method, "lepton.tenant": tenant or ""},
    )


async def _fail(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Maps an exception to a status; unexpected ones become INTERNAL with an error id."""
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))
    if isinstance(exc, errors.LeptonError):
        await context.abort(status_code_for(exc), errors.details(exc))
    if isinstance(exc, grpc.aio.AioRpcError):
        # A service this call asked on the caller's behalf (with the caller's key) said no:
        # the caller gets that answer, not an INTERNAL that hides it.
        code = exc.code()
        if code in _PASSED_ON:
            await context.abort(code, errors.details(exc.details() or code.name))
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                errors.details(f"a service this call needs did not answer ({code.name}: {exc.details()})"),
            )
    error_id = uuid.uuid4().hex[:12]
    log.error("unhandled error %s", error_id, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the service log")


def _wrap(
    handler: grpc.RpcMethodHandler, method: str, metadata: Mapping[str, str], tenant: str | None, had_key: bool
) -> grpc.RpcMethodHandler:
    _abort = grpc.aio.AbortError

    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with await _guard(context, method, metadata, tenant, had_key):
                try:
                    return await inner(request, context)
                except _abort:
                    raise
                except Exception as exc:
                    await _fail(context, exc)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    inner_stream = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with await _guard(context, method, metadata, tenant, had_key):
            try:
                async for item in inner_stream(request, context):
                    yield item
            except _abort:
                raise
            except Exception as exc:
                await _fail(context, exc)

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
    api_keys: Mapping[str, str],
    register: Callable[[grpc.aio.Server], Iterable[str]],
    credentials: grpc.ServerCredentials | None = None,
) -> Server:
    """Builds and starts a server; ``register`` adds servicers and returns their full names.

    With ``credentials`` (:func:`lepton_core.tls.server_credentials`) it serves TLS only;
    without, plaintext.
    """
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(api_keys, service)],
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


def call_metadata(api_key: str | None) -> list[tuple[str, str]]:
    """Metadata for one outgoing call: the API key and the current trace context."""
    carrier: dict[str, str] = {}
    inject_context(carrier)
    md = list(carrier.items())
    if api_key:
        md.append(("authorization", f"Bearer {api_key}"))
    return md


class _CallMetadata:
    """Adds the API key and ``traceparent`` to every call of a channel."""

    def __init__(self, api_key: str | None) -> None:
        self._api_key = api_key

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        md = grpc.aio.Metadata(*(details.metadata or ()))
        for k, v in call_metadata(self._api_key):
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


def client_channel(target: str | Peer, api_key: str | None) -> grpc.aio.Channel:
    """A channel to another service whose calls carry the key and trace context.

    ``target`` is a :class:`~lepton_core.tls.Peer` (``settings.peer(url)``: TLS as the
    service's settings say) or an address: ``grpcs://host:port`` for TLS against the
    system's roots, ``host:port`` for plaintext.
    """
    peer = target if isinstance(target, Peer) else Peer.parse(target)
    interceptors = [cls(api_key) for cls in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
    options = [
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    credentials = peer.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(peer.address, interceptors=interceptors, options=options)
    return grpc.aio.secure_channel(peer.address, credentials, interceptors=interceptors, options=options)
