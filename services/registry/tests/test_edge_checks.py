"""Every field checked at the edge (issue 15): over real gRPC against a registry process.

A refusal is INVALID_ARGUMENT naming the field (never INTERNAL from a KV key or subject a
bad value would have made), stores nothing and emits nothing; a policy stored before the
checks existed reads as FAILED_PRECONDITION saying how to fix it.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import DEADLETTER_STREAM, EVENTS_STREAM, ObjectRefRecord, RecordStore
from lepton_core.rpc import client_channel
from lepton_core.wire import now
from lepton_platform.testing import StartService
from lepton_registry.core import ModelRecord, VersionRecord

pytestmark = pytest.mark.timeout(120)

KEYS = {f"edge-{i}": f"edge{i}{uuid.uuid4().hex[:6]}" for i in range(20)}
_free = iter(KEYS)
MODEL = "churn"
BAD_NAMES = ["a b", "a\x00b", "a.b", "a.*", "*", ">", "a>", "x\n", "caf\u00e9", "UPPER", "-lead", "x" * 65]


@dataclass
class Tenant:
    stub: registry_pb2_grpc.RegistryServiceStub
    tenant: str


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("registry", KEYS)


@pytest_asyncio.fixture
async def client(address: str, nc: NATS) -> AsyncIterator[Tenant]:
    """A tenant of its own, with model ``churn`` at version 1 written straight into KV."""
    key = next(_free)
    tenant = KEYS[key]
    js = nc.jetstream()
    at = now()
    await (await RecordStore.open(js, "models", ModelRecord)).put(
        f"{tenant}.m.{MODEL}", ModelRecord(tenant=tenant, name=MODEL, latest_version=1, created_at=at)
    )
    await (await RecordStore.open(js, "models", VersionRecord)).put(
        f"{tenant}.m.{MODEL}.v.1",
        VersionRecord(
            tenant=tenant,
            model_name=MODEL,
            version=1,
            dataset_id="ds_1",
            dataset_version_id="dv_1",
            training_job_id="job_1",
            evaluation_id="ev_1",
            artifact=ObjectRefRecord(bucket="artifacts", name="a", digest="sha256:00", size=1),
            algorithm="ridge",
            params={},
            metrics={"r2": 0.5},
            features=["x"],
            target="y",
            created_at=at,
        ),
    )
    async with client_channel(address, key) as channel:
        yield Tenant(registry_pb2_grpc.RegistryServiceStub(channel), tenant)


async def refused(code: grpc.StatusCode, field: str, call: Callable[[], Awaitable[object]]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call()
    details = err.value.details() or ""
    assert err.value.code() == code, (field, err.value.code(), details)
    assert details.startswith(field + ":"), details
    assert len(details) < 2100, len(details)
    return details


async def no_events(nc: NATS, tenant: str) -> None:
    sub = await nc.jetstream().subscribe(f"lepton.evt.{tenant}.>", stream=EVENTS_STREAM, ordered_consumer=True)
    try:
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await sub.unsubscribe()


async def drain(stream: AsyncIterator[registry_pb2.ArtifactChunk]) -> None:
    async for _ in stream:
        pass


def policy(**fields: object) -> registry_pb2.SetPromotionPolicyRequest:
    return registry_pb2.SetPromotionPolicyRequest(model_name=MODEL, policy=events_pb2.PromotionPolicy(**fields))  # type: ignore[arg-type]


async def test_get_model_with_subject_wildcards_is_invalid_not_internal(client: Tenant) -> None:
    stub = client.stub
    for bad in BAD_NAMES:
        get_model = registry_pb2.GetModelRequest(name=bad)
        await refused(grpc.StatusCode.INVALID_ARGUMENT, "name", lambda r=get_model: stub.GetModel(r))  # type: ignore[misc]
        await refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "model_name",
            lambda b=bad: stub.GetModelVersion(registry_pb2.GetModelVersionRequest(model_name=b, version=1)),  # type: ignore[misc]
        )
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("model_name", lambda: stub.ListModelVersions(registry_pb2.ListModelVersionsRequest(model_name="a.*"))),
        ("model_name", lambda: stub.GetLineage(registry_pb2.GetModelVersionRequest(model_name="a.>"))),
        ("model_name", lambda: drain(stub.DownloadArtifact(registry_pb2.GetModelVersionRequest(model_name="a b")))),
        ("name", lambda: stub.UpdateModel(registry_pb2.UpdateModelRequest(name="a.*", description="x"))),
        (
            "model_name",
            lambda: stub.UpdateModelVersion(registry_pb2.UpdateModelVersionRequest(model_name="*", version=1)),
        ),
        ("model_name", lambda: stub.SetAlias(registry_pb2.SetAliasRequest(model_name="a.b", alias="c", version=1))),
        ("model_name", lambda: stub.DeleteAlias(registry_pb2.DeleteAliasRequest(model_name=">", alias="c"))),
        (
            "model_name",
            lambda: stub.SetPromotionPolicy(registry_pb2.SetPromotionPolicyRequest(model_name="x\n")),
        ),
        ("alias", lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(alias="*"))),
        (
            "dataset_version_id",
            lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(dataset_version_id="dv_a b")),
        ),
    ]
    for field, call in calls:
        await refused(grpc.StatusCode.INVALID_ARGUMENT, field, call)
    # A well-formed name that does not exist is still NOT_FOUND.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetModel(registry_pb2.GetModelRequest(name="no-such-model"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_set_alias_with_a_trailing_newline_is_refused(client: Tenant, nc: NATS) -> None:
    stub = client.stub
    for bad in ("champion\n", "champ ion", "a.b", "*", ">", "", "x" * 65):
        await refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "alias",
            lambda b=bad: stub.SetAlias(registry_pb2.SetAliasRequest(model_name=MODEL, alias=b, version=1)),  # type: ignore[misc]
        )
    await refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "alias",
        lambda: stub.DeleteAlias(registry_pb2.DeleteAliasRequest(model_name=MODEL, alias="champion\n")),
    )
    await refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "alias",
        lambda: stub.GetModelVersion(registry_pb2.GetModelVersionRequest(model_name=MODEL, alias="a.*")),
    )
    assert dict((await stub.GetModel(registry_pb2.GetModelRequest(name=MODEL))).aliases) == {}
    await no_events(nc, client.tenant)
    moved = await stub.SetAlias(registry_pb2.SetAliasRequest(model_name=MODEL, alias="champion", version=1))
    assert (moved.alias, moved.version) == ("champion", 1)


async def test_negative_versions_are_refused_by_every_registry_rpc(client: Tenant, nc: NATS) -> None:
    stub = client.stub
    get = registry_pb2.GetModelVersionRequest(model_name=MODEL, version=-1)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("version", lambda: stub.GetModelVersion(get)),
        ("version", lambda: stub.GetLineage(get)),
        ("version", lambda: drain(stub.DownloadArtifact(get))),
        ("version", lambda: stub.SetAlias(registry_pb2.SetAliasRequest(model_name=MODEL, alias="a", version=-1))),
        (
            "expected_version",
            lambda: stub.SetAlias(
                registry_pb2.SetAliasRequest(model_name=MODEL, alias="a", version=1, expected_version=-1)
            ),
        ),
        (
            "version",
            lambda: stub.UpdateModelVersion(
                registry_pb2.UpdateModelVersionRequest(model_name=MODEL, version=-1, description="x")
            ),
        ),
    ]
    for field, call in calls:
        details = await refused(grpc.StatusCode.INVALID_ARGUMENT, field, call)
        assert "-1" in details
    await no_events(nc, client.tenant)
    # 0 is "absent": the latest version.
    latest = await stub.GetModelVersion(registry_pb2.GetModelVersionRequest(model_name=MODEL))
    assert latest.version == 1


async def test_a_nan_min_improvement_is_refused_and_stores_nothing(client: Tenant, nc: NATS) -> None:
    stub = client.stub
    for bad in (math.nan, math.inf, -math.inf, -0.5, 1e300):
        await refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "policy.min_improvement",
            lambda b=bad: stub.SetPromotionPolicy(policy(min_improvement=b, auto_promote=True)),  # type: ignore[misc]
        )
    kv = await nc.jetstream().key_value("models")
    assert not [k for k in await kv.keys() if k.startswith(f"{client.tenant}.policy.")]
    model = await stub.GetModel(registry_pb2.GetModelRequest(name=MODEL))
    assert (model.policy.min_improvement, model.policy.auto_promote) == (0.0, False)
    await no_events(nc, client.tenant)


async def test_an_unknown_policy_metric_is_refused(client: Tenant) -> None:
    stub = client.stub
    for bad in ("auc", "silhouette", "r2\n", "R2", "r2.*", "x" * 10_000):
        details = await refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "policy.metric",
            lambda b=bad: stub.SetPromotionPolicy(policy(metric=b)),  # type: ignore[misc]
        )
        assert "accuracy" in details and "r2" in details  # the message lists what is known
    set_ = await stub.SetPromotionPolicy(policy(metric="mae", min_improvement=0.5, auto_promote=True))
    assert (set_.policy.metric, set_.policy.min_improvement) == ("mae", 0.5)


@pytest.mark.parametrize("stored", ["null", "NaN"])
async def test_a_stored_nan_policy_reads_as_a_clear_error(client: Tenant, nc: NATS, stored: str) -> None:
    """Old state: before the check, NaN was stored (as null by pydantic); reading it failed as INTERNAL."""
    stub = client.stub
    kv = await nc.jetstream().key_value("models")
    raw = f'{{"metric": "", "min_improvement": {stored}, "require_significant": false, "auto_promote": true}}'
    await kv.put(f"{client.tenant}.policy.{MODEL}", raw.encode())
    for call in (
        lambda: stub.GetModel(registry_pb2.GetModelRequest(name=MODEL)),
        lambda: stub.UpdateModel(registry_pb2.UpdateModelRequest(name=MODEL, description="changed")),
    ):
        details = await refused(grpc.StatusCode.FAILED_PRECONDITION, "policy", call)
        assert MODEL in details and "SetPromotionPolicy" in details and "min_improvement" in details, details
    # The refused edit changed nothing.
    kv_model = json.loads((await kv.get(f"{client.tenant}.m.{MODEL}")).value or b"{}")
    assert kv_model.get("description", "") == ""
    fixed = await stub.SetPromotionPolicy(policy(min_improvement=0.01, auto_promote=True))
    assert fixed.policy.min_improvement == 0.01
    assert (await stub.GetModel(registry_pb2.GetModelRequest(name=MODEL))).policy.auto_promote


async def test_tag_keys_are_matched_in_full_and_capped(client: Tenant) -> None:
    stub = client.stub
    for field, request in (
        ("set_tags", registry_pb2.UpdateModelRequest(name=MODEL, set_tags={"team\n": "x"})),
        ("set_tags", registry_pb2.UpdateModelRequest(name=MODEL, set_tags={"team": "a\x00b"})),
        ("remove_tags", registry_pb2.UpdateModelRequest(name=MODEL, remove_tags=["a b"])),
        ("set_tags", registry_pb2.UpdateModelRequest(name=MODEL, set_tags={f"k{i}": "v" for i in range(51)})),
    ):
        await refused(grpc.StatusCode.INVALID_ARGUMENT, field, lambda r=request: stub.UpdateModel(r))  # type: ignore[misc]
    await refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "tags",
        lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(tags={"team\n": "x"})),
    )
    await refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
        lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(page_token="-5")),
    )
    await refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        "min_value",
        lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(metric="r2", min_value=math.nan)),
    )
    model = await stub.UpdateModel(
        registry_pb2.UpdateModelRequest(name=MODEL, set_tags={"app.kubernetes.io/part-of": "billing"})
    )
    assert dict(model.tags) == {"app.kubernetes.io/part-of": "billing"}


async def test_a_10kb_value_is_cut_in_the_error(client: Tenant) -> None:
    stub = client.stub
    huge = "x" * 10_240
    for field, call in (
        ("name", lambda: stub.GetModel(registry_pb2.GetModelRequest(name=huge))),
        ("alias", lambda: stub.SetAlias(registry_pb2.SetAliasRequest(model_name=MODEL, alias=huge, version=1))),
        ("set_tags", lambda: stub.UpdateModel(registry_pb2.UpdateModelRequest(name=MODEL, set_tags={huge: "v"}))),
        (
            "name_contains",
            lambda: stub.SearchModelVersions(registry_pb2.SearchModelVersionsRequest(name_contains=huge)),
        ),
    ):
        details = await refused(grpc.StatusCode.INVALID_ARGUMENT, field, call)
        assert "10240 characters" in details, details


async def test_an_evaluation_event_with_a_bad_name_is_dead_lettered_and_stores_nothing(
    client: Tenant, nc: NATS
) -> None:
    js = nc.jetstream()
    dlq = await js.subscribe("lepton.dlq.registry.*", stream=DEADLETTER_STREAM, ordered_consumer=True)
    bad = events_pb2.EvaluationCompleted(
        tenant=client.tenant,
        lineage=common_pb2.Lineage(training_job_id="job_edge1", model_name="a.*"),
        metrics={"r2": 0.5},
        training=events_pb2.TrainingCompleted(model_name="a.*", test_fraction=0.2),
    )
    await events.publish(
        js, bad, tenant=client.tenant, event_id=f"edge-{uuid.uuid4().hex}", source="tests", ce_subject="x"
    )
    try:
        while True:
            msg = await dlq.next_msg(timeout=20)
            if client.tenant in (msg.headers or {}).get("Lepton-Original-Subject", ""):
                break
    finally:
        await dlq.unsubscribe()
    reason = (msg.headers or {}).get("Lepton-Error", "")
    assert reason.startswith("InvalidArgument: training.model_name:"), reason
    kv = await js.key_value("models")
    keys = [k for k in await kv.keys() if k.startswith(f"{client.tenant}.")]
    assert sorted(keys) == [f"{client.tenant}.m.{MODEL}", f"{client.tenant}.m.{MODEL}.v.1"]
