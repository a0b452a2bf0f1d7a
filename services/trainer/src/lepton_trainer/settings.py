from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lepton_core.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Settings of the trainer service (env prefix ``LEPTON_TRAINER_``)."""

    model_config = SettingsConfigDict(env_prefix="LEPTON_TRAINER_", extra="ignore")

    data_url: str = Field("127.0.0.1:50051", description="gRPC address of the data service.")
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Name of this worker in job records.",
    )
    run_worker: bool = Field(True, description="Pull and run jobs in this process (off: API only).")
    job_ack_wait_s: float = Field(
        15.0, description="Seconds without a heartbeat before a job moves to another worker (a worker that died)."
    )
    device: str = Field(
        "cpu",
        pattern="^(cpu|cuda|auto)$",
        description="Where neural networks train when a job does not say: cpu, cuda, or auto (CUDA when present).",
    )
    artifact_signing_key_file: str | None = Field(
        None,
        description="PEM file of the platform's Ed25519 artifact signing key (private, mode 0600): every "
        "artifact is signed with it where it is made; the trainer refuses to start without it.",
    )
