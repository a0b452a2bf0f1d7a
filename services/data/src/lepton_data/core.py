"""Dataset ingest and versions, independent of gRPC and protobuf."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from datetime import datetime

import polars as pl
from pydantic import BaseModel

from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore, sha256_digest
from lepton_core.errors import Conflict, InvalidArgument
from lepton_core.wire import now

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SUPPORTED_FORMATS = ("csv",)


class ColumnRecord(BaseModel):
    name: str
    dtype: str
    nullable: bool


class VersionRecord(BaseModel):
    """One immutable dataset version, keyed ``<tenant>.v.<version_id>`` in KV ``datasets``."""

    tenant: str
    dataset_id: str
    version_id: str
    dataset_name: str
    object: ObjectRefRecord
    columns: list[ColumnRecord]
    row_count: int
    created_at: datetime


def dataset_id_for(tenant: str, name: str) -> str:
    """Dataset ids are stable per tenant and name, so re-uploads add versions to one dataset."""
    return "ds_" + hashlib.sha256(f"{tenant}/{name}".encode()).hexdigest()[:16]


def version_id_for(tenant: str, name: str, raw: bytes) -> str:
    """Content address of an upload: the same bytes under the same dataset give the same id."""
    h = hashlib.sha256()
    h.update(f"{tenant}/{name}\0".encode())
    h.update(raw)
    return "dv_" + h.hexdigest()[:24]


def version_key(tenant: str, version_id: str) -> str:
    return f"{tenant}.v.{version_id}"


def validate_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"{name!r} is not a valid dataset name: use 1-64 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit",
            field="header.dataset_name",
        )


def parse_csv(raw: bytes, max_rows: int, max_columns: int) -> pl.DataFrame:
    """Parses CSV bytes with polars; every failure is an :class:`InvalidArgument` saying why."""
    if not raw.strip():
        raise InvalidArgument("the file is empty", field="chunk")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"the file is not UTF-8 text (invalid byte at offset {exc.start})", field="chunk"
        ) from exc
    if "\x00" in text:
        raise InvalidArgument("the file holds NUL bytes: it is binary, not CSV", field="chunk")
    # polars renames repeated header names silently; a repeated name is an error here.
    header = next(csv.reader(io.StringIO(text)), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InvalidArgument(f"duplicate column names: {', '.join(repeated)}", field="chunk")
    try:
        df = pl.read_csv(io.BytesIO(raw), infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise InvalidArgument(f"the CSV could not be parsed: {exc}".splitlines()[0], field="chunk") from exc
    if df.width > max_columns:
        raise InvalidArgument(f"{df.width} columns; at most {max_columns} are allowed", field="chunk")
    if df.height == 0:
        raise InvalidArgument("the CSV has a header but no data rows", field="chunk")
    if df.height > max_rows:
        raise InvalidArgument(f"{df.height} rows; at most {max_rows} are allowed", field="chunk")
    for name in df.columns:
        if not name.strip() or "/" in name or name in (".", ".."):
            raise InvalidArgument(f"column name {name!r} is empty or path-like", field="chunk")
    return df


def columns_of(df: pl.DataFrame) -> list[ColumnRecord]:
    return [
        ColumnRecord(name=name, dtype=str(dtype), nullable=bool(df[name].null_count() > 0))
        for name, dtype in df.schema.items()
    ]


class Datasets:
    """Ingest and look-up of dataset versions for all tenants."""

    def __init__(
        self, versions: RecordStore[VersionRecord], objects: ObjectStore, max_rows: int, max_columns: int
    ) -> None:
        self._versions = versions
        self._objects = objects
        self._max_rows = max_rows
        self._max_columns = max_columns

    async def ingest(self, tenant: str, name: str, fmt: str, raw: bytes) -> tuple[VersionRecord, bool]:
        """Stores an upload as a Parquet version. Returns the version and whether it already existed."""
        validate_name(name)
        if fmt not in SUPPORTED_FORMATS:
            raise InvalidArgument(
                f"format {fmt!r} is not supported; use one of {SUPPORTED_FORMATS}", field="header.format"
            )
        version_id = version_id_for(tenant, name, raw)
        existing = await self._versions.get(version_key(tenant, version_id))
        if existing is not None:
            return existing.value, True
        df = parse_csv(raw, self._max_rows, self._max_columns)
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        ref = await self._objects.put("datasets", f"{tenant}/{version_id}.parquet", buf.getvalue())
        record = VersionRecord(
            tenant=tenant,
            dataset_id=dataset_id_for(tenant, name),
            version_id=version_id,
            dataset_name=name,
            object=ref,
            columns=columns_of(df),
            row_count=df.height,
            created_at=now(),
        )
        try:
            await self._versions.create(version_key(tenant, version_id), record)
        except Conflict:
            # A concurrent upload of the same bytes won; both callers get the one version.
            found = await self._versions.require(version_key(tenant, version_id), f"dataset version {version_id}")
            return found.value, True
        return record, False

    async def get(self, tenant: str, version_id: str) -> VersionRecord:
        found = await self._versions.require(version_key(tenant, version_id), f"dataset version {version_id!r}")
        return found.value

    async def list(self, tenant: str, name: str = "") -> list[VersionRecord]:
        records = await self._versions.values(f"{tenant}.v.*")
        return sorted((r for r in records if not name or r.dataset_name == name), key=lambda r: r.created_at)


__all__ = ["ColumnRecord", "Datasets", "VersionRecord", "sha256_digest"]
