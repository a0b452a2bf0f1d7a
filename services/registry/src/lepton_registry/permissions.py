"""The registry service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.registry.v1 import registry_pb2

from lepton_core.access import Rule, rules_for
from lepton_core.access_service import RULES as ACCESS_RULES

SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

_TABLE = {
    "GetModel": Rule("models.read", "model/{name}"),
    "ListModels": Rule("models.read"),
    "GetModelVersion": Rule("models.read", "model/{model_name}"),
    "ListModelVersions": Rule("models.read", "model/{model_name}"),
    "DownloadArtifact": Rule("models.read", "model/{model_name}"),
    "SetAlias": Rule("models.promote", "model/{model_name}"),
    "DeleteAlias": Rule("models.promote", "model/{model_name}"),
    "SetPromotionPolicy": Rule("models.promote", "model/{model_name}"),
    "GetLineage": Rule("models.read", "model/{model_name}"),
    "SearchModelVersions": Rule("models.read"),
    "UpdateModel": Rule("models.write", "model/{name}"),
    "UpdateModelVersion": Rule("models.write", "model/{model_name}"),
    "GetArtifactPublicKey": Rule("models.read"),
    "DeleteModelVersion": Rule("models.delete", "model/{model_name}"),
}

RULES = {**rules_for(SERVICE, _TABLE), **ACCESS_RULES}
