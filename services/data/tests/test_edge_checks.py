"""Every field checked at the edge (issue 15): over real gRPC against a data-service process.

A refusal is INVALID_ARGUMENT naming the field (never INTERNAL from a KV key, subject or
object name a bad value would have made), and a refused request stores and emits nothing.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from lepton.data.v1 import data_pb2, data_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(120)

KEYS = {f"edge-{i}": f"edge{i}{uuid.uuid4().hex[:6]}" for i in range(20)}
_free = iter(KEYS)
BAD_NAMES = ["x\n", "a b", "a\x00b", "a.b", "a.*", "*", ">", "caf\u00e9", "UPPER", "-lead", "x" * 65]
CSV = b"x,y\n1,a\n2,b\n3,a\n4,b\n"


@dataclass
class Tenant:
    stub: data_pb2_grpc.DataServiceStub
    tenant: str

    async def upload(self, name: str, raw: bytes = CSV, **header: object) -> data_pb2.DatasetVersion:
        async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
            yield data_pb2.UploadDatasetRequest(
                header=data_pb2.UploadHeader(dataset_name=name, format="csv", **header)  # type: ignore[arg-type]
            )
            yield data_pb2.UploadDatasetRequest(chunk=raw)

        return await self.stub.UploadDataset(parts(), timeout=30)


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("data", KEYS)


@pytest_asyncio.fixture
async def client(address: str) -> AsyncIterator[Tenant]:
    key = next(_free)
    async with client_channel(address, key) as channel:
        yield Tenant(data_pb2_grpc.DataServiceStub(channel), KEYS[key])


async def refused(field: str, call: Callable[[], Awaitable[object]], code: grpc.StatusCode | None = None) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call()
    details = err.value.details() or ""
    assert err.value.code() == (code or grpc.StatusCode.INVALID_ARGUMENT), (field, err.value.code(), details)
    assert details.startswith(field + ":"), details
    assert len(details) < 2100, len(details)
    return details


async def nothing_stored_or_emitted(nc: NATS, client: Tenant) -> None:
    assert list((await client.stub.ListDatasets(data_pb2.ListDatasetsRequest())).datasets) == []
    assert list((await client.stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())).versions) == []
    sub = await nc.jetstream().subscribe(f"lepton.evt.{client.tenant}.>", stream=EVENTS_STREAM, ordered_consumer=True)
    try:
        with pytest.raises(TimeoutError):
            await sub.next_msg(timeout=0.5)
    finally:
        await sub.unsubscribe()


async def test_a_dataset_name_with_a_trailing_newline_is_refused(client: Tenant, nc: NATS) -> None:
    for bad in BAD_NAMES:
        details = await refused("header.dataset_name", lambda b=bad: client.upload(b))  # type: ignore[misc]
        assert "expected a dataset name" in details
    await nothing_stored_or_emitted(nc, client)


async def test_a_version_id_with_a_space_is_invalid_not_internal(client: Tenant) -> None:
    stub = client.stub
    spec = data_pb2.SplitSpec(seed=1)
    for bad in ("dv_a b", "dv_x.>", "dv_*", "dv_x\n", "ds_0123", "a\x00", "dv_\u00e9"):
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda b=bad: stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=b)),  # type: ignore[misc]
            lambda b=bad: stub.GetProfile(data_pb2.GetProfileRequest(version_id=b)),  # type: ignore[misc]
            lambda b=bad: stub.ValidateVersion(data_pb2.ValidateVersionRequest(version_id=b, rules_json="[]")),  # type: ignore[misc]
            lambda b=bad: stub.ApplyRecipe(data_pb2.ApplyRecipeRequest(version_id=b, recipe_json="{}")),  # type: ignore[misc]
            lambda b=bad: stub.UpdateSchema(  # type: ignore[misc]
                data_pb2.UpdateSchemaRequest(version_id=b, changes=[data_pb2.ColumnChange(name="x", dtype="float")])
            ),
            lambda b=bad: stub.SplitVersion(data_pb2.SplitVersionRequest(version_id=b, spec=spec)),  # type: ignore[misc]
            lambda b=bad: _drain(stub.ReadDataset(data_pb2.ReadDatasetRequest(version_id=b))),  # type: ignore[misc]
        ]
        for call in calls:
            await refused("version_id", call)
    # A well-formed id that does not exist stays NOT_FOUND.
    await refused(
        "version_id",
        lambda: stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id="dv_missing")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_dataset_ref_with_subject_wildcards_is_invalid_not_internal(client: Tenant, nc: NATS) -> None:
    stub = client.stub
    for bad in ("a.*", "a.>", "x\n", "a b", "ds_X"):
        await refused("dataset", lambda b=bad: stub.GetDataset(data_pb2.GetDatasetRequest(dataset=b)))  # type: ignore[misc]
        await refused("dataset", lambda b=bad: stub.DeleteDataset(data_pb2.DeleteDatasetRequest(dataset=b)))  # type: ignore[misc]
        await refused(
            "dataset",
            lambda b=bad: stub.SetValidationRules(data_pb2.SetValidationRulesRequest(dataset=b, rules_json="[]")),  # type: ignore[misc]
        )
        await refused(
            "dataset_name",
            lambda b=bad: stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest(dataset_name=b)),  # type: ignore[misc]
        )
    await nothing_stored_or_emitted(nc, client)


async def test_an_upload_encoding_of_nul_is_refused(client: Tenant, nc: NATS) -> None:
    for bad in ("\x00", "utf-8\x00", "hex", "base64", "klingon-8", "x" * 100):
        await refused(
            "header.csv.encoding",
            lambda b=bad: client.upload("enc", csv=data_pb2.CsvOptions(encoding=b)),  # type: ignore[misc]
        )
    for field, options in (
        ("header.csv.delimiter", data_pb2.CsvOptions(delimiter="\n")),
        ("header.csv.delimiter", data_pb2.CsvOptions(delimiter="\x00")),
        ("header.csv.quote_char", data_pb2.CsvOptions(quote_char="\u00e9")),
        ("header.csv.quote_char", data_pb2.CsvOptions(delimiter=",", quote_char=",")),
    ):
        await refused(field, lambda o=options: client.upload("enc", csv=o))  # type: ignore[misc]
    await refused("header.expected_size", lambda: client.upload("enc", expected_size=-1))
    await refused("header.expected_digest", lambda: client.upload("enc", expected_digest="sha256:\x00"))
    await nothing_stored_or_emitted(nc, client)
    latin1 = await client.upload("enc", csv=data_pb2.CsvOptions(encoding="latin-1"))
    assert latin1.row_count == 4


async def test_a_negative_split_seed_is_refused(client: Tenant) -> None:
    version = await client.upload("split")
    stub = client.stub
    for field, spec in (
        ("spec.seed", data_pb2.SplitSpec(seed=-1)),
        ("spec.seed", data_pb2.SplitSpec(seed=2**40)),
        ("spec.train", data_pb2.SplitSpec(train=math.nan, test=0.5)),
        ("spec.test", data_pb2.SplitSpec(train=0.5, test=math.inf)),
        ("spec.stratify_column", data_pb2.SplitSpec(stratify_column="c" * 2000)),
    ):
        await refused(
            field,
            lambda s=spec: stub.SplitVersion(data_pb2.SplitVersionRequest(version_id=version.version_id, spec=s)),  # type: ignore[misc]
        )
        await refused(
            field,
            lambda s=spec: _drain(  # type: ignore[misc]
                stub.ReadDataset(data_pb2.ReadDatasetRequest(version_id=version.version_id, split="test", spec=s))
            ),
        )
    counts = await stub.SplitVersion(
        data_pb2.SplitVersionRequest(version_id=version.version_id, spec=data_pb2.SplitSpec(seed=2**32 - 1))
    )
    assert counts.train_rows + counts.test_rows == 4


async def test_request_lists_and_strings_are_capped(client: Tenant) -> None:
    version = await client.upload("caps")
    stub = client.stub
    await refused("search", lambda: stub.ListDatasets(data_pb2.ListDatasetsRequest(search="s" * 65)))
    too_many = data_pb2.ReadDatasetRequest(version_id=version.version_id, columns=["x"] * 10_001)
    await refused("columns", lambda: _drain(stub.ReadDataset(too_many)))
    await refused(
        "batch_rows",
        lambda: _drain(stub.ReadDataset(data_pb2.ReadDatasetRequest(version_id=version.version_id, batch_rows=2**40))),
    )
    await refused(
        "changes",
        lambda: stub.UpdateSchema(
            data_pb2.UpdateSchemaRequest(
                version_id=version.version_id, changes=[data_pb2.ColumnChange(name="x", dtype="float")] * 1001
            )
        ),
    )


async def test_a_10kb_value_is_cut_in_the_error(client: Tenant) -> None:
    huge = "x" * 10_240
    stub = client.stub
    for field, call in (
        ("header.dataset_name", lambda: client.upload(huge)),
        ("version_id", lambda: stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=huge))),
        ("dataset", lambda: stub.GetDataset(data_pb2.GetDatasetRequest(dataset=huge))),
        ("header.csv.encoding", lambda: client.upload("x", csv=data_pb2.CsvOptions(encoding=huge))),
        ("search", lambda: stub.ListDatasets(data_pb2.ListDatasetsRequest(search=huge))),
    ):
        details = await refused(field, call)
        assert "10240 characters" in details, details


async def _drain(stream: AsyncIterator[data_pb2.RecordBatchChunk]) -> None:
    async for _ in stream:
        pass
