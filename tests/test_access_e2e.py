"""Keys as records, roles and the audit trail, against the embedded platform (real processes).

- The role matrix: each role against a representative read and write RPC of every service.
  The write requests name things that do not exist, so an allowed call changes nothing: it is
  answered NOT_FOUND or INVALID_ARGUMENT by the handler, past the permission check, while a
  refused one is PERMISSION_DENIED naming the permission.
- Revocation reaches every service within two seconds, expiry at the expiry, with no restart.
- Every mutating call and every refusal is an audit record, and the pipeline's are found by
  its trace id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from lepton.access.v1 import access_pb2, access_pb2_grpc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core.access import ROLES
from lepton_core.rpc import client_channel
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = pytest.mark.e2e

Call = tuple[str, str, Callable[[grpc.aio.Channel], Any], Message, str]
"""(service, method, stub maker, request, permission)."""

CALLS: list[Call] = [
    ("data", "ListDatasets", data_pb2_grpc.DataServiceStub, data_pb2.ListDatasetsRequest(), "datasets.read"),
    (
        "data",
        "UpdateSchema",
        data_pb2_grpc.DataServiceStub,
        data_pb2.UpdateSchemaRequest(version_id="dv_000000000000"),
        "datasets.write",
    ),
    (
        "data",
        "DeleteDataset",
        data_pb2_grpc.DataServiceStub,
        data_pb2.DeleteDatasetRequest(dataset="no-such-dataset"),
        "datasets.delete",
    ),
    (
        "trainer",
        "ListTrainingJobs",
        trainer_pb2_grpc.TrainingServiceStub,
        trainer_pb2.ListTrainingJobsRequest(),
        "jobs.read",
    ),
    (
        "trainer",
        "CancelTrainingJob",
        trainer_pb2_grpc.TrainingServiceStub,
        trainer_pb2.GetTrainingJobRequest(job_id="job_000000000000"),
        "jobs.write",
    ),
    (
        "evaluator",
        "ListEvaluations",
        evaluator_pb2_grpc.EvaluationServiceStub,
        evaluator_pb2.ListEvaluationsRequest(model_name="no-such-model"),
        "evaluations.read",
    ),
    (
        "evaluator",
        "Evaluate",
        evaluator_pb2_grpc.EvaluationServiceStub,
        evaluator_pb2.EvaluateRequest(model_name="no-such-model"),
        "evaluations.write",
    ),
    ("registry", "ListModels", registry_pb2_grpc.RegistryServiceStub, registry_pb2.ListModelsRequest(), "models.read"),
    (
        "registry",
        "UpdateModel",
        registry_pb2_grpc.RegistryServiceStub,
        registry_pb2.UpdateModelRequest(name="no-such-model", description="x"),
        "models.write",
    ),
    (
        "registry",
        "SetAlias",
        registry_pb2_grpc.RegistryServiceStub,
        registry_pb2.SetAliasRequest(model_name="no-such-model", alias="champion", version=1),
        "models.promote",
    ),
    (
        "deployer",
        "ListDeployments",
        deployer_pb2_grpc.DeploymentServiceStub,
        deployer_pb2.ListDeploymentsRequest(),
        "deployments.read",
    ),
    (
        "deployer",
        "Rollback",
        deployer_pb2_grpc.DeploymentServiceStub,
        deployer_pb2.RollbackRequest(name="no-such-deployment"),
        "deployments.write",
    ),
    (
        "monitor",
        "ListAlerts",
        monitor_pb2_grpc.MonitorServiceStub,
        monitor_pb2.ListAlertsRequest(deployment="no-such-deployment"),
        "monitor.read",
    ),
    (
        "monitor",
        "SendLabels",
        monitor_pb2_grpc.MonitorServiceStub,
        monitor_pb2.SendLabelsRequest(deployment="no-such-deployment"),
        "monitor.write",
    ),
    ("registry", "ListKeys", access_pb2_grpc.AccessServiceStub, access_pb2.ListKeysRequest(), "keys.manage"),
    ("registry", "QueryAudit", access_pb2_grpc.AccessServiceStub, access_pb2.QueryAuditRequest(limit=1), "audit.read"),
]

READS = [c for c in CALLS if c[1] in ("ListDatasets", "ListTrainingJobs", "ListModels", "ListDeployments")]


async def _code(platform: EmbeddedPlatform, key: str, call: Call) -> tuple[grpc.StatusCode, str]:
    service, method, stub, request, _ = call
    async with client_channel(platform.addresses[service], key) as ch:
        try:
            await getattr(stub(ch), method)(request, timeout=15)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _access(platform: EmbeddedPlatform, key: str, method: str, request: Message) -> Any:
    async with client_channel(platform.addresses["registry"], key) as ch:
        return await getattr(access_pb2_grpc.AccessServiceStub(ch), method)(request, timeout=15)


async def _new_key(platform: EmbeddedPlatform, role: str, name: str, **fields: Any) -> access_pb2.CreatedKey:
    request = access_pb2.CreateKeyRequest(role=role, name=f"{name}-{time.monotonic_ns()}", **fields)
    created: access_pb2.CreatedKey = await _access(platform, platform.api_key, "CreateKey", request)
    return created


async def test_each_role_may_call_what_its_permissions_name_and_is_refused_the_rest_by_name(
    platform: EmbeddedPlatform,
) -> None:
    wrong: list[str] = []
    for role in ROLES:
        key = (await _new_key(platform, role, f"matrix-{role}")).secret
        for call in CALLS:
            code, details = await _code(platform, key, call)
            allowed = call[4] in ROLES[role]
            if allowed and code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                wrong.append(f"{role} {call[1]}: refused {code.name} {details}")
            if not allowed and (code != grpc.StatusCode.PERMISSION_DENIED or call[4] not in details):
                wrong.append(
                    f"{role} {call[1]}: expected PERMISSION_DENIED naming {call[4]}, got {code.name} {details}"
                )
    assert wrong == []


async def test_a_revoked_key_is_refused_by_every_service_within_two_seconds(platform: EmbeddedPlatform) -> None:
    created = await _new_key(platform, "editor", "revoke-me")
    for call in READS:
        assert (await _code(platform, created.secret, call))[0] == grpc.StatusCode.OK, call[1]
    revoked = await _access(platform, platform.api_key, "RevokeKey", access_pb2.RevokeKeyRequest(key=created.key.id))
    start = time.monotonic()
    assert revoked.state == "revoked" and revoked.HasField("revoked")
    pending = {call[0]: call for call in READS}
    took: dict[str, float] = {}
    while pending and time.monotonic() - start < 5:
        for service, call in list(pending.items()):
            code, details = await _code(platform, created.secret, call)
            if code == grpc.StatusCode.UNAUTHENTICATED:
                assert f"the API key {created.key.id} was revoked" in details
                took[service] = time.monotonic() - start
                del pending[service]
        await asyncio.sleep(0.05)
    assert not pending, f"still accepted after 5 s by {sorted(pending)}"
    print(f"revocation reached all {len(took)} services in {max(took.values()):.3f} s")
    assert max(took.values()) < 2.0, took
    # Still listed, as revoked, with who made it; never its secret.
    listed = await _access(platform, platform.api_key, "ListKeys", access_pb2.ListKeysRequest(include_inactive=True))
    mine = next(k for k in listed.keys if k.id == created.key.id)
    assert mine.state == "revoked" and mine.creator.startswith("key_")
    assert created.secret not in str(listed)


async def test_a_key_stops_at_its_expiry_and_a_rotated_one_hands_over(platform: EmbeddedPlatform) -> None:
    short = await _new_key(platform, "viewer", "expiring", ttl_seconds=2)
    assert (await _code(platform, short.secret, READS[0]))[0] == grpc.StatusCode.OK
    await asyncio.sleep(2.2)
    code, details = await _code(platform, short.secret, READS[0])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in details

    old = await _new_key(platform, "viewer", "rotating")
    new = await _access(platform, platform.api_key, "RotateKey", access_pb2.RotateKeyRequest(key=old.key.id))
    assert new.secret != old.secret and new.key.name == old.key.name and new.key.role == "viewer"
    await asyncio.sleep(0.5)
    assert (await _code(platform, old.secret, READS[0]))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert (await _code(platform, new.secret, READS[0]))[0] == grpc.StatusCode.OK


async def test_no_key_reaches_beyond_its_maker(platform: EmbeddedPlatform) -> None:
    admin = await _new_key(platform, "admin", "tenant-admin")
    # An admin makes keys of its tenant up to its own reach, not an operator, not in another tenant.
    for request, field in (
        (access_pb2.CreateKeyRequest(role="operator", name="escalate"), "role"),
        (access_pb2.CreateKeyRequest(role="viewer", name="elsewhere", tenant="intruder"), "tenant"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _access(platform, admin.secret, "CreateKey", request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
        assert (err.value.details() or "").startswith(f"{field}:")
    # The intruder tenant's admin sees none of default's keys, and cannot revoke one by id.
    intruder = platform.key_for("intruder")
    listed = await _access(platform, intruder, "ListKeys", access_pb2.ListKeysRequest(include_inactive=True))
    assert listed.keys and {k.tenant for k in listed.keys} == {"intruder"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _access(platform, intruder, "RevokeKey", access_pb2.RevokeKeyRequest(key=admin.key.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Bad input names the field.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _access(platform, admin.secret, "CreateKey", access_pb2.CreateKeyRequest(role="root"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "role:" in (err.value.details() or "")
    # A tenant that is not a name would reach into subjects and key prefixes.
    for tenant in ("evil.>", "a--b", "Acme"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _access(
                platform, platform.api_key, "CreateKey", access_pb2.CreateKeyRequest(role="viewer", tenant=tenant)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("tenant:"), err.value.details()
    who = await _access(platform, admin.secret, "WhoAmI", access_pb2.WhoAmIRequest())
    assert (who.role, who.tenant, who.key_id) == ("admin", platform.tenant, admin.key.id)
    assert "keys.manage" in who.permissions and "tenants.manage" not in who.permissions


async def test_every_mutation_and_refusal_is_an_audit_record(platform: EmbeddedPlatform) -> None:
    viewer = await _new_key(platform, "viewer", "audited-viewer")
    editor = await _new_key(platform, "editor", "audited-editor")
    await _code(platform, viewer.secret, CALLS[1])  # UpdateSchema: refused
    await _code(platform, editor.secret, CALLS[1])  # allowed, then refused by the handler: no changes given
    await _code(platform, editor.secret, READS[0])  # a read: not recorded
    trail = await _access(platform, platform.api_key, "QueryAudit", access_pb2.QueryAuditRequest())
    by_viewer = [r for r in trail.records if r.key_id == viewer.key.id]
    by_editor = [r for r in trail.records if r.key_id == editor.key.id]
    assert [(r.service, r.method.rsplit("/", 1)[1], r.outcome, r.permission) for r in by_viewer] == [
        ("data", "UpdateSchema", "PERMISSION_DENIED", "datasets.write")
    ]
    assert [(r.method.rsplit("/", 1)[1], r.outcome) for r in by_editor] == [("UpdateSchema", "INVALID_ARGUMENT")]
    record = by_editor[0]
    assert record.tenant == platform.tenant and record.principal == f"key:{editor.key.id}"
    assert record.resource == "dataset_version/dv_000000000000" and len(record.trace_id) == 32
    # Filters: by principal, and another tenant's trail is not the caller's to read.
    only = await _access(
        platform, platform.api_key, "QueryAudit", access_pb2.QueryAuditRequest(principal=viewer.key.id)
    )
    assert {r.key_id for r in only.records} == {viewer.key.id}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _access(platform, editor.secret, "QueryAudit", access_pb2.QueryAuditRequest())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "audit.read" in (err.value.details() or "")
    intruder = await _access(platform, platform.key_for("intruder"), "QueryAudit", access_pb2.QueryAuditRequest())
    assert all(r.tenant == "intruder" for r in intruder.records)


async def test_the_pipelines_calls_are_in_the_trail_under_its_trace(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    trail = await _access(platform, platform.api_key, "QueryAudit", access_pb2.QueryAuditRequest())
    mine = [r for r in trail.records if r.trace_id == pipeline.trace_id]
    by_key = {r.method.rsplit("/", 1)[1] for r in mine if r.principal.startswith("key:")}
    assert {"UploadDataset", "SubmitTraining"} <= by_key, mine
    # What the services did on their own, from events, is there too, each under its own name.
    by_services = {(r.principal, r.method) for r in mine if r.principal.startswith("service:")}
    assert {
        ("service:trainer", "event:training.completed"),
        ("service:evaluator", "event:evaluation.completed"),
        ("service:registry", "event:registry.version.created"),
        ("service:deployer", "event:deployment.ready"),
    } <= by_services, sorted(by_services)
    # Progress reports (the trainer publishes one at each stage and epoch) are no changes to audit.
    assert ("service:trainer", "event:training.progress") not in by_services
    assert all(r.outcome == "OK" for r in mine)


ACCESS_RPCS = [m.name for m in access_pb2.DESCRIPTOR.services_by_name["AccessService"].methods]


@pytest.mark.parametrize("method", ACCESS_RPCS)
async def test_an_outsider_and_a_viewer_are_refused_every_access_rpc_and_recorded(
    platform: EmbeddedPlatform, method: str
) -> None:
    """Every RPC of AccessService, as the descriptor lists it (a new one is played here at once):
    no key or a wrong one is UNAUTHENTICATED; a viewer's key PERMISSION_DENIED but for WhoAmI."""
    request = access_pb2.DESCRIPTOR.services_by_name["AccessService"].methods_by_name[method].input_type
    empty = GetMessageClass(request)()
    for key in (None, "lep_" + "x" * 43):
        async with client_channel(platform.addresses["registry"], key) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await getattr(access_pb2_grpc.AccessServiceStub(ch), method)(empty, timeout=15)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (method, key, err.value.details())
    viewer = await _new_key(platform, "viewer", f"outsider-{method.lower()}")
    async with client_channel(platform.addresses["registry"], viewer.secret) as ch:
        try:
            await getattr(access_pb2_grpc.AccessServiceStub(ch), method)(empty, timeout=15)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
    assert code == (grpc.StatusCode.OK if method == "WhoAmI" else grpc.StatusCode.PERMISSION_DENIED), method
    if method != "WhoAmI":
        trail = await _access(
            platform, platform.api_key, "QueryAudit", access_pb2.QueryAuditRequest(principal=viewer.key.id)
        )
        assert [(r.method.rsplit("/", 1)[1], r.outcome) for r in trail.records] == [(method, "PERMISSION_DENIED")]
