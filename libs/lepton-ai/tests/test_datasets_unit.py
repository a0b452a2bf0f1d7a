"""``client.datasets`` and ``Dataset`` against the in-process fake: what each call sends and returns."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import lepton_ai as la
import lepton_ai.datasets as lepton_datasets

from .fakes import FakePlatform, sales_frame, write_csv

pytestmark = pytest.mark.timeout(30)
MIB = 1024 * 1024


def test_a_file_upload_streams_a_header_then_chunks_with_its_size_and_digest(
    client: la.Client, fake: FakePlatform, tmp_path: Path
) -> None:
    rows = 60_000  # about 2.5 MiB of CSV: more than one chunk, more than one default gRPC message would take
    big = pl.DataFrame({"id": range(rows), "note": ["x" * 30] * rows, "target": [0.5] * rows})
    path = write_csv(tmp_path / "events.csv", big)
    data = path.read_bytes()
    assert len(data) > 2 * MIB

    dataset = client.datasets.upload(path, progress=False)

    (call,) = fake.calls_to("UploadDataset")
    header, *chunks = call.requests
    assert header.WhichOneof("part") == "header"
    assert header.header.dataset_name == "events" and header.header.format == "csv"
    assert header.header.expected_size == len(data)
    assert header.header.expected_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert all(c.WhichOneof("part") == "chunk" for c in chunks)
    sizes = [len(c.chunk) for c in chunks]
    assert len(sizes) >= 3 and max(sizes) <= MIB  # well under the 4 MiB a gRPC message may take by default
    assert len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]  # full chunks, then the rest
    assert b"".join(c.chunk for c in chunks) == data
    assert (dataset.row_count, dataset.columns) == (rows, {"id": "Int64", "note": "String", "target": "Float64"})


def test_an_upload_with_a_progress_bar_sends_the_same_chunks(
    client: la.Client, fake: FakePlatform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * (MIB // 2))  # 2 MiB + 4 bytes
    client.datasets.upload(path, "blob", progress=True)
    header, *chunks = fake.calls_to("UploadDataset")[0].requests
    assert [len(c.chunk) for c in chunks] == [MIB, MIB, 4]
    assert header.header.expected_size == 2 * MIB + 4
    assert "upload blob" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("filename", "name", "format"),
    [
        ("Q3 Sales (final).CSV", "q3-sales-final", "csv"),
        ("prices.tsv", "prices", "csv"),
        ("rows.ndjson", "rows", "jsonl"),
        ("table.parquet", "table", "parquet"),
        ("ÜBER__.pq", "ber", "parquet"),
    ],
)
def test_the_dataset_name_and_format_come_from_the_file_name(
    client: la.Client, fake: FakePlatform, tmp_path: Path, filename: str, name: str, format: str
) -> None:
    path = tmp_path / filename
    frame = sales_frame()
    if format == "csv":
        path.write_text("units,target\n1,2.0\n")
    elif format == "jsonl":
        frame.write_ndjson(path)
    else:
        frame.write_parquet(path)
    dataset = client.datasets.upload(path, progress=False)
    header = fake.calls_to("UploadDataset")[0].requests[0].header
    assert (header.dataset_name, header.format) == (name, format)
    assert dataset.name == name


def test_csv_options_are_sent_only_when_given(client: la.Client, fake: FakePlatform, tmp_path: Path) -> None:
    path = tmp_path / "semi.txt"
    path.write_text("1;2.5\n3;4.5\n")
    client.datasets.upload(path, "semi", delimiter=";", has_header=False, encoding="latin-1", progress=False)
    client.datasets.upload(write_csv(tmp_path / "plain.csv"), progress=False)
    given, default = (c.requests[0].header.csv for c in fake.calls_to("UploadDataset"))
    assert (given.delimiter, given.encoding, given.HasField("has_header"), given.has_header) == (
        ";",
        "latin-1",
        True,
        False,
    )
    assert not default.HasField("has_header") and default.delimiter == "" and default.encoding == ""


@pytest.mark.parametrize("kind", ["polars", "pandas"])
def test_a_dataframe_travels_as_an_arrow_ipc_stream(client: la.Client, fake: FakePlatform, kind: str) -> None:
    frame = sales_frame()
    source = frame if kind == "polars" else frame.to_pandas()
    dataset = client.datasets.upload(source, "frame", progress=False)
    header, *chunks = fake.calls_to("UploadDataset")[0].requests
    assert header.header.format == "arrow"
    sent = pl.read_ipc_stream(io.BytesIO(b"".join(c.chunk for c in chunks)))
    assert_frame_equal(sent, frame)
    assert dataset.row_count == 5 and dataset.origin == "upload"


def test_what_cannot_be_uploaded_is_refused_before_any_call(
    client: la.Client, fake: FakePlatform, tmp_path: Path
) -> None:
    with pytest.raises(la.InvalidArgument) as no_name:
        client.datasets.upload(sales_frame(), progress=False)
    assert no_name.value.field == "name"
    (tmp_path / "notes.docx").write_bytes(b"PK")
    with pytest.raises(la.InvalidArgument) as unknown:
        client.datasets.upload(tmp_path / "notes.docx", progress=False)
    assert unknown.value.field == "format" and "format='csv'" in unknown.value.message
    with pytest.raises(la.InvalidArgument) as missing:
        client.datasets.upload(tmp_path / "missing.csv", progress=False)
    assert missing.value.field == "source"
    with pytest.raises(la.InvalidArgument) as wrong_type:
        client.datasets.upload(42, "n", progress=False)  # type: ignore[arg-type]
    assert wrong_type.value.field == "source" and "int" in wrong_type.value.message
    assert fake.calls == []


def test_an_explicit_format_wins_over_the_suffix(client: la.Client, fake: FakePlatform, tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    path.write_text("units,target\n1,2.0\n")
    client.datasets.upload(path, format="csv", progress=False)
    assert fake.calls_to("UploadDataset")[0].requests[0].header.format == "csv"


def test_the_platforms_refusal_of_an_upload_keeps_its_field(client: la.Client, tmp_path: Path) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        client.datasets.upload(write_csv(tmp_path / "a.csv"), "Not A Name!", progress=False)
    assert caught.value.field == "dataset_name"
    assert "'Not A Name!'" in caught.value.message


def test_the_same_bytes_under_the_same_name_give_the_same_version(
    client: la.Client, fake: FakePlatform, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "sales.csv")
    first = client.datasets.upload(path, progress=False)
    again = client.datasets.upload(path, progress=False)
    assert (first.deduplicated, again.deduplicated) == (False, True)
    assert again.version_id == first.version_id


def test_get_by_version_id_asks_for_that_version_only(client: la.Client, fake: FakePlatform) -> None:
    version = fake.data.add("sales", sales_frame())
    fake.data.add("sales", sales_frame(7))
    dataset = client.datasets.get(version.version_id)
    assert fake.methods() == ["GetDatasetVersion"]
    assert fake.calls[0].request.version_id == version.version_id
    assert (dataset.version_id, dataset.row_count, dataset.id) == (version.version_id, 5, version.dataset_id)


@pytest.mark.parametrize("ref", ["sales", "ds_001"])
def test_get_by_name_or_id_gives_the_latest_version(client: la.Client, fake: FakePlatform, ref: str) -> None:
    fake.data.add("sales", sales_frame())
    latest = fake.data.add("sales", sales_frame(7))
    dataset = client.datasets.get(ref)
    assert fake.methods() == ["GetDataset", "GetDatasetVersion"]
    assert fake.calls[0].request.dataset == ref
    assert fake.calls[1].request.version_id == latest.version_id
    assert (dataset.version_id, dataset.row_count, dataset.name) == (latest.version_id, 7, "sales")
    assert dataset.columns == {"store": "String", "units": "Int64", "price": "Float64", "target": "Float64"}


def test_get_of_an_unknown_dataset_is_not_found_naming_the_field(client: la.Client) -> None:
    with pytest.raises(la.NotFound) as caught:
        client.datasets.get("nope")
    assert (caught.value.field, caught.value.code) == ("dataset", "NOT_FOUND")
    with pytest.raises(la.NotFound) as version:
        client.datasets.get("dv_9999")
    assert version.value.field == "version_id"


def test_list_sends_the_search_text_and_returns_summaries(client: la.Client, fake: FakePlatform) -> None:
    fake.data.add("sales-eu", sales_frame())
    latest = fake.data.add("sales-eu", sales_frame(2))
    fake.data.add("stores", sales_frame())
    found = client.datasets.list("sales")
    assert fake.calls[0].request.search == "sales"
    assert found == [la.DatasetSummary("ds_001", "sales-eu", 2, latest.version_id, [])]
    assert [d.name for d in client.datasets.list()] == ["sales-eu", "stores"]


def test_versions_lists_a_datasets_versions_as_datasets(client: la.Client, fake: FakePlatform) -> None:
    fake.data.add("a", sales_frame(1))
    fake.data.add("b", sales_frame(2))
    fake.data.add("a", sales_frame(3))
    versions = client.datasets.versions("a")
    assert fake.calls[0].request.dataset_name == "a"
    assert [(v.version_id, v.row_count) for v in versions] == [("dv_0001", 1), ("dv_0003", 3)]
    assert all(isinstance(v, la.Dataset) for v in versions)


@pytest.mark.parametrize(
    "recipe",
    [[{"op": "drop", "columns": ["store"]}], {"steps": [{"op": "drop", "columns": ["store"]}]}],
    ids=["steps", "mapping"],
)
def test_apply_sends_the_recipe_and_returns_the_derived_version(
    client: la.Client, fake: FakePlatform, recipe: list[dict[str, Any]] | dict[str, Any]
) -> None:
    parent = client.datasets.get(fake.data.add("sales", sales_frame()).version_id)
    derived = parent.apply(recipe)
    (call,) = fake.calls_to("ApplyRecipe")
    assert call.request.version_id == parent.version_id
    assert json.loads(call.request.recipe_json) == {"steps": [{"op": "drop", "columns": ["store"]}]}
    assert derived.version_id != parent.version_id
    assert (derived.origin, derived.parent_version_id) == ("recipe", parent.version_id)
    assert derived.recipe == {"steps": [{"columns": ["store"], "op": "drop"}]} and derived.fitted == [{}]
    assert "store" not in derived.columns and derived.row_count == 5


def test_a_bad_recipe_step_is_invalid_argument_naming_the_step(client: la.Client, fake: FakePlatform) -> None:
    dataset = client.datasets.get(fake.data.add("sales", sales_frame()).version_id)
    with pytest.raises(la.InvalidArgument) as caught:
        dataset.apply([{"op": "drop", "columns": []}, {"op": "explode"}])
    assert caught.value.field == "recipe_json.steps[1].op"


def test_to_polars_reassembles_every_streamed_batch(client: la.Client, fake: FakePlatform) -> None:
    frame = sales_frame(7)
    dataset = client.datasets.get(fake.data.add("sales", frame).version_id)
    assert_frame_equal(dataset.to_polars(), frame)  # 7 rows in batches of 2: four chunks
    assert_frame_equal(dataset.to_polars(columns=["units", "target"]), frame.select("units", "target"))
    full, some = fake.calls_to("ReadDataset")
    assert (list(full.request.columns), list(some.request.columns)) == ([], ["units", "target"])
    assert full.request.version_id == dataset.version_id
    pd.testing.assert_frame_equal(dataset.to_pandas(), frame.to_pandas())


def test_an_error_while_reading_is_raised_as_the_sdk_error(client: la.Client, fake: FakePlatform) -> None:
    dataset = client.datasets.get(fake.data.add("sales", sales_frame(7)).version_id)
    with pytest.raises(la.InvalidArgument) as caught:
        dataset.to_polars(columns=["nope"])
    assert caught.value.field == "columns"


def test_profile_keeps_only_the_statistics_the_platform_sent(client: la.Client, fake: FakePlatform) -> None:
    dataset = client.datasets.get(fake.data.add("sales", sales_frame()).version_id)
    profile = dataset.profile()
    assert profile["units"] == {
        "dtype": "Int64",
        "count": 5,
        "nulls": 0,
        "distinct": 5,
        "categorical": False,
        "min": 1.0,
        "max": 5.0,
        "mean": 3.0,
    }
    store = profile["store"]
    assert "min" not in store and "mean" not in store  # unset optional fields stay absent, not 0.0
    assert store["top_values"] == {"s0": 2, "s1": 2, "s2": 1} and store["categorical"] is True


def test_split_sends_the_default_spec_and_returns_the_counts(client: la.Client, fake: FakePlatform) -> None:
    dataset = client.datasets.get(fake.data.add("sales", sales_frame(10)).version_id)
    assert dataset.split() == la.SplitCounts(train=8, validation=0, test=2)
    assert dataset.split(la.SplitSpec(train=0.6, validation=0.2, test=0.2, seed=7, stratify="store")) == (
        la.SplitCounts(6, 2, 2)
    )
    default, given = (c.request.spec for c in fake.calls_to("SplitVersion"))
    assert (default.train, default.validation, default.test, default.seed) == pytest.approx((0.8, 0.0, 0.2, 0))
    assert (given.seed, given.stratify_column) == (7, "store")


def test_delete_returns_how_many_versions_went(client: la.Client, fake: FakePlatform) -> None:
    fake.data.add("sales", sales_frame())
    fake.data.add("sales", sales_frame(2))
    assert client.datasets.delete("sales") == 2
    assert fake.calls[0].request.dataset == "sales"
    assert client.datasets.list() == []


def test_a_file_upload_holds_one_chunk_of_the_file_at_a_time(
    client: la.Client, fake: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is hashed, then read again as it is sent, a chunk at a time: never read whole."""
    path = tmp_path / "blob.csv"
    data = b"a,b\n" + b"1,2\n" * MIB  # 4 MiB + 4 bytes
    path.write_bytes(data)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} read whole"))
    reads: list[int] = []
    real_open = Path.open

    def watched(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        if self == path:
            read = f.read
            f.read = lambda n=-1: reads.append(n) or read(n)  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(Path, "open", watched)
    client.datasets.upload(path, "blob", progress=False)
    assert reads and all(0 < n <= MIB for n in reads), sorted(set(reads))
    header, *chunks = fake.calls_to("UploadDataset")[0].requests
    assert header.header.expected_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert b"".join(c.chunk for c in chunks) == data


def test_a_file_that_changes_while_it_is_sent_is_refused_naming_it(
    client: la.Client, fake: FakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "moving.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * MIB)
    real = lepton_datasets._payload

    def then_changed(source: object, fmt: str | None) -> Any:
        payload = real(source, fmt)
        path.write_bytes(b"a,b\n" + b"3,4\n" * MIB)  # the same size, other bytes
        return payload

    monkeypatch.setattr(lepton_datasets, "_payload", then_changed)
    with pytest.raises(la.errors.InvalidArgument, match="changed while it was being uploaded"):
        client.datasets.upload(path, "moving", progress=False)
