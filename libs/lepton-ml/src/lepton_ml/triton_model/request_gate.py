"""The serving model's door: inference only for requests that came through the platform's gateway.

A client that reaches Triton's port directly (on the same host or network) must gain
nothing by bypassing the gateway, which checks API keys, tenants and rates. The gateway
sends every request with a secret header (:data:`SECRET_PARAMETER`); Triton forwards it to
the model as a request parameter (``--grpc-header-forward-pattern``,
``--http-header-forward-pattern``: ``lepton_platform.processes.TritonServer``), and
:class:`InferenceGate` refuses a request without it. The deployer's smoke tests carry it too.

The secret reaches the model outside its configuration (which Triton clients can read): the
Triton process's environment names a file (:data:`SECRET_FILE_ENV`, mode 0600) that holds it.
A Triton without one refuses every request, saying so. This module runs in Triton's Python
backend stub: the standard library only.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

#: The header the gateway sends, and the request parameter the model reads it as.
SECRET_PARAMETER = "lepton-inference-secret"
#: Names the file with the secret, in the Triton process's environment.
SECRET_FILE_ENV = "LEPTON_TRITON_INFERENCE_SECRET_FILE"
#: The request headers Triton forwards to the model as parameters: the secret and the trace context.
FORWARDED_HEADERS = f"^({SECRET_PARAMETER}|traceparent|tracestate)$"


def parameters_of(request: Any) -> dict[str, Any]:
    """The request's parameters (the gateway's secret, ``lepton_check``, W3C trace context), or nothing."""
    try:
        raw = request.parameters()
        if not raw or raw == "{}":
            return {}  # no JSON to parse
        params = json.loads(raw)
    except (ValueError, TypeError, AttributeError):
        return {}
    return params if isinstance(params, dict) else {}


def trace_id(traceparent: str) -> str:
    """The trace id of a W3C ``traceparent`` (version-traceid-spanid-flags), or empty."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else ""


class InferenceGate:
    """Refuses requests that do not carry the inference secret (see the module docstring)."""

    def __init__(self, secret: str | None, problem: str = "") -> None:
        self._secret = secret.encode() if secret else None
        self.problem = problem

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> InferenceGate:
        """The gate of the secret in the file :data:`SECRET_FILE_ENV` names; one that refuses all without it."""
        path = environ.get(SECRET_FILE_ENV, "")
        if not path:
            return cls(None, f"this Triton has no inference secret ({SECRET_FILE_ENV} is not set in its environment)")
        try:
            with open(path, encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as exc:
            return cls(None, f"this Triton's inference secret file cannot be read ({exc.strerror or exc})")
        if not secret:
            return cls(None, "this Triton's inference secret file is empty")
        return cls(secret)

    def passes(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` (a request's parameters) carry the secret."""
        given = params.get(SECRET_PARAMETER)
        return self._secret is not None and isinstance(given, str) and hmac.compare_digest(given.encode(), self._secret)

    def check(self, params: Mapping[str, Any]) -> None:
        """Raises ValueError, saying why, unless ``params`` carry the secret (refused requests are not logged)."""
        if self._secret is None:
            raise ValueError(f"inference refused: {self.problem}; requests come through the Lepton gateway")
        if not self.passes(params):
            raise ValueError(
                "inference refused: send requests through the Lepton gateway (with your API key), not to Triton"
            )
