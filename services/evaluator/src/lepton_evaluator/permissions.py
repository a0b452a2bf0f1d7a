"""The evaluator service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.evaluator.v1 import evaluator_pb2

from lepton_core.access import Rule, rules_for

SERVICE = evaluator_pb2.DESCRIPTOR.services_by_name["EvaluationService"].full_name

_TABLE = {
    "GetEvaluation": Rule("evaluations.read", "evaluation/{evaluation_id}"),
    "GetPlot": Rule("evaluations.read", "evaluation/{evaluation_id}"),
    "Evaluate": Rule("evaluations.write", "model/{model_name}"),
    "ListEvaluations": Rule("evaluations.read", "model/{model_name}"),
}

RULES = rules_for(SERVICE, _TABLE)
