"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``LEPTON_<SERVICE>_``), builds it once in ``main()`` and passes it down.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lepton_core.tls import Peer


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``model_config`` with their prefix."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_", extra="ignore")

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    nats_replicas: int = Field(1, description="Replicas for streams, KV and object stores (3 on a cluster).")
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(0, description="gRPC port; 0 picks the service's default.")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="API key to tenant, as JSON. No keys means every call is refused.",
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC endpoint for traces; none disables export.")
    trace_export_delay_ms: int = Field(500, description="How long spans wait in the batch before export.")
    log_level: str = Field("INFO", description="Python log level name.")
    max_deliver: int = Field(5, description="Deliveries of one event before it goes to the dead-letter subject.")
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) the gRPC server presents; set with tls_key_file to serve TLS."
    )
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: str | None = Field(
        None,
        description="PEM CA that peer services' certificates must chain to; when set, calls to peers use TLS "
        "even at a host:port address (without it, only grpcs:// peers do, against the system's roots).",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> ServiceSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: set both to serve TLS, or neither")
        return self

    def peer(self, url: str) -> Peer:
        """How this service reaches another at ``url``: TLS for ``grpcs://`` or when tls_ca_file is set."""
        return Peer.parse(url, self.tls_ca_file)
