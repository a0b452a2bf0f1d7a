"""The deployer service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.deployer.v1 import deployer_pb2

from lepton_core.access import Rule, rules_for

SERVICE = deployer_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name

_TABLE = {
    "GetDeployment": Rule("deployments.read", "deployment/{name}"),
    "ListDeployments": Rule("deployments.read"),
    "Deploy": Rule("deployments.write", "deployment/{name}"),
    "Rollback": Rule("deployments.write", "deployment/{name}"),
    "DeleteDeployment": Rule("deployments.write", "deployment/{name}"),
    "GetDeploymentStatus": Rule("deployments.read", "deployment/{name}"),
}

RULES = rules_for(SERVICE, _TABLE)
