"""The Triton model a deployment becomes: its name, its configuration, and the files its load request carries.

Model files travel inside Triton's load request (``files={"file:<v>/...": bytes}``),
so no host shares a filesystem with the deployer. Only the exact names of
:data:`TRITON_FILES` reach a model's folder: our ``model.py``, the signed artifact (which
the serving model verifies and unpacks in memory) and the deployer's ONNX conversion, so
nothing from an artifact can land as a module the Python backend would import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from lepton_deployer.backends import ONNX_FILE, ONNX_INFO_FILE
from lepton_deployer.records import INPUT_NAME, KINDS, OUTPUT_NAME, TEXT_INPUT_NAME, DeploymentRecord, ServingConfig
from lepton_ml import artifacts

#: The staged model of a rollout is ``<stable model><STAGED_SUFFIX>``.
STAGED_SUFFIX = "--next"
#: The serving model's source, written into each version folder.
SERVING_MODEL_FILE = "model.py"
#: What a version folder may receive besides :data:`SERVING_MODEL_FILE`; nothing else is sent.
TRITON_FILES = frozenset({artifacts.ARTIFACT_FILE, ONNX_FILE, ONNX_INFO_FILE})


def triton_model_name(tenant: str, deployment: str) -> str:
    """Tenant-qualified, so two tenants' deployments of the same name never collide in Triton."""
    return f"{tenant}--{deployment}"


def model_config(
    name: str,
    signature: artifacts.Signature,
    labels: dict[str, str],
    config: ServingConfig,
    versions: list[int],
) -> str:
    """The Triton model configuration (JSON) for a Python-backend Lepton model.

    Numeric inputs travel as one FP64 matrix; text inputs (only models trained on a
    recipe over text columns take them) as one BYTES matrix beside it.
    """
    params = {
        **labels,
        "log_sample_rate": str(config.log_sample_rate),
        "log_max_per_s": str(config.log_max_per_s),
    }
    inputs = [{"name": INPUT_NAME, "data_type": "TYPE_FP64", "dims": [len(signature.numeric_inputs())]}]
    if signature.text_inputs():
        inputs.append({"name": TEXT_INPUT_NAME, "data_type": "TYPE_STRING", "dims": [len(signature.text_inputs())]})
    batching: dict[str, Any] = {"max_queue_delay_microseconds": config.max_queue_delay_us}
    if config.preferred_batch_sizes:
        batching["preferred_batch_size"] = sorted(config.preferred_batch_sizes)
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": config.max_batch_size,
            "input": inputs,
            "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP64", "dims": [1]}],
            "dynamic_batching": batching,
            "instance_group": [{"kind": KINDS[config.instance_kind], "count": config.instance_count}],
            "version_policy": {"specific": {"versions": sorted(versions)}},
            "parameters": {k: {"string_value": v} for k, v in params.items()},
        }
    )


def serving_model_source() -> bytes:
    """The Python-backend model that serves every Lepton bundle."""
    return (resources.files("lepton_ml") / "triton_model" / "model.py").read_bytes()


def load_request(
    record: DeploymentRecord,
    triton_model: str,
    versions: list[int],
    version: int,
    files: Mapping[str, bytes],
    other_files: Mapping[str, bytes] | None,
) -> tuple[str, dict[str, bytes]]:
    """The configuration and files that load ``versions`` of ``triton_model`` for ``record``.

    ``version`` gets ``files`` (a bundle with its backend's extra files); any other of
    ``versions`` gets ``other_files`` (the version served before), or ``files`` when none.
    Of each, only the names in :data:`TRITON_FILES` are sent.
    """
    signature = artifacts.signature_of(dict(files))
    labels = {
        "tenant": record.tenant,
        "deployment": record.name,
        "model_name": record.model_name,
        "model_version": str(max(versions)),
    }
    config = model_config(triton_model, signature, labels, record.config, versions)
    source = serving_model_source()
    payload: dict[str, bytes] = {}
    for v in versions:
        chosen = files if v == version else (other_files or files)
        payload[f"file:{v}/{SERVING_MODEL_FILE}"] = source
        payload.update({f"file:{v}/{n}": data for n, data in chosen.items() if n in TRITON_FILES})
    return config, payload
