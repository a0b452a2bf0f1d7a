"""Settings of the inference gateway (env prefix ``LEPTON_GATEWAY_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings, refuse_plaintext_beyond_loopback
from lepton_core.triton_pool import PoolSettings


class GatewaySettings(ServiceSettings, PoolSettings):
    """Settings of the gateway; ``grpc_port`` 0 means 50057.

    API keys are not settings: the gateway follows the platform's key records on NATS (the
    ``keys`` bucket), as every service does (docs/security.md, 'Keys and roles').
    """

    model_config = SettingsConfigDict(env_prefix="LEPTON_GATEWAY_", extra="ignore")

    inference_secret_file: str | None = Field(
        None,
        description="File holding the secret the gateway sends Triton with each request (header "
        "lepton-inference-secret); the serving model refuses inference without it. None: requests go without "
        "it, and the model refuses them.",
    )
    http_port: int = Field(0, ge=0, description="Port of the KServe V2 REST API; 0 serves none.")
    http_host: str = Field("127.0.0.1", description="Address the REST API binds.")
    rate_per_s: float = Field(
        10_000.0, ge=0, description="Requests a second each tenant may send (a token bucket); 0: no limit."
    )
    rate_burst: float = Field(
        0.0, ge=0, description="Requests a tenant may send at once above the rate (the bucket's size); 0: rate_per_s."
    )
    tenant_rates: dict[str, float] = Field(
        default_factory=dict, description='Per-tenant rate_per_s overrides, as JSON ({"acme": 50}).'
    )
    front: Literal["nginx", "none"] = Field(
        "nginx",
        description="What answers gRPC ModelInfer on the public port: nginx with the Lua fast path "
        "(lepton_gateway.front; Debian's nginx-light and libnginx-mod-http-lua), the gateway process behind it "
        "on a Unix socket; or none: the gateway process alone.",
    )
    front_workers: int = Field(1, ge=1, le=64, description="nginx worker processes (one a core to spare).")

    forward_timeout_s: float = Field(
        60.0, gt=0, description="Longest wait for Triton's answer when the caller set no deadline."
    )

    @model_validator(mode="after")
    def _rest_plaintext_on_loopback(self) -> GatewaySettings:
        """Plaintext REST beyond loopback needs ``insecure``; nginx serves it over TLS when there is a certificate."""
        if self.http_port and not (self.front == "nginx" and self.tls_cert_file):
            refuse_plaintext_beyond_loopback("http_host", self.http_host, self.insecure)
        return self
