from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from lepton_core.quotas import PLANS
from lepton_core.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Settings of the registry service (env prefix ``LEPTON_REGISTRY_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_REGISTRY_", extra="ignore")

    data_url: str = Field("127.0.0.1:50051", description="gRPC address of the data service (lineage).")
    trainer_url: str = Field("127.0.0.1:50052", description="gRPC address of the trainer (lineage).")
    evaluator_url: str = Field("127.0.0.1:50053", description="gRPC address of the evaluator (lineage).")
    deployer_url: str = Field("127.0.0.1:50055", description="gRPC address of the deployer (lineage).")
    artifact_public_key_file: str | None = Field(
        None,
        description="PEM file of the platform's Ed25519 artifact public key(s), which GetArtifactPublicKey "
        "gives SDK clients so they verify every artifact they download; the registry refuses to start without it.",
    )
    bootstrap_key_file: str | None = Field(
        None,
        description="File (0600) holding the secret of the first operator key: at start the registry makes its "
        "record (role operator, tenant bootstrap_tenant) unless one exists. Delete the file once other keys exist; "
        "revoking the key (lepton keys revoke bootstrap) lasts across restarts.",
    )
    bootstrap_tenant: str = Field("default", description="The tenant of the bootstrap key.")
    default_plan: str = Field(
        "unlimited",
        description="The plan of every tenant no operator put on one (trial, team or unlimited; docs/security.md, "
        "'Quotas and plans'). unlimited keeps a platform of one's own as it was; a platform shared by many "
        "tenants sets trial, so a new tenant's use is bounded until an operator assigns its plan.",
    )

    @field_validator("default_plan")
    @classmethod
    def _a_plan(cls, value: str) -> str:
        if value not in PLANS:
            raise ValueError(f"default_plan: {value!r} is not a plan; expected one of {', '.join(PLANS)}")
        return value
