"""The trainer service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.trainer.v1 import trainer_pb2

from lepton_core.access import Rule, rules_for

SERVICE = trainer_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name

_TABLE = {
    "SubmitTraining": Rule("jobs.write", "model/{model_name}"),
    "GetTrainingJob": Rule("jobs.read", "job/{job_id}"),
    "ListTrainingJobs": Rule("jobs.read"),
    "WatchTrainingJob": Rule("jobs.read", "job/{job_id}"),
    "CancelTrainingJob": Rule("jobs.write", "job/{job_id}"),
    "ListAlgorithms": Rule("jobs.read"),
}

RULES = rules_for(SERVICE, _TABLE)
