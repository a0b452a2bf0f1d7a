"""Settings shared by every service.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix``
(``LEPTON_<SERVICE>_``), builds it once in ``main()`` and passes it down.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lepton_core.tls import Peer, certificate_pair, is_loopback


def refuse_plaintext_beyond_loopback(setting: str, host: str, insecure: bool) -> None:
    """ValueError naming ``setting`` when a plaintext server would listen beyond loopback unasked."""
    if not insecure and not is_loopback(host):
        raise ValueError(
            f"{setting}: {host} reaches beyond this machine and the server would be plaintext, so API keys would "
            "cross the network unencrypted; set tls_cert_file and tls_key_file to serve TLS there, or insecure=true "
            "to serve plaintext on a network you trust"
        )


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``model_config`` with their prefix."""

    # A refused value is never quoted back by pydantic: ``api_keys`` holds secrets.
    model_config = SettingsConfigDict(env_prefix="LEPTON_", extra="ignore", hide_input_in_errors=True)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    nats_nkey_seed_file: str | None = Field(
        None,
        description="File holding this service's NATS nkey seed (mode 0600); the platform's servers refuse "
        "connections without one. `lepton up` writes one per service; see docs/security.md.",
    )
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(0, description="gRPC port; 0 picks the service's default.")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Retired: API keys are records now (docs/security.md, 'Keys and roles'). A service given "
        "keys here refuses to start, rather than run with keys nobody manages.",
    )
    service_keys: dict[str, str] = Field(
        default_factory=dict,
        description='The platform\'s services\' public NATS nkeys (U...), as JSON {"trainer": "U..."}: a call '
        "another service makes on a caller's behalf carries a token signed with its nkey, checked against these. "
        "Public keys, not secrets; `lepton up` sets them.",
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC endpoint for traces; none disables export.")
    trace_export_delay_ms: int = Field(500, description="How long spans wait in the batch before export.")
    log_level: str = Field("INFO", description="Python log level name.")
    max_deliver: int = Field(5, description="Deliveries of one event before it goes to the dead-letter subject.")
    ack_wait_s: float = Field(
        15.0,
        gt=0,
        description="Seconds an event being handled may go without the handler's heartbeat (sent every third of "
        "it) before JetStream delivers it again: how soon the work of a process that died moves on, to its "
        "restart or to another process. Consumers whose work needs more name their own.",
    )
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) the gRPC server presents; set with tls_key_file to serve TLS."
    )
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file.")
    insecure: bool = Field(
        False,
        description="Serve plaintext gRPC on a grpc_host beyond loopback (a network you trust). Without it, a "
        "service bound beyond loopback refuses to start unless tls_cert_file and tls_key_file are set: API keys "
        "would cross the network unencrypted.",
    )
    tls_require_client_cert: bool = Field(
        False,
        description="Mutual TLS: every caller (the other services, SDK clients) must present a certificate that "
        "chains to tls_ca_file, or the TLS handshake fails before any call. The service presents its own "
        "tls_cert_file to its peers, so that certificate needs the clientAuth extended key usage as well.",
    )
    tls_ca_file: str | None = Field(
        None,
        description="PEM CA that peer services' certificates must chain to; when set, calls to peers use TLS "
        "even at a host:port address (without it, only grpcs:// peers do, against the system's roots).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_are_records(cls, api_keys: Any) -> Any:
        """Refuses keys in the environment, naming the setting and never a key."""
        if api_keys:
            setting = f"{str(cls.model_config.get('env_prefix', '')).upper()}API_KEYS"
            raise ValueError(
                f"{setting}: API keys are no longer configured per process: they are records every service "
                "follows, created with `lepton keys create` (the first admin key from the registry's "
                "bootstrap_key_file, or by `lepton up`); unset it. See docs/security.md, 'Keys and roles'"
            )
        return {}

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> ServiceSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: set both to serve TLS, or neither")
        if self.tls_require_client_cert and not (self.tls_cert_file and self.tls_ca_file):
            raise ValueError(
                "tls_require_client_cert: mutual TLS needs tls_cert_file and tls_key_file (this service's "
                "certificate, also presented to its peers) and tls_ca_file (the CA callers' certificates chain to)"
            )
        if not self.tls_cert_file:
            refuse_plaintext_beyond_loopback("grpc_host", self.grpc_host, self.insecure)
        return self

    def peer(self, url: str) -> Peer:
        """How this service reaches another at ``url``: TLS for ``grpcs://`` or when tls_ca_file is set,
        presenting this service's certificate when it has one (for peers that require mutual TLS)."""
        pair = (
            certificate_pair(self.tls_cert_file, self.tls_key_file)
            if self.tls_cert_file and self.tls_key_file
            else None
        )
        return Peer.parse(url, self.tls_ca_file, pair)
