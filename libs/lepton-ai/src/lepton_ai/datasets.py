"""``client.datasets``: upload files and DataFrames, and work with dataset versions."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
from lepton.data.v1 import data_pb2, data_pb2_grpc

from lepton_ai import _progress
from lepton_ai._transport import Transport, ride_out
from lepton_ai.errors import InvalidArgument, LeptonError

if TYPE_CHECKING:
    import pandas as pd

CHUNK = 1024 * 1024
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".arrow": "arrow",
    ".ipc": "arrow",
    ".feather": "arrow",
}


@dataclass(frozen=True)
class Violation:
    kind: str
    column: str
    description: str
    count: int
    examples: list[dict[str, Any]]


@dataclass(frozen=True)
class ValidationReport:
    version_id: str
    valid: bool
    rules_checked: int
    violations: list[Violation]


@dataclass(frozen=True)
class SplitCounts:
    train: int
    validation: int
    test: int


@dataclass(frozen=True)
class DatasetSummary:
    """A named dataset: how many versions it has and which is the latest."""

    id: str
    name: str
    version_count: int
    latest_version_id: str
    rules: list[dict[str, Any]]


@dataclass(frozen=True)
class SplitSpec:
    """How to split a version (fractions summing to 1; ``stratify`` keeps a column's shares)."""

    train: float = 0.8
    validation: float = 0.0
    test: float = 0.2
    seed: int = 0
    stratify: str = ""

    def to_pb(self) -> data_pb2.SplitSpec:
        return data_pb2.SplitSpec(
            seed=self.seed,
            train=self.train,
            validation=self.validation,
            test=self.test,
            stratify_column=self.stratify,
        )


@dataclass
class Dataset:
    """One immutable dataset version, and what you can do with it."""

    _datasets: Datasets = field(repr=False)
    id: str
    version_id: str
    name: str
    columns: dict[str, str]
    row_count: int
    origin: str
    parent_version_id: str
    recipe: dict[str, Any] | None
    fitted: list[dict[str, Any]] | None
    deduplicated: bool = False

    @classmethod
    def _from_pb(cls, owner: Datasets, v: data_pb2.DatasetVersion) -> Dataset:
        return cls(
            owner,
            id=v.dataset_id,
            version_id=v.version_id,
            name=v.dataset_name,
            columns={c.name: c.dtype for c in v.columns},
            row_count=v.row_count,
            origin=v.origin,
            parent_version_id=v.parent_version_id,
            recipe=json.loads(v.recipe_json) if v.recipe_json else None,
            fitted=json.loads(v.fitted_json) if v.fitted_json else None,
            deduplicated=v.deduplicated,
        )

    def to_polars(
        self, columns: Sequence[str] | None = None, split: str = "", spec: SplitSpec | None = None
    ) -> pl.DataFrame:
        """The version's rows (or one split's, or some columns) as a polars DataFrame."""
        request = data_pb2.ReadDatasetRequest(
            version_id=self.version_id, columns=list(columns or []), split=split, spec=(spec or SplitSpec()).to_pb()
        )
        t = self._datasets._t
        tables = [
            pa.ipc.open_stream(chunk.arrow_ipc).read_all() for chunk in t.stream("data", t_stub(t).ReadDataset, request)
        ]
        frame = pl.from_arrow(pa.concat_tables(tables)) if tables else pl.DataFrame()
        assert isinstance(frame, pl.DataFrame)
        return frame

    def to_pandas(
        self, columns: Sequence[str] | None = None, split: str = "", spec: SplitSpec | None = None
    ) -> pd.DataFrame:
        """The version's rows as a pandas DataFrame."""
        return self.to_polars(columns, split, spec).to_pandas()

    def profile(self) -> dict[str, dict[str, Any]]:
        """Per-column statistics computed at ingest (count, nulls, min/max/mean/std, quantiles, ...)."""
        t = self._datasets._t
        prof = t.call("data", t_stub(t).GetProfile, data_pb2.GetProfileRequest(version_id=self.version_id))
        out: dict[str, dict[str, Any]] = {}
        for c in prof.columns:
            entry: dict[str, Any] = {
                "dtype": c.dtype,
                "count": c.count,
                "nulls": c.nulls,
                "distinct": c.distinct,
                "categorical": c.categorical,
            }
            for attr in ("min", "max", "mean", "std"):
                if c.HasField(attr):
                    entry[attr] = getattr(c, attr)
            if c.quantiles:
                entry["quantiles"] = dict(c.quantiles)
            if c.histogram.counts:
                entry["histogram"] = {"edges": list(c.histogram.edges), "counts": list(c.histogram.counts)}
            if c.top_values:
                entry["top_values"] = {t.value: t.count for t in c.top_values}
            out[c.name] = entry
        return out

    def validate(self, rules: Sequence[Mapping[str, Any]] | None = None) -> ValidationReport:
        """Checks the version against ``rules`` (default: its dataset's rules)."""
        t = self._datasets._t
        report = t.call(
            "data",
            t_stub(t).ValidateVersion,
            data_pb2.ValidateVersionRequest(
                version_id=self.version_id, rules_json=json.dumps(list(rules)) if rules is not None else ""
            ),
        )
        return ValidationReport(
            version_id=report.version_id,
            valid=report.valid,
            rules_checked=report.rules_checked,
            violations=[
                Violation(v.kind, v.column, v.description, v.count, [json.loads(e) for e in v.examples_json])
                for v in report.violations
            ],
        )

    def apply(self, recipe: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Dataset:
        """Runs a recipe (``{"steps": [...]}`` or the list of steps); returns the new version."""
        body = {"steps": list(recipe)} if not isinstance(recipe, Mapping) else dict(recipe)
        t = self._datasets._t
        v = t.call(
            "data",
            t_stub(t).ApplyRecipe,
            data_pb2.ApplyRecipeRequest(version_id=self.version_id, recipe_json=json.dumps(body)),
        )
        return Dataset._from_pb(self._datasets, v)

    def update_schema(self, changes: Mapping[str, str]) -> Dataset:
        """Casts columns (``{"age": "float"}``); returns the new version."""
        t = self._datasets._t
        v = t.call(
            "data",
            t_stub(t).UpdateSchema,
            data_pb2.UpdateSchemaRequest(
                version_id=self.version_id,
                changes=[data_pb2.ColumnChange(name=k, dtype=v) for k, v in changes.items()],
            ),
        )
        return Dataset._from_pb(self._datasets, v)

    def split(self, spec: SplitSpec | None = None) -> SplitCounts:
        """Row counts of a deterministic split (the same seed gives the same rows)."""
        t = self._datasets._t
        r = t.call(
            "data",
            t_stub(t).SplitVersion,
            data_pb2.SplitVersionRequest(version_id=self.version_id, spec=(spec or SplitSpec()).to_pb()),
        )
        return SplitCounts(r.train_rows, r.validation_rows, r.test_rows)

    def set_rules(self, rules: Sequence[Mapping[str, Any]]) -> DatasetSummary:
        """Declares validation rules for the whole dataset; later versions are checked on arrival."""
        return self._datasets.set_rules(self.name, rules)


def t_stub(t: Transport) -> data_pb2_grpc.DataServiceStub:
    return data_pb2_grpc.DataServiceStub(t.channel("data"))


def _summary(d: data_pb2.Dataset) -> DatasetSummary:
    return DatasetSummary(d.dataset_id, d.name, d.version_count, d.latest_version_id, json.loads(d.rules_json or "[]"))


def _dataset_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64]
    return name or "dataset"


class Datasets:
    """Dataset operations; reached as ``client.datasets``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def upload(
        self,
        source: str | Path | pl.DataFrame | pd.DataFrame,
        name: str | None = None,
        *,
        format: str | None = None,
        delimiter: str = "",
        encoding: str = "",
        has_header: bool | None = None,
        progress: bool | None = None,
    ) -> Dataset:
        """Uploads a file (CSV, Parquet, JSON lines, Arrow) or a pandas/polars DataFrame.

        DataFrames travel as Arrow IPC. The same bytes under the same name give the
        same version (``deduplicated`` is then true). A progress bar shows on a
        terminal and in Jupyter unless ``progress=False``. If the data service restarts
        mid-upload, the upload starts again once it answers (for up to a minute).
        """
        payload = _payload(source, format)
        name = name or payload.name
        if not name:
            raise InvalidArgument("name: a DataFrame upload needs a dataset name")
        csv = data_pb2.CsvOptions(delimiter=delimiter, encoding=encoding)
        if has_header is not None:
            csv.has_header = has_header
        header = data_pb2.UploadHeader(
            dataset_name=name,
            format=payload.format,
            csv=csv,
            expected_size=payload.size,
            expected_digest=payload.digest,
        )
        show = _progress.wanted(progress)

        def send() -> data_pb2.DatasetVersion:
            chunks = _chunks(header, payload, show, name)
            try:
                answer: data_pb2.DatasetVersion = self._t.call(
                    "data", t_stub(self._t).UploadDataset, chunks, timeout=3600
                )
            except LeptonError:
                if payload.changed is not None:
                    raise payload.changed from None
                raise
            return answer

        # Sent again from the start if the data service restarts meanwhile: the same bytes under the
        # same name are the same version, so a repeat stores nothing twice.
        return Dataset._from_pb(self, ride_out("data", send))

    def get(self, ref: str) -> Dataset:
        """A version by id (``dv_...``), or the latest version of a dataset by name or id."""
        if ref.startswith("dv_"):
            v = self._t.call(
                "data", t_stub(self._t).GetDatasetVersion, data_pb2.GetDatasetVersionRequest(version_id=ref)
            )
            return Dataset._from_pb(self, v)
        d = self._t.call("data", t_stub(self._t).GetDataset, data_pb2.GetDatasetRequest(dataset=ref))
        return self.get(d.latest_version_id)

    def list(self, search: str = "") -> list[DatasetSummary]:
        r = self._t.call("data", t_stub(self._t).ListDatasets, data_pb2.ListDatasetsRequest(search=search))
        return [_summary(d) for d in r.datasets]

    def versions(self, name: str) -> builtins.list[Dataset]:
        r = self._t.call(
            "data", t_stub(self._t).ListDatasetVersions, data_pb2.ListDatasetVersionsRequest(dataset_name=name)
        )
        return [Dataset._from_pb(self, v) for v in r.versions]

    def set_rules(self, dataset: str, rules: Sequence[Mapping[str, Any]]) -> DatasetSummary:
        d = self._t.call(
            "data",
            t_stub(self._t).SetValidationRules,
            data_pb2.SetValidationRulesRequest(dataset=dataset, rules_json=json.dumps(list(rules))),
        )
        return _summary(d)

    def delete(self, dataset: str) -> int:
        """Deletes a dataset and every version, erased from the store; returns how many versions went.

        Models trained on it stay: delete their versions too (``client.models.delete_version``).
        """
        r = self._t.call("data", t_stub(self._t).DeleteDataset, data_pb2.DeleteDatasetRequest(dataset=dataset))
        return int(r.versions_deleted)


@dataclass
class _Payload:
    """What an upload sends: a file's bytes, read as they are sent (never held whole), or a DataFrame's
    Arrow IPC bytes; their format, size and digest, and a default dataset name."""

    format: str
    size: int
    digest: str
    name: str = ""
    path: Path | None = None
    data: bytes = b""
    changed: InvalidArgument | None = None
    """Set when the file changed while it was sent: what the upload raises (gRPC hides an exception of a
    request iterator behind a cancelled call)."""

    def pieces(self) -> Iterator[bytes]:
        """The bytes in :data:`CHUNK`-sized pieces; a file that changed since it was hashed is refused."""
        if self.path is None:
            for start in range(0, len(self.data), CHUNK):
                yield self.data[start : start + CHUNK]
            return
        digest, size = hashlib.sha256(), 0
        with self.path.open("rb") as f:
            while piece := f.read(CHUNK):
                digest.update(piece)
                size += len(piece)
                if size > self.size:
                    break
                yield piece
        if size != self.size or "sha256:" + digest.hexdigest() != self.digest:
            self.changed = InvalidArgument(f"source: {self.path} changed while it was being uploaded; upload it again")
            raise self.changed


def _payload(source: object, fmt: str | None) -> _Payload:
    """What to send (:class:`_Payload`); a file is hashed here in one streaming pass, and read again as sent."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgument(f"source: no file at {path}")
        guessed = fmt or SUFFIX_FORMATS.get(path.suffix.lower())
        if guessed is None:
            raise InvalidArgument(
                f"format: cannot tell the format of {path.name}; pass format='csv' (or parquet, jsonl, arrow)"
            )
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as f:
            while piece := f.read(CHUNK):
                digest.update(piece)
                size += len(piece)
        return _Payload(guessed, size, "sha256:" + digest.hexdigest(), _dataset_name(path.stem), path=path)
    if isinstance(source, pl.DataFrame):
        frame = source
    else:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is pinned with the SDK
            pd = None
        if pd is None or not isinstance(source, pd.DataFrame):
            raise InvalidArgument(f"source: expected a path or a pandas/polars DataFrame, got {type(source).__name__}")
        frame = pl.from_pandas(source)
    buf = io.BytesIO()
    frame.write_ipc_stream(buf)
    data = buf.getvalue()
    return _Payload("arrow", len(data), "sha256:" + hashlib.sha256(data).hexdigest(), data=data)


def _chunks(
    header: data_pb2.UploadHeader, payload: _Payload, show: bool, label: str
) -> Iterator[data_pb2.UploadDatasetRequest]:
    yield data_pb2.UploadDatasetRequest(header=header)
    if not show:
        for piece in payload.pieces():
            yield data_pb2.UploadDatasetRequest(chunk=piece)
        return
    from rich.progress import BarColumn, DownloadColumn, TransferSpeedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with _progress.ProgressBar(f"upload {label}", payload.size, *columns) as bar:
        for piece in payload.pieces():
            yield data_pb2.UploadDatasetRequest(chunk=piece)
            bar.update(advance=len(piece))
