"""Plans and quotas against the embedded platform (real processes): each limit a service enforces
refuses the request that would pass it with RESOURCE_EXHAUSTED naming the limit, the usage and the
plan, stores nothing of it, and the usage the registry meters from the events equals what the test did.

Each test makes a tenant of its own and puts it on the trial plan, with limits small enough to
reach, before it makes the tenant's first key: a process that knows the key knows the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pytest
from google.protobuf.message import Message
from lepton.access.v1 import access_pb2, access_pb2_grpc
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

import lepton_ai as la
from lepton_core.rpc import client_channel
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import admin_connect, lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

FEATURES = ("a", "b", "c")
DOC = Path(__file__).resolve().parents[1] / "docs" / "sdk.md"


@dataclass(frozen=True)
class Tenant:
    name: str
    key: str


async def rpc(
    platform: EmbeddedPlatform, key: str, service: str, stub: Callable[[Any], Any], method: str, request: Message
) -> Any:
    async with client_channel(platform.addresses[service], key) as ch:
        return await getattr(stub(ch), method)(request, timeout=30)


async def access(platform: EmbeddedPlatform, key: str, method: str, request: Message) -> Any:
    return await rpc(platform, key, "registry", access_pb2_grpc.AccessServiceStub, method, request)


async def new_tenant(platform: EmbeddedPlatform, **limits: int) -> Tenant:
    """A fresh tenant on the trial plan with ``limits`` of its own, and an admin key of it that every
    service accepts (the plan was assigned before the key was made)."""
    name = f"quota-{uuid.uuid4().hex[:10]}"
    assigned = await access(
        platform,
        platform.api_key,
        "SetPlan",
        access_pb2.SetPlanRequest(tenant=name, plan="trial", overrides=access_pb2.Limits(**limits)),
    )
    assert (assigned.tenant, assigned.plan, assigned.assigned) == (name, "trial", True)
    created = await access(
        platform, platform.api_key, "CreateKey", access_pb2.CreateKeyRequest(tenant=name, role="admin", name="admin")
    )
    probes: list[tuple[str, Callable[[Any], Any], str, Message]] = [
        ("data", data_pb2_grpc.DataServiceStub, "ListDatasets", data_pb2.ListDatasetsRequest()),
        ("trainer", trainer_pb2_grpc.TrainingServiceStub, "ListTrainingJobs", trainer_pb2.ListTrainingJobsRequest()),
        ("deployer", deployer_pb2_grpc.DeploymentServiceStub, "ListDeployments", deployer_pb2.ListDeploymentsRequest()),
    ]
    deadline = time.monotonic() + 10
    for service, stub, method, request in probes:
        while True:
            try:
                await rpc(platform, created.secret, service, stub, method, request)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() < deadline, exc
                await asyncio.sleep(0.05)
    return Tenant(name, created.secret)


def csv_of(rows: int, seed: int = 0) -> bytes:
    """``rows`` rows of three random features and a target: Parquet cannot squeeze random floats much."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    y = x @ np.array([1.5, -2.0, 0.5]) + rng.normal(scale=0.1, size=rows)
    lines = [",".join((*FEATURES, "y"))] + [",".join(f"{v:.9f}" for v in (*r, t)) for r, t in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


async def upload(platform: EmbeddedPlatform, tenant: Tenant, name: str, data: bytes) -> data_pb2.DatasetVersion:
    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        header = data_pb2.UploadHeader(dataset_name=name, format="csv", expected_size=len(data))
        yield data_pb2.UploadDatasetRequest(header=header)
        for start in range(0, len(data), 64 * 1024):
            yield data_pb2.UploadDatasetRequest(chunk=data[start : start + 64 * 1024])

    async with client_channel(platform.addresses["data"], tenant.key) as ch:
        version: data_pb2.DatasetVersion = await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts(), timeout=60)
    return version


async def refused(call: Any, limit: str, *phrases: str) -> str:
    """Awaits ``call``; it must be RESOURCE_EXHAUSTED on ``limit``, saying each of ``phrases``."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert details.startswith(f"{limit}: "), details
    for phrase in phrases:
        assert phrase in details, (phrase, details)
    return details


async def datasets_of(platform: EmbeddedPlatform, tenant: Tenant) -> dict[str, list[data_pb2.DatasetVersion]]:
    """Every dataset of the tenant and its versions."""
    data = data_pb2_grpc.DataServiceStub
    listed = await rpc(platform, tenant.key, "data", data, "ListDatasets", data_pb2.ListDatasetsRequest())
    out = {}
    for d in listed.datasets:
        request = data_pb2.ListDatasetVersionsRequest(dataset_name=d.name)
        out[d.name] = list((await rpc(platform, tenant.key, "data", data, "ListDatasetVersions", request)).versions)
    return out


async def objects_of(platform: EmbeddedPlatform, tenant: Tenant) -> set[str]:
    """The names of the tenant's objects in the datasets object store, read as the admin."""
    nc = await admin_connect(platform.nats_url, "test-quota-objects")
    try:
        store = await nc.jetstream().object_store("datasets")
        return {o.name for o in await store.list() if o.name.startswith(f"{tenant.name}/") and not o.deleted}
    finally:
        await nc.close()


async def settled_usage(platform: EmbeddedPlatform, tenant: Tenant, expected: dict[str, int]) -> access_pb2.Usage:
    """GetUsage once the meter's figures for ``expected``'s limits equal it (events take a moment)."""
    deadline = time.monotonic() + 20
    while True:
        usage = await access(platform, tenant.key, "GetUsage", access_pb2.GetUsageRequest())
        used = {u.limit: u.used for u in usage.limits if u.limit in expected}
        if used == expected:
            return usage
        assert time.monotonic() < deadline, f"usage {used}, expected {expected}"
        await asyncio.sleep(0.1)


async def test_datasets_and_stored_bytes_are_refused_past_the_plan_and_nothing_is_stored(
    platform: EmbeddedPlatform,
) -> None:
    tenant = await new_tenant(platform, datasets=2)
    a = await upload(platform, tenant, "a", csv_of(200, seed=1))
    b = await upload(platform, tenant, "b", csv_of(100, seed=2))
    a2 = await upload(platform, tenant, "a", csv_of(50, seed=3))  # a version of a dataset there is: no new one
    before, objects = await datasets_of(platform, tenant), await objects_of(platform, tenant)
    assert sorted(before) == ["a", "b"] and len(objects) == 6  # data and profile of three versions
    await refused(
        upload(platform, tenant, "c", csv_of(10)), "datasets", "2 of 2 on plan trial", "dataset 'c' would be one more"
    )
    # The SDK raises ResourceExhausted, its field the limit.
    with la.Client(tenant.key, platform.url) as client, pytest.raises(la.ResourceExhausted) as sdk:
        client.datasets.upload(csv_to_frame(csv_of(10)), name="d", progress=False)
    assert sdk.value.field == "datasets" and sdk.value.code == "RESOURCE_EXHAUSTED"
    assert await datasets_of(platform, tenant) == before and await objects_of(platform, tenant) == objects
    # The refusal is in the audit trail, as every refused change is.
    trail = await access(platform, tenant.key, "QueryAudit", access_pb2.QueryAuditRequest())
    outcomes = [r.outcome for r in trail.records if r.method.endswith("/UploadDataset")]
    assert outcomes == ["OK", "OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"], outcomes
    stored = a.object.size + b.object.size + a2.object.size
    usage = await settled_usage(platform, tenant, {"datasets": 2, "stored_bytes": stored})
    lines = {u.limit: u for u in usage.limits}
    assert (usage.tenant, usage.plan) == (tenant.name, "trial")
    assert (lines["datasets"].maximum, lines["stored_bytes"].maximum, lines["stored_bytes"].unit) == (2, 2**30, "bytes")
    # Deleting a dataset gives its room back, and the meter sees it.
    await rpc(
        platform,
        tenant.key,
        "data",
        data_pb2_grpc.DataServiceStub,
        "DeleteDataset",
        data_pb2.DeleteDatasetRequest(dataset="b"),
    )
    await settled_usage(platform, tenant, {"datasets": 1, "stored_bytes": a.object.size + a2.object.size})
    c = await upload(platform, tenant, "c", csv_of(10))
    await settled_usage(platform, tenant, {"datasets": 2, "stored_bytes": stored - b.object.size + c.object.size})


def csv_to_frame(data: bytes) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(data))


async def test_a_version_too_large_for_the_stored_bytes_left_is_refused_before_it_is_stored(
    platform: EmbeddedPlatform,
) -> None:
    # The Parquet size of 100 such rows, found in a tenant without that limit (the same bytes give the same file).
    probe = await upload(platform, await new_tenant(platform), "probe", csv_of(100, seed=7))
    size = probe.object.size
    tenant = await new_tenant(platform, stored_bytes=size + 10)
    first = await upload(platform, tenant, "x", csv_of(100, seed=7))
    assert first.object.size == size
    before, objects = await datasets_of(platform, tenant), await objects_of(platform, tenant)
    await refused(
        upload(platform, tenant, "x", csv_of(400, seed=8)),
        "stored_bytes",
        f"({size} bytes) of ",
        f"({size + 10} bytes) on plan trial",
        "this version needs",
    )
    assert await datasets_of(platform, tenant) == before and await objects_of(platform, tenant) == objects
    await settled_usage(platform, tenant, {"stored_bytes": size, "datasets": 1})
    # Full to the byte: the next upload is refused on its header, whatever its size.
    full = await new_tenant(platform, stored_bytes=size)
    await upload(platform, full, "x", csv_of(100, seed=7))
    await refused(upload(platform, full, "y", csv_of(1, seed=9)), "stored_bytes", "no room is left")
    assert list(await datasets_of(platform, full)) == ["x"]


def submit(**fields: Any) -> trainer_pb2.SubmitTrainingRequest:
    return trainer_pb2.SubmitTrainingRequest(target="y", **fields)


async def job_ids(platform: EmbeddedPlatform, tenant: Tenant) -> set[str]:
    listed = await rpc(
        platform,
        tenant.key,
        "trainer",
        trainer_pb2_grpc.TrainingServiceStub,
        "ListTrainingJobs",
        trainer_pb2.ListTrainingJobsRequest(limit=1000),
    )
    return {j.job_id for j in listed.jobs}


async def wait_job(
    platform: EmbeddedPlatform, tenant: Tenant, job_id: str, states: Sequence[int], timeout: float = 120
) -> trainer_pb2.TrainingJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await rpc(
            platform,
            tenant.key,
            "trainer",
            trainer_pb2_grpc.TrainingServiceStub,
            "GetTrainingJob",
            trainer_pb2.GetTrainingJobRequest(job_id=job_id),
        )
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {trainer_pb2.JobState.Name(job.state)}"
        await asyncio.sleep(0.1)


async def test_jobs_past_the_plan_are_refused_and_a_job_past_its_run_time_is_stopped(
    platform: EmbeddedPlatform,
) -> None:
    tenant = await new_tenant(platform, concurrent_jobs=2, queued_jobs=1, trials_per_search=3, job_run_seconds=4)
    version = await upload(platform, tenant, "points", csv_of(400, seed=11))
    trainer = trainer_pb2_grpc.TrainingServiceStub

    async def train(request: trainer_pb2.SubmitTrainingRequest) -> trainer_pb2.TrainingJob:
        job: trainer_pb2.TrainingJob = await rpc(platform, tenant.key, "trainer", trainer, "SubmitTraining", request)
        return job

    # A search of more trials than the plan allows is refused before any job is made.
    search = trainer_pb2.SearchSpec(
        kind="grid", space={"alpha": trainer_pb2.ParamValues(values=["0.1", "1", "3", "10"])}
    )
    await refused(
        train(submit(dataset_version_id=version.version_id, algorithm="ridge", search=search)),
        "trials_per_search",
        "asks for 4, more than the 3 of plan trial",
    )
    assert await job_ids(platform, tenant) == set()
    # One slow job runs (the platform has one worker), one waits; a third would pass both limits.
    slow = {"epochs": "10000", "early_stopping_patience": "0", "batch_size": "8"}
    running = await train(submit(dataset_version_id=version.version_id, algorithm="mlp_regressor", params=slow))
    await wait_job(platform, tenant, running.job_id, [trainer_pb2.JOB_STATE_RUNNING])
    waiting = await train(submit(dataset_version_id=version.version_id, algorithm="ridge"))
    await refused(
        train(submit(dataset_version_id=version.version_id, algorithm="ridge")),
        "concurrent_jobs",
        "2 of 2 on plan trial",
    )
    assert await job_ids(platform, tenant) == {running.job_id, waiting.job_id}
    await settled_usage(platform, tenant, {"concurrent_jobs": 2, "queued_jobs": 1})
    # The slow job is stopped at the plan's run time, and fails saying so.
    stopped = await wait_job(platform, tenant, running.job_id, [trainer_pb2.JOB_STATE_FAILED], timeout=60)
    assert stopped.error.startswith("job_run_seconds: ran ") and "s of 4 s on plan trial" in stopped.error, (
        stopped.error
    )
    await wait_job(platform, tenant, waiting.job_id, [trainer_pb2.JOB_STATE_SUCCEEDED], timeout=120)
    await settled_usage(platform, tenant, {"concurrent_jobs": 0, "queued_jobs": 0})


async def test_queued_jobs_past_the_plan_are_refused(platform: EmbeddedPlatform) -> None:
    tenant = await new_tenant(platform, concurrent_jobs=5, queued_jobs=1, job_run_seconds=30)
    version = await upload(platform, tenant, "points", csv_of(400, seed=12))
    trainer = trainer_pb2_grpc.TrainingServiceStub
    slow = {"epochs": "10000", "early_stopping_patience": "0", "batch_size": "8"}

    async def train(algorithm: str, params: dict[str, str] | None = None) -> trainer_pb2.TrainingJob:
        request = submit(dataset_version_id=version.version_id, algorithm=algorithm, params=params or {})
        job: trainer_pb2.TrainingJob = await rpc(platform, tenant.key, "trainer", trainer, "SubmitTraining", request)
        return job

    running = await train("mlp_regressor", slow)
    await wait_job(platform, tenant, running.job_id, [trainer_pb2.JOB_STATE_RUNNING])
    waiting = await train("ridge")
    await refused(train("ridge"), "queued_jobs", "1 of 1 on plan trial")
    assert await job_ids(platform, tenant) == {running.job_id, waiting.job_id}
    for job in (waiting, running):  # not to hold the session's one worker
        await rpc(
            platform,
            tenant.key,
            "trainer",
            trainer,
            "CancelTrainingJob",
            trainer_pb2.GetTrainingJobRequest(job_id=job.job_id),
        )
    await settled_usage(platform, tenant, {"concurrent_jobs": 0, "queued_jobs": 0})


async def test_a_deployment_past_the_plan_is_refused_and_deleting_one_gives_its_room_back(
    platform: EmbeddedPlatform,
) -> None:
    tenant = await new_tenant(platform, deployments=1)
    version = await upload(platform, tenant, "points", csv_of(200, seed=13))
    model = "quota-ridge"
    job = await rpc(
        platform,
        tenant.key,
        "trainer",
        trainer_pb2_grpc.TrainingServiceStub,
        "SubmitTraining",
        submit(dataset_version_id=version.version_id, algorithm="ridge", model_name=model),
    )
    await wait_job(platform, tenant, job.job_id, [trainer_pb2.JOB_STATE_SUCCEEDED])
    deployer = deployer_pb2_grpc.DeploymentServiceStub
    # The model's first version is deployed on its own (auto-deploy): that is the plan's one deployment.
    deadline = time.monotonic() + 180
    while True:
        listed = await rpc(
            platform, tenant.key, "deployer", deployer, "ListDeployments", deployer_pb2.ListDeploymentsRequest()
        )
        if [(d.name, d.state) for d in listed.deployments] == [(model, deployer_pb2.DEPLOYMENT_STATE_READY)]:
            break
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.2)
    await refused(
        rpc(
            platform,
            tenant.key,
            "deployer",
            deployer,
            "Deploy",
            deployer_pb2.DeployRequest(name="second", model_name=model),
        ),
        "deployments",
        "1 of 1 on plan trial",
        "deployment 'second' would be one more",
    )
    listed = await rpc(
        platform, tenant.key, "deployer", deployer, "ListDeployments", deployer_pb2.ListDeploymentsRequest()
    )
    assert [d.name for d in listed.deployments] == [model]
    await settled_usage(platform, tenant, {"deployments": 1})
    await rpc(
        platform, tenant.key, "deployer", deployer, "DeleteDeployment", deployer_pb2.GetDeploymentRequest(name=model)
    )
    await settled_usage(platform, tenant, {"deployments": 0})


async def test_only_an_operator_assigns_plans_and_usage_is_the_tenants_own(platform: EmbeddedPlatform) -> None:
    tenant = await new_tenant(platform)
    for request, field, permission in (
        (access_pb2.SetPlanRequest(tenant=tenant.name, plan="unlimited"), "", "tenants.manage"),
        (access_pb2.GetUsageRequest(tenant="intruder"), "tenant", "tenants.manage"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            method = "SetPlan" if isinstance(request, access_pb2.SetPlanRequest) else "GetUsage"
            await access(platform, tenant.key, method, request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and permission in (err.value.details() or "")
        assert (err.value.details() or "").startswith(f"{field}:") if field else True
    for request, field in (
        (access_pb2.SetPlanRequest(tenant=tenant.name, plan="gold"), "plan:"),
        (access_pb2.SetPlanRequest(tenant="Not A Tenant", plan="team"), "tenant:"),
        (access_pb2.SetPlanRequest(plan="team"), "tenant:"),
        (
            access_pb2.SetPlanRequest(tenant=tenant.name, plan="team", overrides=access_pb2.Limits(datasets=-1)),
            "overrides.datasets:",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await access(platform, platform.api_key, "SetPlan", request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and (err.value.details() or "").startswith(field)
    # The operator's tenant has no plan of its own: the default (no limits) applies.
    default = await access(platform, platform.api_key, "GetUsage", access_pb2.GetUsageRequest())
    assert default.plan == "unlimited" and all(u.maximum == 0 for u in default.limits)
    # The SDK: plans listed, one set (operator), usage read by the tenant's admin and by the operator.
    with la.Client(platform.api_key, platform.url) as operator, la.Client(tenant.key, platform.url) as admin:
        plans = {p.name: p for p in operator.plans.list()}
        assert set(plans) == {"trial", "team", "unlimited"} and plans["unlimited"].default
        assert plans["trial"].limits["datasets"] == 10 and plans["team"].limits["deployments"] == 25
        assigned = operator.plans.set(tenant.name, "team", limits={"datasets": 3})
        assert (assigned.plan, assigned.overrides, assigned.limits["datasets"], assigned.assigned) == (
            "team",
            {"datasets": 3},
            3,
            True,
        )
        with pytest.raises(la.InvalidArgument, match="'gpus' is not a limit"):
            operator.plans.set(tenant.name, "team", limits={"gpus": 1})
        assert all(isinstance(p, la.PlanInfo) for p in plans.values()) and isinstance(assigned, la.TenantPlan)
        mine = admin.usage()
        assert isinstance(mine, la.Usage) and all(isinstance(line, la.LimitUsage) for line in mine.limits)
        assert (mine.tenant, mine.plan, mine["datasets"].maximum, mine["datasets"].used) == (tenant.name, "team", 3, 0)
        assert operator.usage(tenant.name).plan == "team"
        with pytest.raises(la.PermissionDenied):
            admin.plans.set(tenant.name, "unlimited")
    async with la.AsyncClient(tenant.key, platform.url) as aclient:
        assert (await aclient.usage()).plan == "team" and len(await aclient.plans.list()) == 3
    # The command line, as the operator.
    listed = lepton_cli(platform, "plans", "list")
    assert listed.returncode == 0 and "trial" in listed.stdout and "unlimited *" in listed.stdout, listed.stderr
    done = lepton_cli(platform, "plans", "set", tenant.name, "trial", "--limit", "deployments=0")
    assert done.returncode == 0 and f"tenant {tenant.name} is on plan trial with deployments=0" in done.stdout, done
    shown = lepton_cli(platform, "-o", "json", "usage", "--tenant", tenant.name)
    assert shown.returncode == 0, shown.stderr
    usage = json.loads(shown.stdout)
    lines = {u["limit"]: u for u in usage["limits"]}
    assert (usage["plan"], lines["deployments"]["maximum"], lines["datasets"]["maximum"]) == ("trial", 0, 10)
    table = lepton_cli(platform, "usage")
    assert table.returncode == 0 and "stored_bytes" in table.stdout and "plan unlimited" in table.stderr, table
    # docs/sdk.md's example, as written.
    section = DOC.read_text().split("## Plans and usage", 1)[1]
    block = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(
            compile(block, str(DOC), "exec"), {"API_KEY": platform.api_key, "URL": platform.url, "TENANT": tenant.name}
        )
    lines = printed.getvalue().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("plan:")] == ["trial", "team", "unlimited"]
    assert f"assigned: {tenant.name} trial 20 {{'datasets': 20}}" in lines, lines
    assert "usage: datasets 0 20" in [line.rstrip() for line in lines] and lines[-1] == "datasets left: 20", lines
