"""KServe V2 / Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), by tenant.

Bytes in, bytes out (a generic handler: nothing is deserialised but the model's name and
version, :mod:`lepton_gateway.forwarding`). Answers:

- ``ModelInfer``, ``ModelMetadata``, ``ModelConfig``, ``ModelReady``: for the caller's own
  deployments; any other name (another tenant's deployment included) is NOT_FOUND.
- ``ServerLive``, ``ServerReady``: without a key (probes); ``ServerMetadata``: with one.
- Model control, the repository index, statistics, shared memory, trace and log settings:
  PERMISSION_DENIED (they are the platform's, not a client's). ``ModelStreamInfer``: UNIMPLEMENTED.

No key, or an unknown, revoked or expired one, is UNAUTHENTICATED; a key whose role lacks the
call's permission (:mod:`lepton_gateway.permissions`; ``deployments.predict`` for all but the
probes) is PERMISSION_DENIED, naming it; a tenant over its rate is RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn

import grpc
from tritonclient.grpc import service_pb2

from lepton_core import errors
from lepton_core.rpc import status_code_for
from lepton_gateway.access import TRACE_HEADERS, RateLimited
from lepton_gateway.forwarding import PER_MODEL, Forwarder, UpstreamError
from lepton_gateway.permissions import OPEN
from lepton_gateway.upstream import INFERENCE_SERVICE
from lepton_gateway.wire import MalformedMessage

log = logging.getLogger(__name__)

METHODS = tuple(m.name for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods)
STREAMING = frozenset({"ModelStreamInfer"})
#: Everything else the service has: refused.
REFUSED = frozenset(METHODS) - OPEN - PER_MODEL - STREAMING - {"ServerMetadata"}

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


def _headers(context: grpc.aio.ServicerContext) -> tuple[str | None, list[tuple[str, str]]]:
    """The (first) ``authorization`` value and the trace headers to pass on."""
    authorization = None
    trace: list[tuple[str, str]] = []
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            # The first, as nginx reads it ($http_authorization): both fronts hear the same key.
            if authorization is None and isinstance(value, str):
                authorization = value
        elif key in TRACE_HEADERS and isinstance(value, str):
            trace.append((key, value))
    return authorization, trace


class KServeGrpc:
    """The gateway's ``GRPCInferenceService``: see the module docstring."""

    def __init__(self, forwarder: Forwarder, timeout_s: float) -> None:
        self._f = forwarder
        self._timeout = timeout_s

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio`` server (bytes in, bytes out)."""
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in METHODS:
            if method in STREAMING:
                handlers[method] = grpc.stream_stream_rpc_method_handler(self._streaming)
                continue
            fn: Handler
            if method == "ModelInfer":
                fn = self._infer
            elif method in PER_MODEL:
                fn = self._per_model(method)
            elif method in REFUSED:
                fn = self._refused(method)
            else:
                fn = self._server(method)
            handlers[method] = grpc.unary_unary_rpc_method_handler(fn)
        return grpc.method_handlers_generic_handler(INFERENCE_SERVICE, handlers)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self._timeout if remaining is None else remaining

    async def _infer(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        # The hot path: one function, no closure.
        authorization, trace = _headers(context)
        try:
            caller = self._f.gate.admit(authorization, "ModelInfer")
            answer: bytes = await self._f.model_call("ModelInfer", caller, data, trace, self._deadline(context))
            return answer
        except Exception as exc:
            await _refuse(context, exc)

    def _per_model(self, method: str) -> Handler:
        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            authorization, trace = _headers(context)
            try:
                caller = self._f.gate.admit(authorization, method)
                answer: bytes = await self._f.model_call(method, caller, data, trace, self._deadline(context))
                return answer
            except Exception as exc:
                await _refuse(context, exc)

        return handle

    def _server(self, method: str) -> Handler:
        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            authorization, trace = _headers(context)
            try:
                if method not in OPEN:
                    self._f.gate.admit(authorization, method)
                answer: bytes = await self._f.server_call(method, data, trace, self._deadline(context))
                return answer
            except Exception as exc:
                await _refuse(context, exc)

        return handle

    def _refused(self, method: str) -> Handler:
        async def handle(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
            authorization, _ = _headers(context)
            try:
                caller = self._f.gate.authenticate(authorization, method)
                raise self._f.gate.deny(caller, method, refused_message(method))
            except Exception as exc:
                await _refuse(context, exc)

        return handle

    async def _streaming(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        authorization, _ = _headers(context)
        try:
            self._f.gate.check(authorization, "ModelStreamInfer")
        except Exception as exc:
            await _refuse(context, exc)
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "ModelStreamInfer is not served by the gateway; send ModelInfer requests"
        )
        yield b""  # pragma: no cover - abort raises


def refused_message(method: str) -> str:
    return (
        f"{method} is not served to clients: the gateway answers inference, model metadata, config and "
        "readiness; the platform's deployer alone controls models"
    )


async def _refuse(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """Aborts the call with the status ``exc`` stands for (``context.abort`` raises)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, UpstreamError):
        await context.abort(exc.code, exc.details)
    if isinstance(exc, RateLimited | errors.ResourceExhausted):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.details(exc))
    if isinstance(exc, MalformedMessage):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message: {exc}")
    if isinstance(exc, errors.LeptonError):
        await context.abort(status_code_for(exc), errors.details(exc))
    error_id = uuid.uuid4().hex[:12]
    log.error("unhandled error %s", error_id, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the gateway's log")
    raise AssertionError("abort returned")
