from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class DataSettings(ServiceSettings):
    """Settings of the data service (env prefix ``LEPTON_DATA_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_DATA_", extra="ignore")

    max_upload_bytes: int = Field(1024**3, description="Largest upload accepted, in bytes.")
    max_rows: int = Field(50_000_000, description="Most rows a dataset version may have.")
    max_columns: int = Field(10_000, description="Most columns a dataset version may have.")
    spool_dir: str | None = Field(
        None, description="Where uploads are spooled while they arrive (default: the temp dir)."
    )
