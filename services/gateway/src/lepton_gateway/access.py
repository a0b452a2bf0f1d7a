"""Who is calling, and whether they may now: API keys to tenants, and per-tenant rate limits."""

from __future__ import annotations

from collections.abc import Mapping

from lepton_core.errors import LeptonError, Unauthenticated
from lepton_core.rpc import bearer_key
from lepton_gateway.limits import RateLimits
from lepton_ml.triton_model.request_gate import SECRET_PARAMETER

#: The header (gRPC metadata key) that carries the gateway's secret to Triton, which forwards it to
#: the serving model as a request parameter (``--grpc-header-forward-pattern``); the model refuses
#: inference without it (``lepton_ml/triton_model/gate.py``).
SECRET_HEADER = SECRET_PARAMETER
#: The caller's trace context, passed on to Triton (and by it to the model).
TRACE_HEADERS = ("traceparent", "tracestate")


class RateLimited(LeptonError):
    """The tenant sent more requests than its rate allows (RESOURCE_EXHAUSTED, HTTP 429)."""


class Gate:
    """Authenticates a call by its ``authorization: Bearer <key>`` and applies the tenant's rate limit."""

    def __init__(self, api_keys: Mapping[str, str], limits: RateLimits) -> None:
        self._keys = dict(api_keys)
        self._limits = limits

    def tenant(self, authorization: str | None) -> str:
        """The tenant of the key in an ``authorization`` value (``Bearer <key>``, or the bare key)."""
        if not authorization:
            raise Unauthenticated("no API key: send 'authorization: Bearer <key>'")
        key = bearer_key({"authorization": authorization})  # the services' reading of the header
        tenant = self._keys.get(key) if key else None
        if tenant is None:
            raise Unauthenticated("the API key is not valid")
        return tenant

    def admit(self, authorization: str | None) -> str:
        """:meth:`tenant`, then one request off its rate; RateLimited when there is none left."""
        tenant = self.tenant(authorization)
        if not self._limits.allow(tenant):
            raise RateLimited(
                f"tenant {tenant!r} is over its rate of {self._limits.rate_of(tenant):g} requests a second; "
                "slow down and retry"
            )
        return tenant
