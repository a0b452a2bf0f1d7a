"""Every data-service capability through its gRPC API, against a real nats-server.

One data service process serves the module; each test uses its own tenant (its own
API key), so tests cannot see each other's datasets.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import pytest_asyncio
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS
from sklearn.datasets import load_iris

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService

pytestmark = pytest.mark.timeout(120)

KEYS: dict[str, str] = {f"key-{i}": f"tenant{i}{uuid.uuid4().hex[:6]}" for i in range(40)}
_free = iter(KEYS)


@dataclass
class Client:
    """A data-service stub bound to one tenant's key."""

    stub: data_pb2_grpc.DataServiceStub
    tenant: str
    key: str

    async def upload(
        self, name: str, raw: bytes, fmt: str = "csv", chunk: int = 64 * 1024, **header: object
    ) -> data_pb2.DatasetVersion:
        csv = header.pop("csv", None)

        async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
            yield data_pb2.UploadDatasetRequest(
                header=data_pb2.UploadHeader(dataset_name=name, format=fmt, csv=csv, **header)  # type: ignore[arg-type]
            )
            for i in range(0, len(raw), chunk):
                yield data_pb2.UploadDatasetRequest(chunk=raw[i : i + chunk])

        return await self.stub.UploadDataset(parts(), timeout=60)

    async def read(self, version_id: str, **kw: object) -> pl.DataFrame:
        tables = [
            pa.ipc.open_stream(c.arrow_ipc).read_all()
            async for c in self.stub.ReadDataset(data_pb2.ReadDatasetRequest(version_id=version_id, **kw))  # type: ignore[arg-type]
        ]
        return pl.from_arrow(pa.concat_tables(tables))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def address(service: StartService) -> str:
    return service("data", KEYS, max_upload_bytes=str(64 * 1024 * 1024))


@pytest_asyncio.fixture
async def client(address: str) -> AsyncIterator[Client]:
    key = next(_free)
    async with client_channel(address, key) as channel:
        yield Client(data_pb2_grpc.DataServiceStub(channel), KEYS[key], key)


def iris() -> pl.DataFrame:
    frame = load_iris(as_frame=True).frame
    frame["species"] = frame["target"].map(dict(enumerate(load_iris().target_names)))
    return pl.from_pandas(frame.drop(columns=["target"]))


def csv_bytes(df: pl.DataFrame, **kw: object) -> bytes:
    buf = io.BytesIO()
    df.write_csv(buf, **kw)  # type: ignore[arg-type]
    return buf.getvalue()


async def expect_error(code: grpc.StatusCode, field: str, call: Callable[[], object]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call()  # type: ignore[misc]
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert details.startswith(field + ":"), details
    return details


# -- ingest ---------------------------------------------------------------------------------------


async def test_every_format_gives_the_same_table(client: Client) -> None:
    df = iris()
    parquet, ipc_file, ipc_stream = io.BytesIO(), io.BytesIO(), io.BytesIO()
    df.write_parquet(parquet)
    df.write_ipc(ipc_file)
    df.write_ipc_stream(ipc_stream)
    jsonl = io.BytesIO()
    df.write_ndjson(jsonl)
    uploads = {
        "csv": await client.upload("iris-csv", csv_bytes(df)),
        "semicolon": await client.upload("iris-semi", csv_bytes(df, separator=";")),
        "tab": await client.upload("iris-tab", csv_bytes(df, separator="\t"), csv=data_pb2.CsvOptions(delimiter="\t")),
        "parquet": await client.upload("iris-pq", parquet.getvalue(), fmt="parquet"),
        "arrow-file": await client.upload("iris-ipc", ipc_file.getvalue(), fmt="arrow"),
        "arrow-stream": await client.upload("iris-ipcs", ipc_stream.getvalue(), fmt="arrow"),
        "jsonl": await client.upload("iris-jsonl", jsonl.getvalue(), fmt="jsonl"),
    }
    for how, version in uploads.items():
        assert version.row_count == 150, how
        assert [c.name for c in version.columns] == df.columns, how
        back = await client.read(version.version_id)
        assert back.equals(df), how


async def test_encodings_headers_and_quoting(client: Client) -> None:
    text = 'city,note\nMünchen,"a, quoted; note"\nZürich,plain\n'
    latin1 = await client.upload("cities", text.encode("latin-1"), csv=data_pb2.CsvOptions(encoding="latin-1"))
    back = await client.read(latin1.version_id)
    assert back["city"].to_list() == ["München", "Zürich"] and back["note"][0] == "a, quoted; note"
    details = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, "chunk", lambda: client.upload("cities2", text.encode("latin-1"))
    )
    assert "not valid UTF-8" in details and "latin-1" in details
    no_header = await client.upload("raw", b"1,2\n3,4\n", csv=data_pb2.CsvOptions(has_header=False))
    assert no_header.row_count == 2 and len(no_header.columns) == 2
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "header.csv.encoding",
        lambda: client.upload("x", b"a\n1\n", csv=data_pb2.CsvOptions(encoding="klingon-8")),
    )


async def test_a_file_larger_than_a_nats_message_streams_in_chunks(client: Client) -> None:
    rng = np.random.default_rng(0)
    df = pl.DataFrame({f"c{i}": rng.normal(size=60_000) for i in range(8)})
    raw = csv_bytes(df)
    assert len(raw) > 4 * 1024 * 1024
    version = await client.upload("big", raw, chunk=512 * 1024, expected_size=len(raw))
    assert version.row_count == 60_000 and version.object.size > 1024 * 1024
    back = await client.read(version.version_id, batch_rows=10_000)
    assert back.height == 60_000
    np.testing.assert_allclose(back["c3"].to_numpy(), df["c3"].to_numpy())


async def test_the_same_bytes_give_the_same_version(client: Client) -> None:
    raw = csv_bytes(iris())
    first = await client.upload("dedupe", raw)
    again = await client.upload("dedupe", raw, chunk=999)
    assert again.version_id == first.version_id and again.deduplicated and not first.deduplicated
    versions = await client.stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest(dataset_name="dedupe"))
    assert [v.version_id for v in versions.versions] == [first.version_id]


# -- schema ---------------------------------------------------------------------------------------


async def test_schema_is_inferred_and_editable(client: Client) -> None:
    version = await client.upload("schema", b"n,x,label\n1,2.5,a\n2,,b\n3,4.0,a\n4,1.0,a\n")
    cols = {c.name: c for c in version.columns}
    assert (cols["n"].dtype, cols["x"].dtype, cols["label"].dtype) == ("Int64", "Float64", "String")
    assert cols["x"].nullable and not cols["n"].nullable
    assert cols["label"].categorical and not cols["x"].categorical
    edited = await client.stub.UpdateSchema(
        data_pb2.UpdateSchemaRequest(
            version_id=version.version_id, changes=[data_pb2.ColumnChange(name="n", dtype="float")]
        )
    )
    assert edited.parent_version_id == version.version_id and edited.origin == "schema"
    assert {c.name: c.dtype for c in edited.columns}["n"] == "Float64"
    again = await client.stub.UpdateSchema(
        data_pb2.UpdateSchemaRequest(
            version_id=version.version_id, changes=[data_pb2.ColumnChange(name="n", dtype="float")]
        )
    )
    assert again.version_id == edited.version_id and again.deduplicated
    for column, dtype in (("label", "int"), ("x", "int")):  # text, and 2.5 (polars would truncate it)
        details = await expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "changes[1].name",
            lambda c=column, t=dtype: client.stub.UpdateSchema(  # type: ignore[misc]
                data_pb2.UpdateSchemaRequest(
                    version_id=version.version_id,
                    changes=[data_pb2.ColumnChange(name="n", dtype="float"), data_pb2.ColumnChange(name=c, dtype=t)],
                )
            ),
        )
        assert column in details
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "changes[0].dtype",
        lambda: client.stub.UpdateSchema(
            data_pb2.UpdateSchemaRequest(
                version_id=version.version_id, changes=[data_pb2.ColumnChange(name="n", dtype="int128")]
            )
        ),
    )
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "changes[0].name",
        lambda: client.stub.UpdateSchema(
            data_pb2.UpdateSchemaRequest(
                version_id=version.version_id, changes=[data_pb2.ColumnChange(name="zz", dtype="int")]
            )
        ),
    )


# -- validation -----------------------------------------------------------------------------------


async def test_validation_report_and_event(client: Client, nc: NATS) -> None:
    version = await client.upload("people", b"age,email\n34,a@x.org\n-2,b@x.org\n150,not-an-email\n34,a@x.org\n")
    rules = [
        {"kind": "range", "column": "age", "min": 0, "max": 120},
        {"kind": "regex", "column": "email", "pattern": r"^[^@]+@[^@]+$"},
        {"kind": "unique", "columns": ["age", "email"]},
        {"kind": "not_null", "column": "age"},
        {"kind": "row_count", "min": 1, "max": 100},
    ]
    dataset = await client.stub.SetValidationRules(
        data_pb2.SetValidationRulesRequest(dataset="people", rules_json=json.dumps(rules))
    )
    assert len(json.loads(dataset.rules_json)) == 5
    report = await client.stub.ValidateVersion(data_pb2.ValidateVersionRequest(version_id=version.version_id))
    assert not report.valid and report.rules_checked == 5
    by_kind = {v.kind: v for v in report.violations}
    assert set(by_kind) == {"range", "regex", "unique"}
    assert by_kind["range"].count == 2
    assert sorted(json.loads(e)["_row"] for e in by_kind["range"].examples_json) == [1, 2]
    assert by_kind["regex"].count == 1 and json.loads(by_kind["regex"].examples_json[0])["email"] == "not-an-email"
    # A new version of a dataset with rules is checked on arrival, and a failure is an event.
    bad = await client.upload("people", b"age,email\n200,c@x.org\n")
    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{client.tenant}.dataset.validation.failed", stream=EVENTS_STREAM, ordered_consumer=True
    )
    event = events.decode(await sub.next_msg(timeout=10))
    await sub.unsubscribe()
    assert isinstance(event.data, events_pb2.DatasetValidationFailed)
    assert event.data.lineage.dataset_version_id == bad.version_id and event.data.violations == 1
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "rules[0].kind",
        lambda: client.stub.SetValidationRules(
            data_pb2.SetValidationRulesRequest(dataset="people", rules_json='[{"kind": "vibes"}]')
        ),
    )


# -- recipes --------------------------------------------------------------------------------------


async def test_a_recipe_makes_a_new_version_with_lineage_and_fitted_parameters(client: Client) -> None:
    version = await client.upload("messy", b"a,b,c\n1,10,x\n,20,y\n3,,x\n3,,x\n5,50,z\n")
    recipe = {
        "steps": [
            {"op": "dedupe"},
            {"op": "fill_nulls", "column": "a", "strategy": "mean"},
            {"op": "fill_nulls", "column": "b", "strategy": "constant", "value": 0},
            {"op": "standardize", "columns": ["a"]},
            {"op": "one_hot", "column": "c"},
        ]
    }
    derived = await client.stub.ApplyRecipe(
        data_pb2.ApplyRecipeRequest(version_id=version.version_id, recipe_json=json.dumps(recipe))
    )
    assert derived.origin == "recipe" and derived.parent_version_id == version.version_id
    assert derived.recipe_digest and derived.row_count == 4
    fitted = json.loads(derived.fitted_json)
    assert fitted[1]["fill"] == pytest.approx(3.0)
    assert fitted[4]["categories"] == ["x", "y", "z"]
    back = await client.read(derived.version_id)
    assert back.columns == ["a", "b", "c=x", "c=y", "c=z"]
    assert back["a"].mean() == pytest.approx(0.0, abs=1e-12)
    again = await client.stub.ApplyRecipe(
        data_pb2.ApplyRecipeRequest(version_id=version.version_id, recipe_json=json.dumps(recipe))
    )
    assert again.version_id == derived.version_id and again.deduplicated
    before = await client.stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest(dataset_name="messy"))
    details = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "recipe.steps[0].columns",
        lambda: client.stub.ApplyRecipe(
            data_pb2.ApplyRecipeRequest(
                version_id=version.version_id, recipe_json='{"steps": [{"op": "standardize", "columns": ["nope"]}]}'
            )
        ),
    )
    assert "nope" in details
    after = await client.stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest(dataset_name="messy"))
    assert len(after.versions) == len(before.versions) == 2


# -- profiles, splits, reading --------------------------------------------------------------------


async def test_profile_matches_the_data(client: Client) -> None:
    df = iris()
    version = await client.upload("iris-profile", csv_bytes(df))
    prof = await client.stub.GetProfile(data_pb2.GetProfileRequest(version_id=version.version_id))
    assert prof.rows == 150
    cols = {c.name: c for c in prof.columns}
    sl = cols["sepal length (cm)"]
    assert sl.mean == pytest.approx(df["sepal length (cm)"].mean())
    assert (sl.min, sl.max) == (df["sepal length (cm)"].min(), df["sepal length (cm)"].max())
    assert sum(sl.histogram.counts) == 150 and len(sl.histogram.edges) == len(sl.histogram.counts) + 1
    assert sl.quantiles["p50"] == pytest.approx(df["sepal length (cm)"].median(), abs=0.11)
    sp = cols["species"]
    assert sp.categorical and sp.distinct == 3
    assert sorted((t.value, t.count) for t in sp.top_values) == [("setosa", 50), ("versicolor", 50), ("virginica", 50)]


async def test_splits_are_deterministic_disjoint_and_stratified(client: Client) -> None:
    version = await client.upload("iris-split", csv_bytes(iris().with_row_index("id")))
    spec = data_pb2.SplitSpec(seed=7, train=0.6, validation=0.2, test=0.2, stratify_column="species")
    counts = await client.stub.SplitVersion(data_pb2.SplitVersionRequest(version_id=version.version_id, spec=spec))
    assert (counts.train_rows, counts.validation_rows, counts.test_rows) == (90, 30, 30)
    parts = {s: await client.read(version.version_id, split=s, spec=spec) for s in ("train", "validation", "test")}
    for part in parts.values():
        assert part["species"].value_counts()["count"].n_unique() == 1  # equal share of each species
    ids = [set(p["id"].to_list()) for p in parts.values()]
    assert set.union(*ids) == set(range(150)) and sum(map(len, ids)) == 150  # disjoint and complete
    again = await client.read(version.version_id, split="test", spec=spec)
    assert again.equals(parts["test"])
    other = await client.read(
        version.version_id, split="test", spec=data_pb2.SplitSpec(seed=8, stratify_column="species")
    )
    assert not other.equals(parts["test"])
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "spec",
        lambda: client.stub.SplitVersion(
            data_pb2.SplitVersionRequest(version_id=version.version_id, spec=data_pb2.SplitSpec(train=0.9, test=0.9))
        ),
    )
    await expect_error(grpc.StatusCode.INVALID_ARGUMENT, "split", lambda: client.read(version.version_id, split="dev"))


async def test_read_a_column_subset(client: Client) -> None:
    version = await client.upload("iris-read", csv_bytes(iris()))
    back = await client.read(version.version_id, columns=["species", "petal width (cm)"], batch_rows=40)
    assert back.columns == ["species", "petal width (cm)"] and back.height == 150
    await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, "columns", lambda: client.read(version.version_id, columns=["nope"])
    )


# -- datasets: list, search, delete, events -------------------------------------------------------


async def test_list_search_delete_and_events(client: Client, nc: NATS) -> None:
    v1 = await client.upload("alpha-sales", b"x\n1\n")
    v2 = await client.upload("alpha-sales", b"x\n1\n2\n")
    beta = await client.upload("beta-costs", b"y\n3\n")
    found = await client.stub.ListDatasets(data_pb2.ListDatasetsRequest(search="alpha"))
    assert [(d.name, d.version_count) for d in found.datasets] == [("alpha-sales", 2)]
    by_id = await client.stub.GetDataset(data_pb2.GetDatasetRequest(dataset=v1.dataset_id))
    assert by_id.name == "alpha-sales"
    deleted = await client.stub.DeleteDataset(data_pb2.DeleteDatasetRequest(dataset="alpha-sales"))
    assert deleted.versions_deleted == 2 and deleted.objects_deleted == 4
    await expect_error(
        grpc.StatusCode.NOT_FOUND,
        "version_id",
        lambda: client.stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=v1.version_id)),
    )
    remaining = await client.stub.ListDatasets(data_pb2.ListDatasetsRequest())
    assert [d.name for d in remaining.datasets] == ["beta-costs"]
    store = await nc.jetstream().object_store("datasets")
    names = [o.name for o in await store.list(ignore_deletes=True)]
    assert not [n for n in names if n.startswith(f"{client.tenant}/{v1.version_id}")]
    # Erased, not tombstoned: no message of the dataset's or its versions' records is left.
    kv = await nc.jetstream().stream_info("KV_datasets", subjects_filter=f"$KV.datasets.{client.tenant}.>")
    assert sorted(kv.state.subjects or {}) == sorted(
        [f"$KV.datasets.{client.tenant}.d.beta-costs", f"$KV.datasets.{client.tenant}.v.{beta.version_id}"]
    )
    sub = await nc.jetstream().subscribe(f"lepton.evt.{client.tenant}.>", stream=EVENTS_STREAM, ordered_consumer=True)
    received = []
    while True:
        try:
            received.append(events.decode(await sub.next_msg(timeout=1)))
        except TimeoutError:
            break
    await sub.unsubscribe()
    types = [e.type for e in received]
    assert list(received[-1].data.version_ids) == [v1.version_id, v2.version_id]
    assert types == [
        "ai.lepton.dataset.created.v1",
        "ai.lepton.dataset.version.created.v1",
        "ai.lepton.dataset.version.created.v1",
        "ai.lepton.dataset.created.v1",
        "ai.lepton.dataset.version.created.v1",
        "ai.lepton.dataset.deleted.v1",
    ]


async def test_another_tenants_data_is_not_found(client: Client, address: str) -> None:
    version = await client.upload("private", b"secret\ntop-secret-value\n")
    other_key = next(_free)
    async with client_channel(address, other_key) as channel:
        other = Client(data_pb2_grpc.DataServiceStub(channel), KEYS[other_key], other_key)
        for call, field in (
            (
                lambda: other.stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=version.version_id)),
                "version_id",
            ),
            (lambda: other.read(version.version_id), "version_id"),
            (lambda: other.stub.GetProfile(data_pb2.GetProfileRequest(version_id=version.version_id)), "version_id"),
            (lambda: other.stub.GetDataset(data_pb2.GetDatasetRequest(dataset="private")), "dataset"),
            (lambda: other.stub.GetDataset(data_pb2.GetDatasetRequest(dataset=version.dataset_id)), "dataset"),
            (lambda: other.stub.DeleteDataset(data_pb2.DeleteDatasetRequest(dataset="private")), "dataset"),
        ):
            details = await expect_error(grpc.StatusCode.NOT_FOUND, field, call)
            assert "top-secret" not in details
    assert (await client.stub.GetDataset(data_pb2.GetDatasetRequest(dataset="private"))).version_count == 1
