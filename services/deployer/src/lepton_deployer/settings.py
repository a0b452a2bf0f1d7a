from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class DeployerSettings(ServiceSettings):
    """Settings of the deployer service (env prefix ``LEPTON_DEPLOYER_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_DEPLOYER_", extra="ignore")

    triton_url: str = Field("127.0.0.1:8001", description="gRPC address of the default Triton host.")
    registry_url: str = Field("127.0.0.1:50054", description="gRPC address of the registry (Deploy by alias).")
    auto_deploy: bool = Field(
        True,
        description="Deploy each model's first version to a deployment named after the model, "
        "which then follows every new version ('latest').",
    )
    model_nats_url: str | None = Field(
        None, description="NATS URL the served models log predictions to (default: nats_url)."
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
