from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Settings of the registry service (env prefix ``LEPTON_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_REGISTRY_", extra="ignore")
