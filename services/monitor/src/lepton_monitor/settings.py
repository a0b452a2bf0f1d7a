from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service (env prefix ``LEPTON_MONITOR_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_MONITOR_", extra="ignore")
