"""Settings of the web console (env prefix ``LEPTON_CONSOLE_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lepton_core.settings import refuse_plaintext_beyond_loopback


class ConsoleSettings(BaseSettings):
    """Settings of the console: where it listens, which platform it shows, and its TLS files.

    The console holds no key of its own: each person signs in with theirs, and every call it
    makes to the platform carries that key (docs/architecture.md, 'The console').
    """

    model_config = SettingsConfigDict(env_prefix="LEPTON_CONSOLE_", extra="ignore", hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Address the console's HTTP server binds.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the console's HTTP server.")
    platform_url: str = Field(
        "127.0.0.1:50051",
        description="The platform, as the SDK's LEPTON_URL: host:port of its data service (the others on the next "
        "ports), or grpcs://host:port for TLS.",
    )
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) the console serves HTTPS with; set with tls_key_file."
    )
    tls_key_file: str | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_ca_file: str | None = Field(
        None,
        description="PEM CA the platform's certificate chains to (the SDK's root_certificates); None: the system's.",
    )
    insecure: bool = Field(
        False,
        description="Serve plaintext HTTP on a host beyond loopback (a network you trust). Without it the console "
        "refuses to start there unless tls_cert_file and tls_key_file are set: API keys would cross the network "
        "unencrypted.",
    )
    session_idle_s: float = Field(
        8 * 3600.0, gt=0, description="A signed-in session unused this long is forgotten (its key with it)."
    )
    events_replay_s: float = Field(
        300.0, ge=0, description="The events page starts with the tenant's events of this many seconds past."
    )
    upload_max_bytes: int = Field(
        256 * 1024**2, gt=0, description="Largest dataset file the console takes from a browser, in bytes."
    )
    log_level: str = Field("INFO", description="Python log level name.")

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> ConsoleSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file: set both to serve HTTPS, or neither")
        if not self.tls_cert_file:
            refuse_plaintext_beyond_loopback("host", self.host, self.insecure)
        return self
