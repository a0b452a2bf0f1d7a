"""``client.deployments``: deploy, roll out, roll back, and predict through the inference gateway."""

from __future__ import annotations

import builtins
import functools
import random
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc

from lepton_ai._transport import Transport, message, ride_out
from lepton_ai.errors import FailedPrecondition, InvalidArgument, LeptonError, NotFound
from lepton_core.telemetry import inject_context
from lepton_ml import serving

#: How long predict() trusts the deployment's columns it read before reading them again.
ROUTES_TTL_S = 0.5


class Deployments:
    """Deployments on Triton; reached as ``client.deployments``. Returns the platform's Deployment messages."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._routes: dict[str, tuple[float, deployer_pb2.Deployment]] = {}
        self._rng = random.Random()

    def _stub(self) -> deployer_pb2_grpc.DeploymentServiceStub:
        return deployer_pb2_grpc.DeploymentServiceStub(self._t.channel("deployer"))

    def get(self, name: str) -> deployer_pb2.Deployment:
        found: deployer_pb2.Deployment = self._t.call(
            "deployer", self._stub().GetDeployment, deployer_pb2.GetDeploymentRequest(name=name)
        )
        return found

    def get_or_none(self, name: str) -> deployer_pb2.Deployment | None:
        """The deployment, or None when there is none of that name (yet)."""
        try:
            return self.get(name)
        except NotFound:
            return None

    def list(self) -> builtins.list[deployer_pb2.Deployment]:
        return builtins.list(
            self._t.call("deployer", self._stub().ListDeployments, deployer_pb2.ListDeploymentsRequest()).deployments
        )

    def deploy(
        self,
        name: str,
        model_name: str,
        version: int = 0,
        *,
        alias: str = "",
        hosts: builtins.list[str] | None = None,
        strategy: str = "",
        canary_weights: builtins.list[float] | None = None,
        canary_step_seconds: float = 0.0,
        follow: str | None = None,
        config: dict[str, Any] | None = None,
        wait: bool = True,
        timeout: float = 900.0,
    ) -> deployer_pb2.Deployment:
        """Creates ``name`` or rolls it out to a version (the latest, or ``alias``'s); waits by default.

        ``hosts`` are names of Triton hosts in the deployer's host pool, which its operator
        configures (never addresses); leave them out for the pool's ``default`` host (on a new
        deployment) or the deployment's current hosts. A name the deployer does not offer your
        tenant is refused (``InvalidArgument`` on ``hosts[i]``, listing the names you may use).
        ``config`` keys are those of ``ServingConfig`` (``max_batch_size``,
        ``preferred_batch_sizes``, ``instance_count``, ``instance_kind``, ...).
        """
        request = deployer_pb2.DeployRequest(
            name=name,
            model_name=model_name,
            version=version,
            alias=alias,
            hosts=hosts or [],
            strategy=strategy,
            canary_weights=canary_weights or [],
            canary_step_seconds=canary_step_seconds,
            config=message(deployer_pb2.ServingConfig, "config.", **(config or {})),
            wait=wait,
        )
        if follow is not None:
            request.follow = follow
        self._routes.pop(name, None)  # predict() must not use the routes read before this rollout
        # The same request again after a deployer restart: the new deployer rolls back what its predecessor
        # left half done, and this rolls out again to the same version (the same request, the same end).
        result: deployer_pb2.Deployment = ride_out(
            "deployer", lambda: self._t.call("deployer", self._stub().Deploy, request, timeout)
        )
        return result

    def rollback(self, name: str, wait: bool = True, timeout: float = 900.0) -> deployer_pb2.Deployment:
        """Rolls back to the version served before the last completed rollout."""
        request = deployer_pb2.RollbackRequest(name=name, wait=wait)
        self._routes.pop(name, None)
        result: deployer_pb2.Deployment = self._t.call("deployer", self._stub().Rollback, request, timeout)
        return result

    def delete(self, name: str) -> deployer_pb2.Deployment:
        self._routes.pop(name, None)
        result: deployer_pb2.Deployment = self._t.call(
            "deployer", self._stub().DeleteDeployment, deployer_pb2.GetDeploymentRequest(name=name)
        )
        return result

    def status(self, name: str) -> deployer_pb2.DeploymentStatus:
        """Per-host versions and readiness, and Triton's statistics."""
        result: deployer_pb2.DeploymentStatus = self._t.call(
            "deployer", self._stub().GetDeploymentStatus, deployer_pb2.GetDeploymentRequest(name=name)
        )
        return result

    def route(self, name: str) -> tuple[deployer_pb2.Deployment, deployer_pb2.Route]:
        """The deployment and one of its routes, chosen by weight (canary shares included).

        What the gateway does for each request; kept for callers that want to see a choice.
        """
        d = self._read(name)
        if not d.routes:
            raise FailedPrecondition(f"deployment {name!r} serves nothing yet (state {d.state})")
        chosen = self._rng.choices(list(d.routes), weights=[r.weight for r in d.routes])[0]
        return d, chosen

    def _read(self, name: str) -> deployer_pb2.Deployment:
        cached = self._routes.get(name)
        if cached is not None and time.monotonic() - cached[0] <= ROUTES_TTL_S:
            return cached[1]
        d = self.get(name)
        self._routes[name] = (time.monotonic(), d)
        return d

    def predict(self, name: str, rows: Any) -> npt.NDArray[np.float64]:
        """Predictions from the deployment for rows (a DataFrame, a dict of columns, or an array
        in ``feature_columns`` order), through the inference gateway, which picks the route by
        weight (canary shares included)."""
        d = self._read(name)  # its columns: the order of the input tensor
        try:
            frame = serving.as_frame(rows, builtins.list(d.feature_columns) + builtins.list(d.text_columns))
        except ValueError as exc:
            raise InvalidArgument(f"rows: {exc}") from None
        return gateway_predict(self._t, d, frame)


def gateway_predict(t: Transport, d: deployer_pb2.Deployment, frame: Any, version: str = "") -> npt.NDArray[np.float64]:
    """Predictions for raw rows laid out as ``d`` says, through the inference gateway (KServe V2 gRPC,
    with the API key), in requests of at most its ``max_batch_size`` rows; ``version``, when given,
    must be one the deployment serves (else the gateway routes by weight)."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import serialize_byte_tensor

    stub = service_pb2_grpc.GRPCInferenceServiceStub(t.channel("gateway"))
    batch = d.config.max_batch_size or 64
    out: builtins.list[npt.NDArray[np.float64]] = []
    for start in range(0, frame.height, batch):
        try:
            numeric, text = serving.arrays(frame.slice(start, batch), d.feature_columns, d.text_columns)
        except ValueError as exc:
            raise InvalidArgument(f"rows: {exc}") from None
        request = service_pb2.ModelInferRequest(model_name=d.name, model_version=version)
        request.inputs.add(name=serving.INPUT, datatype="FP64", shape=list(numeric.shape))
        request.raw_input_contents.append(np.ascontiguousarray(numeric, dtype=np.float64).tobytes())
        if text is not None:
            request.inputs.add(name=serving.TEXT_INPUT, datatype="BYTES", shape=list(text.shape))
            serialized = serialize_byte_tensor(text)
            request.raw_input_contents.append(bytes(serialized.item()) if serialized.size else b"")
        request.outputs.add(name=serving.OUTPUT)
        for key, value in inject_context({}).items():  # the caller's trace, when it has one
            request.parameters[key].string_param = value
        try:
            # Rows are sent again through a gateway or Triton restart: a prediction changes nothing.
            answer = ride_out("gateway", functools.partial(t.call, "gateway", stub.ModelInfer, request, 60.0))
        except LeptonError as exc:
            if type(exc) in (InvalidArgument, LeptonError):  # Triton's or the model's refusal of these rows
                raise InvalidArgument(f"rows: Triton refused them: {exc}") from None
            raise
        out.append(np.frombuffer(answer.raw_output_contents[0], dtype=np.float64).copy())
    return np.concatenate(out) if out else np.empty(0)
