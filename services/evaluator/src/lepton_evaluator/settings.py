from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class EvaluatorSettings(ServiceSettings):
    """Settings of the evaluator service (env prefix ``LEPTON_EVALUATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_EVALUATOR_", extra="ignore")
