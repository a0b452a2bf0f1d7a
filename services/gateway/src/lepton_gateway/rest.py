"""KServe V2 / Open Inference Protocol over HTTP/REST, with the same keys, routes and limits as gRPC.

A JSON request becomes the gRPC ``ModelInferRequest`` Triton takes (raw tensor contents),
goes through :class:`~lepton_gateway.forwarding.Forwarder`, and the answer comes back as
JSON (``data`` as flat lists in row-major order). Binary input tensors (the
``Inference-Header-Content-Length`` extension that ``tritonclient.http`` uses by default)
are accepted; outputs are always JSON.

| request | answer |
|---|---|
| ``GET /v2/health/live``, ``/v2/health/ready`` | 200 or 503, no key needed |
| ``GET /v2`` | server metadata |
| ``GET /v2/models/{name}[/versions/{v}]`` | the deployment's model metadata |
| ``GET /v2/models/{name}[/versions/{v}]/ready`` | 200 ready, 400 not |
| ``GET /v2/models/{name}[/versions/{v}]/config`` | its Triton config, less the platform's parameters |
| ``POST /v2/models/{name}[/versions/{v}]/infer`` | predictions |

Each request needs the permission of its gRPC call (:mod:`lepton_gateway.permissions`). Errors
are ``{"error": "..."}`` with 400, 401 (no key, or an unknown, revoked or expired one), 403 (a
role without the permission, named; model control and the like), 404 (not the tenant's
deployment), 429 (over the rate), 503 or 500.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from lepton_core import errors
from lepton_core.rpc import status_code_for
from lepton_gateway.access import TRACE_HEADERS, RateLimited
from lepton_gateway.forwarding import Forwarder, UpstreamError
from lepton_gateway.wire import MalformedMessage

#: gRPC status -> HTTP status.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}
REFUSED = (
    "not served to clients: the gateway answers inference, model metadata, config and readiness; "
    "the platform's deployer alone controls models"
)
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_BODY = 64 * 1024 * 1024


class BadRequest(errors.InvalidArgument):
    """The REST request's JSON does not describe an inference request."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _parameter(value: Any) -> service_pb2.InferParameter:
    if isinstance(value, bool):
        return service_pb2.InferParameter(bool_param=value)
    if isinstance(value, int):
        return service_pb2.InferParameter(int64_param=value)
    if isinstance(value, float):
        return service_pb2.InferParameter(double_param=value)
    if isinstance(value, str):
        return service_pb2.InferParameter(string_param=value)
    raise BadRequest(f"a parameter must be a bool, number or string, got {type(value).__name__}")


def infer_request(name: str, version: str, body: bytes, header_length: int | None) -> bytes:
    """The ``ModelInferRequest`` bytes for a KServe V2 REST infer body (JSON, then binary tensors if any)."""
    head, binary = (body[:header_length], body[header_length:]) if header_length is not None else (body, b"")
    try:
        doc = json.loads(head)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
        raise BadRequest("the body must be a JSON object with a non-empty list 'inputs'", field="inputs")
    request = service_pb2.ModelInferRequest(model_name=name, model_version=version, id=str(doc.get("id", "")))
    for key, value in (doc.get("parameters") or {}).items():
        request.parameters[key].CopyFrom(_parameter(value))
    offset = 0
    for i, spec in enumerate(doc["inputs"]):
        where = f"inputs[{i}]"
        if not isinstance(spec, dict):
            raise BadRequest("must be an object with name, shape, datatype and data", field=where)
        try:
            tensor_name, datatype, shape = str(spec["name"]), str(spec["datatype"]), [int(d) for d in spec["shape"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"needs name, shape (integers) and datatype: {exc}", field=where) from None
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size")
        if size is not None:
            raw = binary[offset : offset + int(size)]
            if len(raw) != int(size):
                raise BadRequest(f"binary_data_size {size} runs past the body's end", field=where)
            offset += int(size)
        else:
            raw = _raw(spec.get("data"), datatype, shape, where)
        request.inputs.add(name=tensor_name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    for spec in doc.get("outputs") or []:
        if isinstance(spec, dict) and "name" in spec:
            request.outputs.add(name=str(spec["name"]))
    return bytes(request.SerializeToString())


def _raw(data: Any, datatype: str, shape: list[int], where: str) -> bytes:
    if data is None:
        raise BadRequest("has no data", field=where)
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=np.object_).reshape(shape)
            encoded = np.vectorize(lambda v: v.encode() if isinstance(v, str) else bytes(v), otypes=[np.object_])(flat)
            serialized = serialize_byte_tensor(encoded)
            return bytes(serialized.item()) if serialized.size else b""
        dtype = triton_to_np_dtype(datatype)
        if dtype is None:
            raise BadRequest(f"datatype {datatype!r} is not a KServe V2 datatype", field=where)
        return np.asarray(data, dtype=dtype).reshape(shape).tobytes()
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"data does not fit shape {shape} as {datatype}: {exc}", field=where) from None


def infer_answer(answer: bytes) -> dict[str, Any]:
    """The JSON of a ``ModelInferResponse``."""
    response = service_pb2.ModelInferResponse.FromString(answer)
    outputs = []
    for i, out in enumerate(response.outputs):
        shape = list(out.shape)
        raw = response.raw_output_contents[i] if i < len(response.raw_output_contents) else b""
        if out.datatype == "BYTES":
            values = deserialize_bytes_tensor(raw) if raw else np.empty(0, dtype=np.object_)
            data: list[Any] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values.tolist()]
        else:
            data = np.frombuffer(raw, dtype=triton_to_np_dtype(out.datatype)).tolist()
        outputs.append({"name": out.name, "datatype": out.datatype, "shape": shape, "data": data})
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    doc["outputs"] = outputs
    return doc


class RestServer:
    """The REST API on ``host:port`` (or a Unix socket, behind the nginx front) over a :class:`Forwarder`."""

    def __init__(
        self, forwarder: Forwarder, host: str, port: int, timeout_s: float, unix_path: str | None = None
    ) -> None:
        self._f = forwarder
        self._host = host
        self._port = port
        #: Behind the nginx front: a Unix socket instead of host:port.
        self._unix_path = unix_path
        self._timeout = timeout_s
        self._runner: web.AppRunner | None = None
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/v2/health/live", self._health)
        app.router.add_get("/v2/health/ready", self._health)
        app.router.add_get("/v2", self._server_metadata)
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.router.add_get(base, self._model("ModelMetadata"))
            app.router.add_get(base + "/ready", self._model("ModelReady"))
            app.router.add_get(base + "/config", self._model("ModelConfig"))
            app.router.add_post(base + "/infer", self._model("ModelInfer"))
        app.router.add_route("*", "/{tail:.*}", self._refused)
        self.app = app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        if self._unix_path:
            await web.UnixSite(self._runner, self._unix_path).start()
        else:
            await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _trace(request: web.Request) -> list[tuple[str, str]]:
        return [(k, request.headers[k]) for k in TRACE_HEADERS if k in request.headers]

    async def _health(self, request: web.Request) -> web.Response:
        method = "ServerLive" if request.path.endswith("/live") else "ServerReady"
        try:
            answer = await self._f.server_call(method, b"", [], self._timeout)
        except UpstreamError as exc:
            return _error(503, exc.details)
        if method == "ServerLive":
            ok = service_pb2.ServerLiveResponse.FromString(answer).live
        else:
            ok = service_pb2.ServerReadyResponse.FromString(answer).ready
        return web.json_response({"live" if method == "ServerLive" else "ready": ok}, status=200 if ok else 503)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        try:
            self._f.gate.admit(request.headers.get("Authorization"), "ServerMetadata")
            answer = await self._f.server_call("ServerMetadata", b"", self._trace(request), self._timeout)
        except Exception as exc:
            return _failure(exc)
        return web.json_response(MessageToDict(service_pb2.ServerMetadataResponse.FromString(answer)))

    def _model(self, method: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            name, version = request.match_info["name"], request.match_info.get("version", "")
            try:
                caller = self._f.gate.admit(request.headers.get("Authorization"), method)
                if method == "ModelInfer":
                    length = request.headers.get(BINARY_HEADER)
                    data = infer_request(name, version, await request.read(), int(length) if length else None)
                elif method == "ModelReady":
                    data = service_pb2.ModelReadyRequest(name=name, version=version).SerializeToString()
                elif method == "ModelConfig":
                    data = service_pb2.ModelConfigRequest(name=name, version=version).SerializeToString()
                else:
                    data = service_pb2.ModelMetadataRequest(name=name, version=version).SerializeToString()
                answer = await self._f.model_call(method, caller, data, self._trace(request), self._timeout)
            except Exception as exc:
                return _failure(exc)
            if method == "ModelInfer":
                return web.json_response(infer_answer(answer))
            if method == "ModelReady":
                ready = service_pb2.ModelReadyResponse.FromString(answer).ready
                return web.json_response({"name": name, "ready": ready}, status=200 if ready else 400)
            if method == "ModelConfig":
                config = service_pb2.ModelConfigResponse.FromString(answer).config
                return web.json_response({"config": MessageToDict(config, preserving_proto_field_name=True)})
            metadata = service_pb2.ModelMetadataResponse.FromString(answer)
            return web.json_response(MessageToDict(metadata, preserving_proto_field_name=True))

        return handle

    async def _refused(self, request: web.Request) -> web.Response:
        call = f"{request.method} {request.path}"
        try:
            caller = self._f.gate.authenticate(request.headers.get("Authorization"), call)
            if request.path.startswith("/v2/"):
                raise self._f.gate.deny(
                    caller,
                    call,
                    f"{call} is not served to clients: the gateway answers inference, model metadata, config "
                    "and readiness; the platform's deployer alone controls models",
                )
        except Exception as exc:
            return _failure(exc)
        return _error(404, f"no such endpoint: {call}")


def _failure(exc: BaseException) -> web.Response:
    if isinstance(exc, UpstreamError):
        return _error(HTTP_STATUS.get(exc.code, 500), exc.details)
    if isinstance(exc, RateLimited | errors.ResourceExhausted):
        return _error(429, errors.details(exc))
    if isinstance(exc, MalformedMessage | ValueError) and not isinstance(exc, errors.LeptonError):
        return _error(400, f"the request is not valid: {exc}")
    if isinstance(exc, errors.LeptonError):
        return _error(HTTP_STATUS.get(status_code_for(exc), 500), errors.details(exc))
    raise exc
