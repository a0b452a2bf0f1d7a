from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Settings of the registry service (env prefix ``LEPTON_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_REGISTRY_", extra="ignore")

    data_url: str = Field("127.0.0.1:50051", description="gRPC address of the data service (lineage).")
    trainer_url: str = Field("127.0.0.1:50052", description="gRPC address of the trainer (lineage).")
    evaluator_url: str = Field("127.0.0.1:50053", description="gRPC address of the evaluator (lineage).")
    deployer_url: str = Field("127.0.0.1:50055", description="gRPC address of the deployer (lineage).")
