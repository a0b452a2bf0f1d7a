"""What the gateway does with a request, whatever protocol brought it: route, readdress, forward.

The model name a client sends is a deployment's name; :class:`Forwarder` reads it (and the
version, if any) from the request's bytes, picks the tenant's Triton model and version by
the deployment's routes, readdresses the bytes and forwards them to Triton with the
gateway's secret (:mod:`lepton_gateway.wire`): tensors are never decoded. The gRPC and REST
adapters (:mod:`lepton_gateway.grpc_api`, :mod:`lepton_gateway.rest`) turn its errors into
their status codes.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tritonclient.grpc import service_pb2

from lepton_core.access import Principal
from lepton_core.errors import LeptonError
from lepton_gateway.access import Gate
from lepton_gateway.routes import RouteTable
from lepton_gateway.upstream import Upstream
from lepton_gateway.wire import name_and_version, readdressed

#: Methods answered for one of the caller's deployments.
PER_MODEL = frozenset({"ModelInfer", "ModelMetadata", "ModelConfig", "ModelReady"})

Trace = Sequence[tuple[str, str]]


class UpstreamError(Exception):
    """Triton refused or failed a forwarded request: its status code and message, for the caller."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Forwarder:
    """Routes and forwards requests for a tenant's deployments (see the module docstring)."""

    def __init__(self, routes: RouteTable, gate: Gate, upstream: Upstream, default_host: str) -> None:
        self.routes = routes
        self.gate = gate
        self._upstream = upstream
        self._default_host = default_host

    async def _call(self, host: str, method: str, data: bytes, trace: Trace, timeout: float) -> bytes:
        try:
            answer: bytes = await self._upstream.call(host, method)(
                data, metadata=self._upstream.metadata(trace), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise UpstreamError(exc.code(), exc.details() or exc.code().name) from None
        return answer

    async def model_call(self, method: str, caller: Principal, data: bytes, trace: Trace, timeout: float) -> bytes:
        """One of :data:`PER_MODEL` for ``caller`` (admitted by the gate): its answer, under the deployment's name.

        Raises:
            LeptonError: PermissionDenied for a deployment the caller may not use (a key whose
                grants name others), NotFound for a name that is not one of the tenant's
                deployments (or a version it does not serve), Unavailable while it serves nothing yet.
            MalformedMessage: the request's bytes are not a message.
            UpstreamError: Triton's refusal or failure; UNAVAILABLE where the host does not have the
                deployment's model right now (:func:`not_loaded`).
        """
        name, version = name_and_version(data)
        self.gate.require(caller, method, name)
        if method == "ModelInfer" or version:
            target = self.routes.target(caller.tenant, name, version)
        else:
            target = self.routes.stable(caller.tenant, name)
        try:
            if method == "ModelConfig":
                # Triton's own config is model control (the deployer's), and holds the platform's settings: the
                # gateway answers with what a client needs of it, made from the model's metadata.
                request = service_pb2.ModelMetadataRequest(name=target.model, version=target.version)
                answer = await self._call(target.host, "ModelMetadata", request.SerializeToString(), trace, timeout)
                return config_from_metadata(name, service_pb2.ModelMetadataResponse.FromString(answer))
            data = readdressed(data, target.model, target.version)
            answer = await self._call(target.host, method, data, trace, timeout)
        except UpstreamError as exc:
            raise not_loaded(name) if exc.code == grpc.StatusCode.NOT_FOUND else exc from None
        if method in ("ModelInfer", "ModelMetadata"):
            return readdressed(answer, name)
        return answer

    async def server_call(self, method: str, data: bytes, trace: Trace, timeout: float) -> bytes:
        """``ServerLive``, ``ServerReady`` or ``ServerMetadata``, answered by the default Triton."""
        return await self._call(self._default_host, method, data, trace, timeout)


def not_loaded(name: str) -> UpstreamError:
    """What a caller gets when the Triton host a deployment is routed to does not have its model: UNAVAILABLE.

    The deployment exists (its route was found), so the host lost the model for a while: a Triton that
    restarted, until the deployer's reconcile loop loads it again. A retry succeeds; Triton's NOT_FOUND
    would tell the caller the deployment is gone, and name the tenant's Triton model.
    """
    return UpstreamError(
        grpc.StatusCode.UNAVAILABLE, f"deployment {name!r} is not loaded on its Triton host right now; retry shortly"
    )


def config_from_metadata(name: str, metadata: service_pb2.ModelMetadataResponse) -> bytes:
    """A ``ModelConfigResponse`` for deployment ``name``: its tensors (batched when the metadata says so)."""
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig(name=name, backend=metadata.platform)
    batched = all(t.shape and t.shape[0] == -1 for t in [*metadata.inputs, *metadata.outputs])
    for tensor, into in [(t, config.input) for t in metadata.inputs] + [(t, config.output) for t in metadata.outputs]:
        dims = list(tensor.shape[1:] if batched else tensor.shape)
        item = into.add(name=tensor.name, dims=dims)
        item.data_type = model_config_pb2.DataType.Value(
            "TYPE_STRING" if tensor.datatype == "BYTES" else f"TYPE_{tensor.datatype}"
        )
    return bytes(service_pb2.ModelConfigResponse(config=config).SerializeToString())


__all__ = ["PER_MODEL", "Forwarder", "LeptonError", "UpstreamError"]
