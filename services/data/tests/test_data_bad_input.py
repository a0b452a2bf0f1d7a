"""Bad input to the data service: each a specific gRPC error, and nothing half-written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lepton.data.v1 import data_pb2, data_pb2_grpc
from nats.aio.client import Client as NATS

from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(300)

KEYS = {f"bad-{i}": f"bad{i}{uuid.uuid4().hex[:6]}" for i in range(30)}
_free = iter(KEYS)
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("data", KEYS, max_upload_bytes=str(LIMIT))


@pytest_asyncio.fixture
async def tenant_stub(address: str) -> AsyncIterator[tuple[str, data_pb2_grpc.DataServiceStub]]:
    key = next(_free)
    async with client_channel(address, key) as channel:
        yield KEYS[key], data_pb2_grpc.DataServiceStub(channel)


def parts(name: str, raw: bytes, fmt: str = "csv", **header: object) -> AsyncIterator[data_pb2.UploadDatasetRequest]:
    async def gen() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format=fmt, **header))  # type: ignore[arg-type]
        for i in range(0, len(raw), 4096):
            yield data_pb2.UploadDatasetRequest(chunk=raw[i : i + 4096])

    return gen()


async def nothing_stored(nc: NATS, stub: data_pb2_grpc.DataServiceStub, tenant: str) -> None:
    versions = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
    assert list(versions.versions) == []
    assert list((await stub.ListDatasets(data_pb2.ListDatasetsRequest())).datasets) == []
    store = await nc.jetstream().object_store("datasets")
    try:
        names = [o.name for o in await store.list(ignore_deletes=True)]
    except Exception:
        names = []
    assert not [n for n in names if n.startswith(f"{tenant}/")]


BAD_FILES = [
    ("empty", b"", "csv", "chunk", "empty"),
    ("blank", b"\n\n  \n", "csv", "chunk", "empty"),
    ("header-only", b"a,b,c\n", "csv", "chunk", "no data rows"),
    ("ragged", b"a,b\n1,2\n3,4,5,6\n", "csv", "chunk", "could not be parsed"),
    ("bad-quoting", b'a,b\n1,"2\n', "csv", "chunk", "could not be parsed"),
    ("garbage", bytes(range(256)) * 8, "csv", "chunk", "binary, not CSV"),
    ("bad-utf8", b"a,b\n1,\xff\xfe\n", "csv", "chunk", "not valid UTF-8 (bad byte at offset 6)"),
    ("nul-bytes", b"a,b\n1,\x00\n", "csv", "chunk", "NUL"),
    ("dup-names", b"a,b,a\n1,2,3\n", "csv", "chunk", "duplicate column names: a"),
    ("path-name", b"../../etc/passwd,b\n1,2\n", "csv", "chunk", "path-like"),
    ("empty-name", b'"",b\n1,2\n', "csv", "chunk", "empty or path-like"),
    ("nan-inf", b"x,y\n1,2\nnan,3\n4,inf\n", "csv", "chunk", "NaN or infinite values in y (1); first rows of y: [2]"),
    ("not-parquet", b"PAR1 but not really", "parquet", "chunk", "not valid parquet"),
    ("not-arrow", b"ARROW1 nope", "arrow", "chunk", "not valid arrow"),
    ("not-jsonl", b'{"a": 1}\n{"a": \n', "jsonl", "chunk", "not valid jsonl"),
    ("bad-format", b"a\n1\n", "xlsx", "header.format", "not supported"),
    ("../../etc/passwd", b"a\n1\n", "csv", "header.dataset_name", "expected a dataset name"),
    ("UPPER", b"a\n1\n", "csv", "header.dataset_name", "expected a dataset name"),
    ("too-big", b"a\n" + b"1\n" * (LIMIT // 2 + 1), "csv", "chunk", f"exceeds the limit of {LIMIT} bytes"),
]


@pytest.mark.parametrize(("name", "raw", "fmt", "field", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_bad_files_are_refused_and_nothing_is_stored(
    tenant_stub: tuple[str, data_pb2_grpc.DataServiceStub],
    nc: NATS,
    name: str,
    raw: bytes,
    fmt: str,
    field: str,
    words: str,
) -> None:
    tenant, stub = tenant_stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadDataset(parts(name, raw, fmt), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    details = err.value.details() or ""
    assert details.startswith(f"{field}:"), details
    assert words in details, details
    await nothing_stored(nc, stub, tenant)


async def test_an_upload_cut_off_midway_leaves_nothing(
    tenant_stub: tuple[str, data_pb2_grpc.DataServiceStub], nc: NATS
) -> None:
    tenant, stub = tenant_stub

    async def broken() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name="cut", format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=b"a,b\n1,2\n")
        await asyncio.sleep(0.2)
        raise ConnectionError("client went away")

    with pytest.raises((grpc.aio.AioRpcError, ConnectionError, asyncio.CancelledError)):
        await stub.UploadDataset(broken(), timeout=30)
    # A client that announced its size and stopped early is refused too.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadDataset(parts("short", b"a,b\n1,2\n", expected_size=1000), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cut off" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadDataset(parts("sum", b"a\n1\n", expected_digest="sha256:00"), timeout=30)
    assert (err.value.details() or "").startswith("header.expected_digest:")
    await asyncio.sleep(0.5)
    await nothing_stored(nc, stub, tenant)


async def test_a_header_must_come_first(tenant_stub: tuple[str, data_pb2_grpc.DataServiceStub]) -> None:
    _, stub = tenant_stub

    async def no_header() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(chunk=b"a\n1\n")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UploadDataset(no_header(), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith("header:")


csv_cell = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
small_csv = st.lists(st.lists(csv_cell, min_size=1, max_size=4), min_size=0, max_size=6).map(
    lambda rows: "\n".join(",".join(r) for r in rows).encode()
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300), small_csv))
async def test_random_input_never_crashes_or_leaves_a_partial_version(address: str, raw: bytes) -> None:
    key = "bad-29"
    async with client_channel(address, key) as channel:
        stub = data_pb2_grpc.DataServiceStub(channel)
        before = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
        try:
            version = await stub.UploadDataset(parts("fuzz", raw), timeout=30)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
            after = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
            assert len(after.versions) == len(before.versions)
            return
        after = await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())
        ids = {v.version_id for v in after.versions}
        assert version.version_id in ids
        assert len(ids) == len(before.versions) + (0 if version.deduplicated else 1)
        assert version.row_count >= 1
