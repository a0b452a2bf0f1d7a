"""Every RPC of every service has a permission, and every entry of a table is a real RPC.

The services' tables (``<service>.permissions.RULES``) are what the interceptor checks; a
method missing from one is refused to every caller, so a new RPC without an entry fails here
before it fails for users. The descriptors, not the tables, list the RPCs.
"""

from __future__ import annotations

import importlib

import pytest
from google.protobuf.descriptor import FileDescriptor
from lepton.access.v1 import access_pb2
from lepton.data.v1 import data_pb2
from lepton.deployer.v1 import deployer_pb2
from lepton.evaluator.v1 import evaluator_pb2
from lepton.events.v1 import stream_pb2
from lepton.monitor.v1 import monitor_pb2
from lepton.registry.v1 import registry_pb2
from lepton.trainer.v1 import trainer_pb2

from lepton_core import event_stream
from lepton_core.access import ALL_PERMISSIONS, ROLES

#: What each process serves besides EventService (which every service serves).
SERVED: dict[str, list[FileDescriptor]] = {
    "data": [data_pb2.DESCRIPTOR],
    "trainer": [trainer_pb2.DESCRIPTOR],
    "evaluator": [evaluator_pb2.DESCRIPTOR],
    "registry": [registry_pb2.DESCRIPTOR, access_pb2.DESCRIPTOR],
    "deployer": [deployer_pb2.DESCRIPTOR],
    "monitor": [monitor_pb2.DESCRIPTOR],
}


def _methods(files: list[FileDescriptor]) -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    }


@pytest.mark.parametrize("service", sorted(SERVED))
def test_the_table_names_every_rpc_of_the_service_and_nothing_else(service: str) -> None:
    rules = {**importlib.import_module(f"lepton_{service}.permissions").RULES, **event_stream.RULES}
    methods = _methods([*SERVED[service], stream_pb2.DESCRIPTOR])
    assert sorted(methods - set(rules)) == [], f"RPCs of {service} without a permission"
    assert sorted(set(rules) - methods) == [], f"entries of {service}'s table that are no RPC"
    for method, rule in rules.items():
        assert rule.permission in ALL_PERMISSIONS, method


def test_the_gateway_table_names_every_rpc_it_registers() -> None:
    from lepton_gateway import grpc_api, permissions

    service = grpc_api.service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {f"/{service.full_name}/{m.name}" for m in service.methods}
    assert sorted(methods - set(permissions.RULES)) == []
    assert sorted(set(permissions.RULES) - methods) == []


def test_every_permission_some_rpc_needs_is_held_by_some_role_and_read_calls_need_read_permissions() -> None:
    tables = [importlib.import_module(f"lepton_{s}.permissions").RULES for s in SERVED] + [event_stream.RULES]
    needed = {rule.permission for table in tables for rule in table.values()}
    held = set().union(*ROLES.values())
    assert needed <= held
    for table in tables:
        for method, rule in table.items():
            name = method.rsplit("/", 1)[1]
            if name.startswith(("Get", "List", "Search", "Query", "Read", "Watch", "Summarize", "Download")):
                # Listing keys is managing them: a viewer sees no other key's name or role.
                assert rule.permission.endswith(".read") or method.endswith("/ListKeys"), method
            if name.startswith(("Delete",)) and "Alias" not in name and "Deployment" not in name:
                assert rule.permission.endswith(".delete"), method
