from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class EvaluatorSettings(ServiceSettings):
    """Settings of the evaluator service (env prefix ``LEPTON_EVALUATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_EVALUATOR_", extra="ignore")

    registry_url: str = Field("127.0.0.1:50054", description="gRPC address of the registry (Evaluate finds versions).")
    data_url: str = Field("127.0.0.1:50051", description="gRPC address of the data service (Evaluate reads datasets).")
    artifact_public_key_file: str | None = Field(
        None,
        description="PEM file of the platform's Ed25519 artifact public key(s): every artifact's signature is "
        "checked against it before a byte is read; the service refuses to start without it.",
    )
