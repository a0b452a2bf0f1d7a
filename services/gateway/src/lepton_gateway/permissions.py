"""The gateway's permission table: the permission each ``GRPCInferenceService`` call needs (docs/security.md).

Everything the gateway answers needs ``deployments.predict``: what an inference key is for
(the gateway is for predictions; a viewer key has nothing to do here). The deployment a
per-model call names is its resource, so a grant on ``deployment/<name>`` that gives the
permission (a ``deployer`` grant) admits calls for that deployment alone. Model control, the
repository index, statistics, shared memory, trace and log settings are refused to every caller
whatever its role (:data:`lepton_gateway.grpc_api.REFUSED`): their rule says what they would
need, no key gets them here. ``tests/security/test_permissions.py`` fails when a method the
gateway registers is missing.
"""

from __future__ import annotations

from typing import Final

from tritonclient.grpc import service_pb2

from lepton_core.access import PREDICT, Rule, rules_for

SERVICE: Final = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

OPEN: Final = frozenset({"ServerLive", "ServerReady"})
"""Served without a key (health probes): their rule is not applied, and a key sent is not checked."""

_PREDICT = Rule(PREDICT)
_MODEL_INFER = Rule(PREDICT, "deployment/{model_name}")
_PER_MODEL = Rule(PREDICT, "deployment/{name}")
_CONTROL = Rule("deployments.write")

_TABLE: Final = {
    "ServerLive": _PREDICT,
    "ServerReady": _PREDICT,
    "ServerMetadata": _PREDICT,
    "ModelInfer": _MODEL_INFER,
    "ModelStreamInfer": _MODEL_INFER,
    "ModelMetadata": _PER_MODEL,
    "ModelReady": _PER_MODEL,
    "ModelConfig": _PER_MODEL,
    "ModelStatistics": _CONTROL,
    "RepositoryIndex": _CONTROL,
    "RepositoryModelLoad": _CONTROL,
    "RepositoryModelUnload": _CONTROL,
    "SystemSharedMemoryStatus": _CONTROL,
    "SystemSharedMemoryRegister": _CONTROL,
    "SystemSharedMemoryUnregister": _CONTROL,
    "CudaSharedMemoryStatus": _CONTROL,
    "CudaSharedMemoryRegister": _CONTROL,
    "CudaSharedMemoryUnregister": _CONTROL,
    "TraceSetting": _CONTROL,
    "LogSettings": _CONTROL,
}

RULES: Final = rules_for(SERVICE, _TABLE)


def full_name(method: str) -> str:
    """``/inference.GRPCInferenceService/<method>``: how :data:`RULES` and the audit trail name a call."""
    return f"/{SERVICE}/{method}"
