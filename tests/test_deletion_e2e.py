"""Deletion that deletes: a deleted dataset or model version leaves no byte of itself in the store.

The platform of this module writes its JetStream store unencrypted (``encrypt_store=False``; the
platform's default encrypts it, which would hide any value from a search whether deleted or not).
A value placed in the data is searched for in every file of the store: found there before the
deletion, so the search can fail, and nowhere once the deletion is done. The records of the
deleted things are checked gone from the KV buckets too, history and tombstones included.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import polars as pl
import pytest
from google.protobuf.message import Message
from lepton.access.v1 import access_pb2, access_pb2_grpc
from lepton.common.v1 import common_pb2
from lepton.events.v1 import events_pb2
from nats.js import api as js_api

import lepton_ai as la
from lepton_core import events
from lepton_core.bus import TENANT_BUCKETS, ObjectRefRecord, ObjectStore
from lepton_core.rpc import client_channel
from lepton_core.service import SERVICES
from lepton_platform.demo import PipelineResult, write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import NatsServer
from lepton_platform.testing import admin_connect

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

T = TypeVar("T")
ROWS = 2000


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    """The platform without the gateway and Triton (no serving here), its store unencrypted."""
    with EmbeddedPlatform(
        tmp_path_factory.mktemp("plain-store"),
        api_key=f"deletion-{secrets.token_hex(16)}",
        services=("data", "trainer", "evaluator", "registry", "deployer", "monitor"),
        triton=False,
        encrypt_store=False,
    ) as platform:
        yield platform


def files_holding(store: Path, needle: bytes) -> list[Path]:
    """The store's files that hold ``needle`` anywhere in their bytes."""
    return [p for p in store.rglob("*") if p.is_file() and needle in p.read_bytes()]


def report(store: Path, before: dict[str, list[Path]], after: dict[str, list[Path]]) -> None:
    """Prints what the search found before and after the deletion (``pytest -s`` shows it)."""
    files = sum(1 for p in store.rglob("*") if p.is_file())
    for what, found in before.items():
        where = ", ".join(sorted(str(p.relative_to(store)) for p in found))
        print(f"{what}: {len(found)} of {files} store files before ({where}), {len(after[what])} after")


def eventually(what: str, check: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Polls ``check`` until ``done`` says yes; fails naming ``what`` and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout:g} s (last: {value})"
        time.sleep(0.2)


def kv_keys(platform: EmbeddedPlatform, bucket: str, pattern: str) -> list[str]:
    """Every key of ``bucket`` matching ``pattern`` with a message in the bucket's stream: live, deleted or
    purged (a tombstone), or an older revision."""

    async def read() -> list[str]:
        nc = await admin_connect(platform.nats_url, "test-deletion")
        try:
            root = f"$KV.{bucket}."
            info = await nc.jetstream().stream_info(f"KV_{bucket}", subjects_filter=f"{root}{pattern}")
            return sorted(s[len(root) :] for s in info.state.subjects or {})
        finally:
            await nc.close()

    return asyncio.run(read())


def stored_objects(platform: EmbeddedPlatform, version_ids: list[str], tenant: str = "") -> dict[str, bytes]:
    """The data service's objects of dataset versions (Parquet files, profiles), read as the admin."""
    tenant = tenant or platform.tenant

    async def read() -> dict[str, bytes]:
        nc = await admin_connect(platform.nats_url, "test-deletion")
        try:
            js, out = nc.jetstream(), {}
            kv = await js.key_value("datasets")
            for version_id in version_ids:
                record = json.loads((await kv.get(f"{tenant}.v.{version_id}")).value or b"{}")
                for ref in (record["object"], record["profile"]):
                    out[ref["name"]] = await ObjectStore(js).get(ObjectRefRecord.model_validate(ref))
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def log_predictions(platform: EmbeddedPlatform, model: str, version: int, tenant: str = "") -> bytes:
    """Publishes one prediction log batch of ``version`` as the serving model would; returns its payload.

    Its rows are random numbers, so 64 bytes of the payload are found nowhere else.
    """
    tenant = tenant or platform.tenant
    rows = [float(secrets.randbits(52)) for _ in range(64)]
    batch = events_pb2.PredictionLogBatch(
        tenant=tenant,
        lineage=common_pb2.Lineage(model_name=model, model_version=version, deployment=model),
        feature_names=[f"x{i}" for i in range(8)],
        logs=[
            events_pb2.PredictionLogged(
                log_id=secrets.token_hex(8), batch_rows=8, logged_rows=8, inputs=rows, outputs=rows[:8]
            )
        ],
        batch_id=secrets.token_hex(8),
    )

    async def publish() -> None:
        nc = await admin_connect(platform.nats_url, "test-deletion")
        try:
            await events.publish(
                nc.jetstream(),
                batch,
                tenant=tenant,
                event_id=batch.batch_id,
                source=f"/lepton/triton/{model}",
                key=model,
            )
        finally:
            await nc.close()

    asyncio.run(publish())
    return batch.SerializeToString()


def test_a_deleted_dataset_leaves_no_byte_of_its_rows_in_the_store(plain: EmbeddedPlatform, tmp_path: Path) -> None:
    assert plain.nats is not None
    store, tenant = plain.nats.store, plain.tenant
    marker = f"deletion-marker-{secrets.token_hex(8)}"
    # Random bytes in every row: no encoding or compression can drop the marker's rows altogether.
    frame = pl.DataFrame(
        {
            "x": [float(i) for i in range(ROWS)],
            "note": [f"{marker}-{secrets.token_hex(16)}" for _ in range(ROWS)],
        }
    )
    frame.write_csv(marked_csv := tmp_path / "marked.csv")
    pl.DataFrame({"x": [1.0, 2.0], "note": ["kept", "too"]}).write_csv(kept_csv := tmp_path / "kept.csv")
    with la.Client(plain.api_key, plain.url) as client:
        raw = client.datasets.upload(marked_csv, "marked", progress=False)
        cast = raw.update_schema({"x": "int"})  # a derived version holds the rows too
        kept = client.datasets.upload(kept_csv, "kept", progress=False)
        # The marker, and 64 bytes from the middle of each stored object (the Parquet files are compressed).
        needles = {"marker": marker.encode()} | {
            name: data[len(data) // 2 :][:64]
            for name, data in stored_objects(plain, [raw.version_id, cast.version_id]).items()
        }
        holding = {
            what: eventually(f"the {what} reaching the store", lambda n=needle: files_holding(store, n), bool)
            for what, needle in needles.items()
        }
        before = kv_keys(plain, "datasets", f"{tenant}.>")
        assert {f"{tenant}.d.marked", f"{tenant}.v.{raw.version_id}", f"{tenant}.v.{cast.version_id}"} <= set(before)
        eventually(
            "the monitor's records of the versions",
            lambda: kv_keys(plain, "monitor", f"{tenant}.dsv.*"),
            lambda keys: {f"{tenant}.dsv.{raw.version_id}", f"{tenant}.dsv.{cast.version_id}"} <= set(keys),
        )

        assert client.datasets.delete("marked") == 2
        for version in (raw, cast):
            with pytest.raises(la.NotFound):
                client.datasets.get(version.version_id)
        assert [d.name for d in client.datasets.list()] == ["kept"]
        assert client.datasets.get(kept.version_id).to_polars()["note"].to_list() == ["kept", "too"]
        # Who deleted it stays: the audit trail is kept (docs/security.md, "Deletion").
        (record,) = [r for r in client.audit(resource="dataset/marked") if r.method.endswith("/DeleteDataset")]
        assert (record.permission, record.outcome) == ("datasets.delete", "OK")

    after = eventually(
        "the dataset leaving the store's files",
        lambda: {what: files_holding(store, needle) for what, needle in needles.items()},
        lambda found: not any(found.values()),
    )
    report(store, holding, after)
    # No record, no earlier revision, no tombstone: the keys are not in the streams at all.
    assert kv_keys(plain, "datasets", f"{tenant}.>") == sorted([f"{tenant}.d.kept", f"{tenant}.v.{kept.version_id}"])
    eventually(
        "the monitor erasing its records of the dataset",
        lambda: kv_keys(plain, "monitor", f"{tenant}.dsv.*") + kv_keys(plain, "monitor", f"{tenant}.ds.*"),
        lambda keys: not {k for k in keys if raw.version_id in k or cast.version_id in k or raw.id in k},
    )


def test_a_deleted_model_version_leaves_no_byte_of_its_artifact_or_evaluation(
    plain: EmbeddedPlatform, tmp_path: Path
) -> None:
    assert plain.nats is not None
    store, tenant = plain.nats.store, plain.tenant
    name = f"deleted-{secrets.token_hex(4)}"
    with la.Client(plain.api_key, plain.url) as client:
        data = client.datasets.upload(write_diabetes_csv(tmp_path / "diabetes.csv"), "diabetes", progress=False)
        kept, gone = la.models.LinearRegression(), la.models.Ridge(alpha=0.5)
        kept.fit(data, model_name=name, progress=False)
        gone.fit(data, model_name=name, progress=False)
        client.models.set_alias(name, "champion", kept.version)
        job_id = client.models.version(name, gone.version).lineage.training_job_id
        # 64 bytes from the middle of the artifact and of each evaluation plot: bytes nothing else holds.
        artifact = client.models.download(name, gone.version)
        needles = {"artifact": artifact[len(artifact) // 2 :][:64]}
        # Prediction logs of each version, as if both had served before (a served version is refused).
        logged = log_predictions(plain, name, gone.version)
        needles["prediction logs"] = logged[len(logged) // 2 :][:64]
        kept_logs = log_predictions(plain, name, kept.version)[-64:]
        evaluations = client.models.evaluations(name, gone.version)
        assert evaluations and all(e.plots for e in evaluations)
        for e in evaluations:
            for plot in e.plots:
                png = client.models.plot(e.evaluation_id, plot)
                needles[f"{e.evaluation_id}/{plot}"] = png[len(png) // 2 :][:64]
        holding = {
            what: eventually(f"the {what} reaching the store's files", lambda n=needle: files_holding(store, n), bool)
            for what, needle in needles.items()
        }
        eventually(
            "the monitor's records of the version",
            lambda: kv_keys(plain, "monitor", f"{tenant}.>"),
            lambda keys: {f"{tenant}.mv.{name}.{gone.version}", f"{tenant}.job.{job_id}"} <= set(keys),
        )
        assert kv_keys(plain, "evaluations", f"{tenant}.{job_id}") == [f"{tenant}.{job_id}"]

        with pytest.raises(la.FailedPrecondition) as aliased:
            client.models.delete_version(name, kept.version)
        assert aliased.value.field == "version" and "champion" in aliased.value.message
        deleted = client.models.delete_version(name, gone.version)
        assert (deleted.model_name, deleted.version, deleted.artifact_erased) == (name, gone.version, True)
        with pytest.raises(la.NotFound):
            client.models.version(name, gone.version)
        with pytest.raises(la.NotFound):
            client.models.delete_version(name, gone.version)
        assert [v.version for v in client.models.versions(name)] == [kept.version]
        assert client.models.download(name, kept.version)  # the other version is whole
        trail = [r for r in client.audit(resource=f"model/{name}") if r.method.endswith("/DeleteModelVersion")]
        assert [(r.permission, r.outcome) for r in trail] == [
            ("models.delete", "FAILED_PRECONDITION"),
            ("models.delete", "OK"),
            ("models.delete", "NOT_FOUND"),
        ]
        after = eventually(
            "the evaluations and plots leaving the store",
            lambda: {what: files_holding(store, needle) for what, needle in needles.items()},
            lambda found: not any(found.values()),
        )
        assert files_holding(store, kept_logs), "the other version's prediction logs must stay"
        left = {e.evaluation_id for e in client.models.evaluations(name)}
        assert left and not left & {e.evaluation_id for e in evaluations}
    report(store, holding, after)
    assert kv_keys(plain, "models", f"{tenant}.m.{name}.v.*") == [f"{tenant}.m.{name}.v.{kept.version}"]
    assert kv_keys(plain, "evaluations", f"{tenant}.{job_id}") == []
    eventually(
        "the monitor erasing its records of the version",
        lambda: kv_keys(plain, "monitor", f"{tenant}.>"),
        lambda keys: not {f"{tenant}.mv.{name}.{gone.version}", f"{tenant}.job.{job_id}"} & set(keys),
    )


def test_a_version_a_deployment_serves_is_refused_naming_it(
    platform: EmbeddedPlatform, pipeline: PipelineResult
) -> None:
    served = pipeline.model_version
    with la.Client(platform.api_key, platform.url) as client:
        with pytest.raises(la.FailedPrecondition) as refused:
            client.models.delete_version(served.model_name, served.version)
        assert refused.value.field == "version" and pipeline.deployment.name in refused.value.message
        assert client.models.version(served.model_name, served.version).version == served.version


def test_deleting_a_version_needs_the_models_delete_permission(plain: EmbeddedPlatform) -> None:
    with la.Client(plain.api_key, plain.url) as client:
        editor = client.keys.create("editor", name=f"editor-{secrets.token_hex(3)}")
    with la.Client(editor.secret, plain.url) as client, pytest.raises(la.PermissionDenied) as refused:
        client.models.delete_version("anything", 1)
    assert refused.value.code == "PERMISSION_DENIED" and "models.delete" in refused.value.message


async def publish_as_admin(platform: EmbeddedPlatform, subject: str, data: bytes) -> None:
    nc = await admin_connect(platform.nats_url, "test-deletion")
    try:
        await nc.jetstream().publish(subject, data)
    finally:
        await nc.close()


def stream_subjects(platform: EmbeddedPlatform, stream: str, subject: str) -> list[str]:
    """The subjects of ``stream`` matching ``subject`` that hold a message, read as the admin."""

    async def read() -> list[str]:
        nc = await admin_connect(platform.nats_url, "test-deletion")
        try:
            info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
            return sorted(info.state.subjects or {})
        finally:
            await nc.close()

    return asyncio.run(read())


def tenant_deliveries(platform: EmbeddedPlatform) -> dict[str, tuple[int, int]]:
    """``(pending acks, redeliveries)`` of each service's durable for deleted tenants."""

    async def read() -> dict[str, tuple[int, int]]:
        nc = await admin_connect(platform.nats_url, "test-deletion")
        try:
            infos = {s: await nc.jetstream().consumer_info("EVENTS", f"{s}-tenants") for s in SERVICES}
            return {s: (i.num_ack_pending or 0, i.num_redelivered or 0) for s, i in infos.items()}
        finally:
            await nc.close()

    return asyncio.run(read())


async def access_rpc(platform: EmbeddedPlatform, key: str, method: str, request: Message) -> Message:
    async with client_channel(platform.addresses["registry"], key) as channel:
        return await getattr(access_pb2_grpc.AccessServiceStub(channel), method)(request, timeout=30)


def refusal(platform: EmbeddedPlatform, key: str, method: str, request: Message) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        asyncio.run(access_rpc(platform, key, method, request))
    return refused.value


def test_a_deleted_tenant_leaves_no_byte_of_itself_in_the_store_and_no_key(
    plain: EmbeddedPlatform, tmp_path: Path
) -> None:
    assert plain.nats is not None
    store, doomed = plain.nats.store, f"doomed-{secrets.token_hex(4)}"
    marker = f"tenant-marker-{secrets.token_hex(8)}"
    marked = {"x": [float(i) for i in range(ROWS)], "note": [f"{marker}-{secrets.token_hex(16)}" for _ in range(ROWS)]}
    pl.DataFrame(marked).write_csv(marked_csv := tmp_path / "marked.csv")
    pl.DataFrame({"x": [1.0, 2.0], "note": ["kept", "too"]}).write_csv(kept_csv := tmp_path / "kept.csv")
    with la.Client(plain.api_key, plain.url) as operator:
        kept = operator.datasets.upload(kept_csv, f"kept-{secrets.token_hex(3)}", progress=False)
        admin = operator.keys.create("admin", tenant=doomed, name="doomed-admin")
        viewer = operator.keys.create("viewer", tenant=doomed, name="doomed-viewer")
        operator.plans.set(doomed, "team")
    with la.Client(admin.secret, plain.url) as client:
        data = client.datasets.upload(marked_csv, "marked", progress=False)
        diabetes = client.datasets.upload(write_diabetes_csv(tmp_path / "diabetes.csv"), "diabetes", progress=False)
        # A strength of its own: its plots share no bytes with the plots of this module's other models.
        model = la.models.Ridge(alpha=0.01 + secrets.randbelow(10_000) / 1000)
        model.fit(diabetes, model_name="doomed-model", progress=False)
        artifact = client.models.download("doomed-model", model.version)
        plots = {
            f"{e.evaluation_id}/{plot}": client.models.plot(e.evaluation_id, plot)
            for e in client.models.evaluations("doomed-model", model.version)
            for plot in e.plots
        }
        assert plots, "an evaluation with plots is part of what the tenant keeps"
        logged = log_predictions(plain, "doomed-model", model.version, tenant=doomed)
        assert client.usage()["datasets"].used == 2
    needles = {"marker": marker.encode(), "artifact": artifact[len(artifact) // 2 :][:64]}
    needles["prediction logs"] = logged[len(logged) // 2 :][:64]
    needles |= {name: png[len(png) // 2 :][:64] for name, png in plots.items()}
    needles |= {
        name: data[len(data) // 2 :][:64] for name, data in stored_objects(plain, [data.version_id], doomed).items()
    }
    holding = {
        what: eventually(f"the {what} reaching the store's files", lambda n=needle: files_holding(store, n), bool)
        for what, needle in needles.items()
    }
    eventually(
        "the monitor's records of the tenant",
        lambda: kv_keys(plain, "monitor", f"{doomed}.>"),
        lambda keys: any(".mv." in k for k in keys) and any(".dsv." in k for k in keys),
    )
    for bucket in TENANT_BUCKETS[:5]:
        assert kv_keys(plain, bucket, f"{doomed}.>"), f"the tenant has records in {bucket}"
    # A dead letter of the tenant's, as the evaluator leaves one (subject lepton.dlq.<consumer>.<tenant>).
    dead_letters = f"lepton.dlq.*.{doomed}"
    asyncio.run(publish_as_admin(plain, f"lepton.dlq.evaluator.{doomed}", marker.encode()))
    assert stream_subjects(plain, "DEADLETTER", dead_letters) == [f"lepton.dlq.evaluator.{doomed}"]

    # Refused: a mistyped confirmation, a key of the tenant itself (even its admin), no key.
    wrong = refusal(plain, plain.api_key, "DeleteTenant", access_pb2.DeleteTenantRequest(tenant=doomed, confirm="x"))
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT and "confirm" in (wrong.details() or "")
    own = refusal(plain, admin.secret, "DeleteTenant", access_pb2.DeleteTenantRequest(tenant=doomed, confirm=doomed))
    assert own.code() == grpc.StatusCode.PERMISSION_DENIED and "tenants.delete" in (own.details() or "")
    self_delete = access_pb2.DeleteTenantRequest(tenant=plain.tenant, confirm=plain.tenant)
    assert refusal(plain, plain.api_key, "DeleteTenant", self_delete).code() == grpc.StatusCode.FAILED_PRECONDITION
    never = refusal(plain, plain.api_key, "GetTenantDeletion", access_pb2.GetTenantDeletionRequest(tenant=doomed))
    assert never.code() == grpc.StatusCode.NOT_FOUND

    server_log = plain.nats.process.log_path
    log_lines = len(server_log.read_text().splitlines())
    with la.Client(plain.api_key, plain.url) as operator:
        started = time.monotonic()
        deletion = operator.tenants.delete(doomed, confirm=doomed, wait=False)
        assert (deletion.tenant, deletion.keys) == (doomed, 2) and deletion.requested_by.startswith("key:")
        # The tenant's keys are refused at once, by every service.
        for secret in (admin.secret, viewer.secret):
            with la.Client(secret, plain.url) as client, pytest.raises(la.Unauthenticated):
                client.datasets.list()
        assert time.monotonic() - started < 2.0
        done = eventually(
            "every service erasing the tenant", lambda: operator.tenants.deletion(doomed), lambda d: d.done, 90
        )
    purged = {p.service: p for p in done.purged}
    assert set(purged) == set(SERVICES) and done.pending == ()
    # Two datasets of a version each (records), each version's Parquet file and profile (objects).
    assert (purged["data"].records, purged["data"].objects) == (4, 4)
    # The trainer and the evaluator both write the artifacts store: whichever comes first erases the
    # tenant's objects there (the artifact, the plots).
    assert purged["trainer"].objects + purged["evaluator"].objects >= 1 + len(plots)
    assert purged["trainer"].records >= 1 and purged["evaluator"].records >= 1
    assert purged["monitor"].messages == 1 and purged["registry"].records >= 2

    # Each service had its report answered and acked the event on the first delivery; nats-server
    # refused none of the deletion's messages (a report's reply included).
    eventually(
        "each service acking the deletion once", lambda: tenant_deliveries(plain), lambda d: set(d.values()) == {(0, 0)}
    )
    refused = [line for line in server_log.read_text().splitlines()[log_lines:] if "Violation" in line]
    assert refused == [], "nats-server refused messages of the deletion (a report's reply, an erase)"

    after = eventually(
        "the tenant leaving the store's files",
        lambda: {what: files_holding(store, needle) for what, needle in needles.items()},
        lambda found: not any(found.values()),
    )
    report(store, holding, after)
    for bucket in TENANT_BUCKETS:
        assert kv_keys(plain, bucket, f"{doomed}.>") == [], f"{bucket} still holds the tenant"
    assert stream_subjects(plain, "EVENTS", f"lepton.evt.{doomed}.>") == []
    assert stream_subjects(plain, "PREDICTIONS", f"lepton.pred.{doomed}.>") == []
    assert stream_subjects(plain, "JOBS", f"lepton.jobs.{doomed}.>") == []
    assert stream_subjects(plain, "DEADLETTER", dead_letters) == []
    assert kv_keys(plain, "tenants", f"plan.{doomed}") == [] and kv_keys(plain, "usage", doomed) == []
    assert not {admin.key.id, viewer.key.id} & {k.rsplit(".", 1)[-1] for k in kv_keys(plain, "keys", ">")}
    with la.Client(plain.api_key, plain.url) as operator:
        # The rest of the platform is whole, and the audit trail keeps who deleted the tenant.
        assert operator.datasets.get(kept.version_id).to_polars()["note"].to_list() == ["kept", "too"]
        trail = [r for r in operator.audit() if r.method.endswith("/DeleteTenant")]
        assert [(r.outcome, r.permission) for r in trail][-1] == ("OK", "tenants.delete")


def test_a_store_made_before_buckets_were_erasable_is_moved_on_the_next_start(tmp_path: Path) -> None:
    """A bucket nats-py made (``deny_delete``) holds its records after a restart, on an erasable stream."""
    workdir = tmp_path / "legacy"

    async def as_admin(url: str, job: Callable[[Any], Awaitable[T]]) -> T:
        nc = await admin_connect(url, "test-legacy")
        try:
            return await job(nc.jetstream())
        finally:
            await nc.close()

    async def make_legacy(js: Any) -> None:
        await js.delete_stream("KV_datasets")
        kv = await js.create_key_value(config=js_api.KeyValueConfig(bucket="datasets", history=5))
        await kv.put("acme.d.kept", b'{"name": "kept"}')
        assert (await js.stream_info("KV_datasets")).config.deny_delete

    async def read(js: Any) -> tuple[bool, bytes | None]:
        info = await js.stream_info("KV_datasets")
        return bool(info.config.deny_delete), (await (await js.key_value("datasets")).get("acme.d.kept")).value

    server = NatsServer(workdir, encrypt_store=False)
    try:
        asyncio.run(as_admin(server.url, make_legacy))
    finally:
        server.stop()
    again = NatsServer(workdir, encrypt_store=False)
    try:
        assert asyncio.run(as_admin(again.url, read)) == (False, b'{"name": "kept"}')
    finally:
        again.stop()
