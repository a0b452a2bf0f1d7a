from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings
from lepton_core.triton_pool import PoolSettings


class DeployerSettings(ServiceSettings, PoolSettings):
    """Settings of the deployer service (env prefix ``LEPTON_DEPLOYER_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_DEPLOYER_", extra="ignore")

    triton_control_secret_file: str | None = Field(
        None,
        description="File holding the secret that opens Triton's model control (load, unload, model config, "
        "shared memory, trace, logging) on every host; none: the hosts restrict nothing (docs/security.md).",
    )
    triton_statistics_secret_file: str | None = Field(
        None, description="File holding the secret that opens Triton's statistics on every host."
    )
    inference_secret_file: str | None = Field(
        None,
        description="File holding the secret the serving models require of inference (the gateway's); the smoke "
        "test of each rollout sends it. None: smoke tests are refused, so no rollout completes.",
    )
    registry_url: str = Field("127.0.0.1:50054", description="gRPC address of the registry (Deploy by alias).")
    auto_deploy: bool = Field(
        True,
        description="Deploy each model's first version to a deployment named after the model, "
        "which then follows every new version ('latest').",
    )
    log_sample_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Default fraction of requests whose predictions are logged."
    )
    log_max_per_s: float = Field(
        1000.0,
        ge=0.0,
        description="Default most requests a second each model instance logs (a sample beyond it; 0: no limit). "
        "The monitor's windows keep at most 10,000 samples a minute, so more mostly costs serving CPU.",
    )
    max_batch_size: int = Field(64, ge=1, description="Default Triton max_batch_size of deployed models.")
    max_queue_delay_us: int = Field(200, ge=0, description="Default Triton dynamic batching max queue delay.")
    load_timeout_s: float = Field(180.0, description="Longest wait for Triton to load a model.")
    reconcile_interval_s: float = Field(
        5.0, gt=0, description="How often every host is checked for the models it should serve."
    )
    drain_s: float = Field(
        1.0, ge=0, description="Wait between pointing routes at a new version and unloading the old one."
    )
    artifact_public_key_file: str | None = Field(
        None,
        description="PEM file of the platform's Ed25519 artifact public key(s): every artifact's signature is "
        "checked against it before a byte is read; the service refuses to start without it.",
    )
