"""The monitor service's permission table: the permission each RPC needs (docs/security.md).

A method missing here is refused to every caller; ``tests/security/test_permissions.py``
fails when one is missing.
"""

from __future__ import annotations

from lepton.monitor.v1 import monitor_pb2

from lepton_core.access import Rule, rules_for

SERVICE = monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name

_TABLE = {
    "GetPredictionStats": Rule("monitor.read", "deployment/{deployment}"),
    "GetServingMetrics": Rule("monitor.read", "deployment/{deployment}"),
    "GetDriftReport": Rule("monitor.read", "deployment/{deployment}"),
    "SendLabels": Rule("monitor.write", "deployment/{deployment}"),
    "GetLivePerformance": Rule("monitor.read", "deployment/{deployment}"),
    "SetRules": Rule("monitor.write", "deployment/{deployment}"),
    "ListRules": Rule("monitor.read", "deployment/{deployment}"),
    "ListAlerts": Rule("monitor.read", "deployment/{deployment}"),
    "SetRetrainingPolicy": Rule("monitor.write"),
    "GetRetrainingPolicy": Rule("monitor.read", "deployment/{deployment}"),
    "QueryPredictionLogs": Rule("monitor.read", "deployment/{deployment}"),
    "SummarizeLogs": Rule("monitor.read", "deployment/{deployment}"),
}

RULES = rules_for(SERVICE, _TABLE)
