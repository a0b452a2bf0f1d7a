"""Deploying a model version on Triton through its model-control API.

Model files travel inside the load request (``files={"file:<v>/...": bytes}``),
so Triton needs no shared filesystem with the deployer.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from enum import StrEnum
from importlib import resources

import tritonclient.grpc.aio as triton_aio
from pydantic import BaseModel
from tritonclient.utils import InferenceServerException

from lepton_core import artifacts
from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore
from lepton_core.errors import Unavailable
from lepton_core.wire import now

INPUT_NAME = "features"
TEXT_INPUT_NAME = "text_features"
OUTPUT_NAME = "prediction"


class DeploymentState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class DeploymentRecord(BaseModel):
    """A deployment, keyed ``<tenant>.<name>`` in KV ``deployments``."""

    tenant: str
    name: str
    state: DeploymentState
    model_name: str
    model_version: int
    dataset_id: str = ""
    dataset_version_id: str = ""
    training_job_id: str = ""
    evaluation_id: str = ""
    triton_model: str
    triton_url: str
    feature_columns: list[str] = []
    text_columns: list[str] = []
    error: str = ""
    updated_at: datetime


class ModelConfigOptions(BaseModel):
    nats_url: str
    log_sample_rate: float
    max_batch_size: int
    max_queue_delay_us: int


def triton_model_name(tenant: str, deployment: str) -> str:
    """Tenant-qualified, so two tenants' deployments of the same name never collide in Triton."""
    return f"{tenant}--{deployment}"


def model_config(name: str, signature: artifacts.Signature, labels: dict[str, str], opts: ModelConfigOptions) -> str:
    """The Triton model configuration (JSON) for a Python-backend Lepton model.

    Numeric inputs travel as one FP64 matrix; text inputs (only models trained on a
    recipe over text columns take them) as one BYTES matrix beside it.
    """
    params = {**labels, "nats_url": opts.nats_url, "log_sample_rate": str(opts.log_sample_rate)}
    inputs = [{"name": INPUT_NAME, "data_type": "TYPE_FP64", "dims": [len(signature.numeric_inputs())]}]
    if signature.text_inputs():
        inputs.append({"name": TEXT_INPUT_NAME, "data_type": "TYPE_STRING", "dims": [len(signature.text_inputs())]})
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": opts.max_batch_size,
            "input": inputs,
            "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP64", "dims": [1]}],
            "dynamic_batching": {"max_queue_delay_microseconds": opts.max_queue_delay_us},
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
            "parameters": {k: {"string_value": v} for k, v in params.items()},
        }
    )


def serving_model_source() -> bytes:
    """The Python-backend model that serves every Lepton bundle."""
    return (resources.files("lepton_core") / "triton_model" / "model.py").read_bytes()


class Deployer:
    def __init__(
        self,
        store: RecordStore[DeploymentRecord],
        objects: ObjectStore,
        triton_url: str,
        opts: ModelConfigOptions,
        load_timeout: float,
    ) -> None:
        self.store = store
        self._objects = objects
        self._triton_url = triton_url
        self._opts = opts
        self._load_timeout = load_timeout

    async def get(self, tenant: str, name: str) -> DeploymentRecord:
        return (await self.store.require(f"{tenant}.{name}", f"deployment {name!r}")).value

    async def list(self, tenant: str) -> list[DeploymentRecord]:
        return await self.store.values(f"{tenant}.*")

    async def deploy(self, draft: DeploymentRecord, artifact: ObjectRefRecord) -> DeploymentRecord:
        """Loads the version into Triton and waits until it is ready. Idempotent per version."""
        key = f"{draft.tenant}.{draft.name}"
        current = await self.store.get(key)
        if (
            current is not None
            and current.value.state == DeploymentState.READY
            and current.value.model_version == draft.model_version
        ):
            return current.value
        await self.store.put(key, draft.model_copy(update={"state": DeploymentState.LOADING, "updated_at": now()}))
        try:
            files = artifacts.unpack_files(await self._objects.get(artifact))
            signature = artifacts.Signature(**json.loads(files[artifacts.SIGNATURE_FILE]))
            draft = draft.model_copy(
                update={"feature_columns": signature.numeric_inputs(), "text_columns": signature.text_inputs()}
            )
            version = str(draft.model_version)
            config = model_config(
                draft.triton_model,
                signature,
                {
                    "tenant": draft.tenant,
                    "deployment": draft.name,
                    "model_name": draft.model_name,
                    "model_version": version,
                },
                self._opts,
            )
            payload = {f"file:{version}/model.py": serving_model_source()}
            payload.update({f"file:{version}/{name}": data for name, data in files.items()})
            client = triton_aio.InferenceServerClient(self._triton_url)
            try:
                await client.load_model(
                    draft.triton_model, config=config, files=payload, client_timeout=self._load_timeout
                )
                await _wait_ready(client, draft.triton_model, version, self._load_timeout)
            finally:
                await client.close()
        except (TimeoutError, InferenceServerException, Unavailable) as exc:
            failed = draft.model_copy(update={"state": DeploymentState.FAILED, "error": str(exc), "updated_at": now()})
            await self.store.put(key, failed)
            return failed
        ready = draft.model_copy(update={"state": DeploymentState.READY, "error": "", "updated_at": now()})
        await self.store.put(key, ready)
        return ready


async def _wait_ready(client: triton_aio.InferenceServerClient, name: str, version: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await client.is_model_ready(name, version):
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"Triton did not report {name} v{version} ready within {timeout:.0f}s")
        await asyncio.sleep(0.1)
