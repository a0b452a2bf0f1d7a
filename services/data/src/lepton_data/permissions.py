"""The data service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.data.v1 import data_pb2

from lepton_core.access import Rule, rules_for

SERVICE = data_pb2.DESCRIPTOR.services_by_name["DataService"].full_name

_TABLE = {
    "UploadDataset": Rule("datasets.write"),
    "GetDatasetVersion": Rule("datasets.read", "dataset_version/{version_id}"),
    "ListDatasetVersions": Rule("datasets.read", "dataset/{dataset_name}"),
    "GetDataset": Rule("datasets.read", "dataset/{dataset}"),
    "ListDatasets": Rule("datasets.read"),
    "DeleteDataset": Rule("datasets.delete", "dataset/{dataset}"),
    "UpdateSchema": Rule("datasets.write", "dataset_version/{version_id}"),
    "SetValidationRules": Rule("datasets.write", "dataset/{dataset}"),
    "ValidateVersion": Rule("datasets.write", "dataset_version/{version_id}"),
    "ApplyRecipe": Rule("datasets.write", "dataset_version/{version_id}"),
    "GetProfile": Rule("datasets.read", "dataset_version/{version_id}"),
    "SplitVersion": Rule("datasets.write", "dataset_version/{version_id}"),
    "ReadDataset": Rule("datasets.read", "dataset_version/{version_id}"),
}

RULES = rules_for(SERVICE, _TABLE)
