"""Datasets and their immutable versions, independent of gRPC and protobuf.

KV bucket ``datasets`` holds ``<tenant>.d.<name>`` (the dataset, its version list and
rules) and ``<tenant>.v.<version_id>`` (one version). Object store ``datasets`` holds
each version's Parquet file and profile. Version ids are content addresses, so the
same input gives the same version and no second copy. Deleting a dataset erases all of
it (:meth:`Datasets.delete`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ValidationError

from lepton_core.bus import ObjectRefRecord, ObjectStore, RecordStore, store_full
from lepton_core.errors import Conflict, InvalidArgument, NotFound
from lepton_core.names import NAME_PATTERN, check_id, check_name, is_id, is_name, shown
from lepton_core.quotas import PlanBook, amount, check_room
from lepton_core.validation import invalid_argument_from
from lepton_core.wire import now
from lepton_data import ingest, validation
from lepton_data.ingest import CsvOptions, Limits
from lepton_data.splits import SplitSpec, assign_splits, split_index
from lepton_ml import recipes
from lepton_ml.profiling import DatasetProfile, profile

BUCKET = "datasets"
CAST_TYPES = ("int", "float", "str", "bool", "category")
#: Most column changes one ``UpdateSchema`` may carry.
MAX_SCHEMA_CHANGES = 1000
#: Longest column name a request may name (a column's name in a file has no such limit,
#: but a request naming a longer one can only fail).
MAX_COLUMN_NAME = 1024
#: Longest ``ListDatasets`` search text: a longer one cannot be part of a name.
MAX_SEARCH = 64


class ColumnRecord(BaseModel):
    name: str
    dtype: str
    nullable: bool
    categorical: bool = False


class VersionRecord(BaseModel):
    """One immutable dataset version."""

    tenant: str
    dataset_id: str
    version_id: str
    dataset_name: str
    object: ObjectRefRecord
    profile: ObjectRefRecord | None = None
    columns: list[ColumnRecord]
    row_count: int
    created_at: datetime
    origin: str = "upload"
    format: str = "csv"
    parent_version_id: str = ""
    recipe_json: str = ""
    recipe_digest: str = ""
    fitted_json: str = ""


class DatasetRecord(BaseModel):
    """A named dataset: its versions in order, and its validation rules."""

    tenant: str
    dataset_id: str
    name: str
    version_ids: list[str]
    rules_json: str = "[]"
    created_at: datetime
    updated_at: datetime
    deleted: bool = False


@dataclass
class Stored:
    """The outcome of storing a version, with what the caller should announce."""

    version: VersionRecord
    deduplicated: bool
    dataset_created: bool = False
    violations: list[validation.Violation] = field(default_factory=list)


def dataset_id_for(tenant: str, name: str) -> str:
    """Stable per tenant and name, so re-uploads add versions to one dataset."""
    return "ds_" + hashlib.sha256(f"{tenant}/{name}".encode()).hexdigest()[:16]


def content_id(*parts: str) -> str:
    return "dv_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def validate_name(name: str, field: str = "header.dataset_name") -> str:
    """``name`` if it is a dataset name (:mod:`lepton_core.names`), else InvalidArgument naming ``field``."""
    return check_name(name, field, what="a dataset name")


def check_version_id(version_id: str, field: str = "version_id") -> str:
    """``version_id`` if it is a dataset version id (``dv_…``), else InvalidArgument naming ``field``."""
    if not version_id:
        raise InvalidArgument("a version id is required", field=field)
    return check_id(version_id, field, "dv")


def check_dataset_ref(ref: str, field: str = "dataset") -> str:
    """``ref`` if it is a dataset name or a ``ds_…`` id, else InvalidArgument naming ``field``."""
    if not ref:
        raise InvalidArgument("a dataset name or id is required", field=field)
    if not (is_id(ref, "ds") or is_name(ref)):
        raise InvalidArgument(
            f"expected a dataset name ({NAME_PATTERN}) or a dataset id like 'ds_…'; got {shown(ref)}", field=field
        )
    return ref


def check_column_names(columns: list[str], field: str, limit: int) -> None:
    """Refuses more than ``limit`` column names, or one longer than :data:`MAX_COLUMN_NAME`."""
    if len(columns) > limit:
        raise InvalidArgument(f"at most {limit} columns, got {len(columns)}", field=field)
    for index, column in enumerate(columns):
        if len(column) > MAX_COLUMN_NAME:
            raise InvalidArgument(
                f"a column name is at most {MAX_COLUMN_NAME} characters; got {shown(column)}", field=f"{field}[{index}]"
            )


def columns_of(df: pl.DataFrame, prof: DatasetProfile) -> list[ColumnRecord]:
    categorical = {c.name: c.categorical for c in prof.columns}
    return [
        ColumnRecord(
            name=name,
            dtype=str(dtype),
            nullable=bool(df[name].null_count() > 0),
            categorical=categorical.get(name, False),
        )
        for name, dtype in df.schema.items()
    ]


def parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    return buf.getvalue()


def arrow_batches(df: pl.DataFrame, batch_rows: int) -> Iterator[tuple[bytes, int]]:
    """Each slice of ``df`` as a complete Arrow IPC stream (decodable on its own)."""
    for start in range(0, max(df.height, 1), batch_rows):
        table = df.slice(start, batch_rows).to_arrow()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        yield sink.getvalue().to_pybytes(), min(batch_rows, df.height - start)


class Datasets:
    """Every dataset operation, for all tenants."""

    def __init__(
        self,
        store: RecordStore[VersionRecord],
        datasets: RecordStore[DatasetRecord],
        objects: ObjectStore,
        limits: Limits,
        plans: PlanBook | None = None,
    ) -> None:
        self._versions = store
        self._datasets = datasets
        self._objects = objects
        self._limits = limits
        self._plans = plans or PlanBook()
        #: One store at a time per tenant whose plan limits what it stores, so two uploads cannot
        #: both fit in the room one of them leaves (within this process).
        self._room: dict[str, asyncio.Lock] = {}

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, tenant: str, version_id: str) -> VersionRecord:
        check_version_id(version_id)
        found = await self._versions.get(f"{tenant}.v.{version_id}")
        if found is None:
            raise NotFound(f"dataset version {version_id!r} does not exist", field="version_id")
        return found.value

    async def dataset(self, tenant: str, ref: str, field: str = "dataset") -> DatasetRecord:
        """A live dataset by name or id."""
        check_dataset_ref(ref, field)
        if is_id(ref, "ds"):
            for record in await self._datasets.values(f"{tenant}.d.*"):
                if record.dataset_id == ref and not record.deleted:
                    return record
        else:
            found = await self._datasets.get(f"{tenant}.d.{ref}")
            if found is not None and not found.value.deleted:
                return found.value
        raise NotFound(f"dataset {ref!r} does not exist", field=field)

    async def list_datasets(self, tenant: str, search: str = "") -> list[DatasetRecord]:
        if len(search) > MAX_SEARCH:
            raise InvalidArgument(
                f"a name has at most {MAX_SEARCH} characters, so a longer search matches nothing; got {shown(search)}",
                field="search",
            )
        records = await self._datasets.values(f"{tenant}.d.*")
        return [r for r in records if not r.deleted and search in r.name]

    async def list_versions(self, tenant: str, name: str = "") -> list[VersionRecord]:
        if name:
            record = await self.dataset(tenant, name, field="dataset_name")
            return [await self.get(tenant, v) for v in record.version_ids]
        return sorted(await self._versions.values(f"{tenant}.v.*"), key=lambda r: r.created_at)

    async def frame(self, version: VersionRecord) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(await self._objects.get(version.object)))

    async def profile(self, tenant: str, version_id: str) -> DatasetProfile:
        version = await self.get(tenant, version_id)
        if version.profile is None:
            raise NotFound(f"version {version_id} has no profile", field="version_id")
        return DatasetProfile.model_validate_json(await self._objects.get(version.profile))

    # -- the tenant's plan ------------------------------------------------------------------------

    async def stored_bytes(self, tenant: str) -> int:
        """Bytes of the tenant's stored versions (their Parquet files): what ``stored_bytes`` limits."""
        return sum(v.object.size for v in await self._versions.values(f"{tenant}.v.*"))

    async def _is_live(self, tenant: str, name: str) -> bool:
        found = await self._datasets.get(f"{tenant}.d.{name}")
        return found is not None and not found.value.deleted

    async def ensure_room(self, tenant: str, name: str, adding: int = 0) -> None:
        """Refuses (RESOURCE_EXHAUSTED) a version of ``name`` that the tenant's plan has no room for.

        A new dataset past ``datasets``; with ``adding`` bytes, a total past ``stored_bytes``;
        without, a tenant already at ``stored_bytes`` (an upload is refused on its header, before
        a byte of it is kept).
        """
        plan = self._plans.plan_of(tenant)
        if plan.limits.datasets and not await self._is_live(tenant, name):
            count = len(await self.list_datasets(tenant))
            check_room(plan, "datasets", count, what=f"dataset {name!r} would be one more")
        if plan.limits.stored_bytes:
            used = await self.stored_bytes(tenant)
            what = f"this version needs {amount('stored_bytes', adding)} more" if adding else "no room is left"
            check_room(plan, "stored_bytes", used, adding=max(adding, 1), what=what)

    def _limited(self, tenant: str) -> bool:
        limits = self._plans.plan_of(tenant).limits
        return bool(limits.datasets or limits.stored_bytes)

    # -- writing ---------------------------------------------------------------------------------

    async def ingest_file(
        self, tenant: str, name: str, fmt: str, opts: CsvOptions, path: Path, raw_digest: str
    ) -> Stored:
        """Stores an uploaded file (already on local disk) as a version."""
        validate_name(name)
        ingest.check_options(fmt, opts)
        version_id = content_id(tenant, name, fmt, opts.canonical(), raw_digest)
        existing = await self._versions.get(f"{tenant}.v.{version_id}")
        if existing is not None:
            return Stored(existing.value, deduplicated=True)
        df = await asyncio.to_thread(ingest.read_file, path, fmt, opts)
        ingest.check_frame(df, self._limits)
        return await self._store(tenant, name, version_id, df, origin="upload", fmt=fmt)

    async def update_schema(self, tenant: str, version_id: str, changes: list[tuple[str, str]]) -> Stored:
        """Casts columns into a new version, with the recipe ``cast`` step's strict rules."""
        check_version_id(version_id)
        if not changes:
            raise InvalidArgument("no column changes given", field="changes")
        if len(changes) > MAX_SCHEMA_CHANGES:
            raise InvalidArgument(f"at most {MAX_SCHEMA_CHANGES} column changes, got {len(changes)}", field="changes")
        for index, (column, _) in enumerate(changes):
            if len(column) > MAX_COLUMN_NAME:
                raise InvalidArgument(
                    f"a column name is at most {MAX_COLUMN_NAME} characters; got {shown(column)}",
                    field=f"changes[{index}].name",
                )
        parent = await self.get(tenant, version_id)
        steps: list[recipes.Step] = []
        for index, (column, dtype) in enumerate(changes):
            try:
                steps.append(recipes.Cast(column=column, dtype=dtype))
            except ValidationError as exc:
                raise invalid_argument_from(exc, f"changes[{index}]") from None
        recipe = recipes.Recipe(steps=steps)
        df = await self.frame(parent)
        try:
            new, fitted = await asyncio.to_thread(recipes.fit_transform, df, recipe)
        except InvalidArgument as exc:
            # The cast steps are the request's changes: name the change, not a recipe step.
            field = (exc.field or "changes").replace("recipe.steps[", "changes[").replace("].column", "].name")
            raise InvalidArgument(exc.message, field=field) from None
        digest = recipes.recipe_digest(recipe)
        new_id = content_id(tenant, parent.dataset_name, "schema", parent.version_id, digest)
        # Recorded as a recipe of cast steps, so a model trained on it can replay the casts.
        return await self._derived(
            tenant,
            parent,
            new_id,
            new,
            origin="schema",
            recipe_json=recipe.model_dump_json(),
            recipe_digest=digest,
            fitted_json=json.dumps(fitted),
        )

    async def apply_recipe(self, tenant: str, version_id: str, recipe_json: str) -> Stored:
        parent = await self.get(tenant, version_id)
        recipe = recipes.parse_recipe(recipe_json)
        df = await self.frame(parent)
        new, fitted = await asyncio.to_thread(recipes.fit_transform, df, recipe)
        if new.height == 0:
            raise InvalidArgument("the recipe removed every row", field="recipe_json")
        digest = recipes.recipe_digest(recipe)
        new_id = content_id(tenant, parent.dataset_name, "recipe", parent.version_id, digest)
        return await self._derived(
            tenant,
            parent,
            new_id,
            new,
            origin="recipe",
            recipe_json=recipe.model_dump_json(),
            recipe_digest=digest,
            fitted_json=json.dumps(fitted, sort_keys=True, default=str),
        )

    async def _derived(self, tenant: str, parent: VersionRecord, new_id: str, df: pl.DataFrame, **extra: Any) -> Stored:
        existing = await self._versions.get(f"{tenant}.v.{new_id}")
        if existing is not None:
            return Stored(existing.value, deduplicated=True)
        ingest.check_frame(df, self._limits)
        return await self._store(
            tenant, parent.dataset_name, new_id, df, fmt=parent.format, parent_version_id=parent.version_id, **extra
        )

    async def _store(self, tenant: str, name: str, version_id: str, df: pl.DataFrame, **extra: Any) -> Stored:
        prof = await asyncio.to_thread(profile, df)
        data = await asyncio.to_thread(parquet_bytes, df)
        if not self._limited(tenant):
            return await self._put(tenant, name, version_id, df, prof, data, **extra)
        async with self._room.setdefault(tenant, asyncio.Lock()):
            # Checked with the bytes this version takes, before any of them is stored.
            await self.ensure_room(tenant, name, len(data))
            return await self._put(tenant, name, version_id, df, prof, data, **extra)

    async def _put(
        self, tenant: str, name: str, version_id: str, df: pl.DataFrame, prof: DatasetProfile, data: bytes, **extra: Any
    ) -> Stored:
        ref = await self._objects.put(BUCKET, f"{tenant}/{version_id}.parquet", data)
        prof_ref = await self._objects.put(
            BUCKET, f"{tenant}/{version_id}.profile.json", prof.model_dump_json().encode()
        )
        record = VersionRecord(
            tenant=tenant,
            dataset_id=dataset_id_for(tenant, name),
            version_id=version_id,
            dataset_name=name,
            object=ref,
            profile=prof_ref,
            columns=columns_of(df, prof),
            row_count=df.height,
            created_at=now(),
            **extra,
        )
        try:
            await self._versions.create(f"{tenant}.v.{version_id}", record)
        except Conflict:
            # A concurrent request for the same content won; both callers get that version.
            return Stored((await self._versions.require(f"{tenant}.v.{version_id}", "version")).value, True)
        dataset, created = await self._append_version(tenant, name, version_id)
        rules = validation.parse_rules(dataset.rules_json)
        violations = validation.validate(df, rules) if rules else []
        return Stored(record, deduplicated=False, dataset_created=created, violations=violations)

    async def _update_dataset(
        self, tenant: str, name: str, change: Callable[[DatasetRecord | None], DatasetRecord]
    ) -> tuple[DatasetRecord, bool]:
        """Compare-and-set on the dataset record; returns it and whether it was created."""
        key = f"{tenant}.d.{name}"
        for _ in range(50):
            current = await self._datasets.get(key)
            live = current.value if current is not None and not current.value.deleted else None
            updated = change(live)
            try:
                if current is None:
                    await self._datasets.create(key, updated)
                else:
                    await self._datasets.update(key, updated, current.revision)
                return updated, live is None
            except Conflict:
                await asyncio.sleep(0.01)
        raise Conflict(f"dataset {name} is changing too fast; try again")

    async def _append_version(self, tenant: str, name: str, version_id: str) -> tuple[DatasetRecord, bool]:
        def change(record: DatasetRecord | None) -> DatasetRecord:
            stamp = now()
            if record is None:
                return DatasetRecord(
                    tenant=tenant,
                    dataset_id=dataset_id_for(tenant, name),
                    name=name,
                    version_ids=[version_id],
                    created_at=stamp,
                    updated_at=stamp,
                )
            return record.model_copy(update={"version_ids": [*record.version_ids, version_id], "updated_at": stamp})

        return await self._update_dataset(tenant, name, change)

    async def set_rules(self, tenant: str, ref: str, rules_json: str) -> DatasetRecord:
        dataset = await self.dataset(tenant, ref)
        rules = validation.parse_rules(rules_json)
        canonical = json.dumps([r.model_dump() for r in rules], sort_keys=True)

        def change(record: DatasetRecord | None) -> DatasetRecord:
            if record is None:
                raise NotFound(f"dataset {ref!r} does not exist", field="dataset")
            return record.model_copy(update={"rules_json": canonical, "updated_at": now()})

        updated, _ = await self._update_dataset(tenant, dataset.name, change)
        return updated

    async def validate(
        self, tenant: str, version_id: str, rules_json: str = ""
    ) -> tuple[int, list[validation.Violation]]:
        version = await self.get(tenant, version_id)
        if not rules_json:
            rules_json = (await self.dataset(tenant, version.dataset_name)).rules_json
        rules = validation.parse_rules(rules_json)
        df = await self.frame(version)
        return len(rules), await asyncio.to_thread(validation.validate, df, rules)

    async def delete(self, tenant: str, ref: str) -> tuple[DatasetRecord, int, int]:
        """Erases a dataset: every version's objects (data and profile), records and history.

        The dataset's record is marked deleted first (one compare-and-set, which fixes the list
        of versions to erase); then each version's objects and record are erased
        (:meth:`lepton_core.bus.ObjectStore.erase`, :meth:`lepton_core.store.Store.erase`:
        overwritten on disk, no tombstone, no earlier revision), and last the dataset's own
        record, unless an upload made the name live again meanwhile.

        Returns:
            The record as marked deleted, the versions erased and the objects erased.
        """
        dataset = await self.dataset(tenant, ref)

        def change(record: DatasetRecord | None) -> DatasetRecord:
            if record is None:
                raise NotFound(f"dataset {ref!r} does not exist", field="dataset")
            return record.model_copy(update={"deleted": True, "updated_at": now()})

        objects = 0
        try:
            marked, _ = await self._update_dataset(tenant, dataset.name, change)
        except Exception as exc:
            if not store_full(exc):
                raise
            # A store full to the byte refuses even the mark, and deleting is how room is made: the
            # versions' objects, nearly all of the bytes, are erased first, then the mark is written.
            objects += await self._erase_objects(tenant, dataset.version_ids)
            marked, _ = await self._update_dataset(tenant, dataset.name, change)
        objects += await self._erase_objects(tenant, marked.version_ids)
        for version_id in marked.version_ids:
            await self._versions.erase(f"{tenant}.v.{version_id}")
        key = f"{tenant}.d.{dataset.name}"
        current = await self._datasets.get(key)
        if current is None or current.value.deleted:
            await self._datasets.erase(key)
        return marked, len(marked.version_ids), objects

    async def _erase_objects(self, tenant: str, version_ids: list[str]) -> int:
        """Erases the versions' objects (data and profile); returns how many there were."""
        erased = 0
        for version_id in version_ids:
            found = await self._versions.get(f"{tenant}.v.{version_id}")
            if found is not None:
                for obj in (found.value.object, found.value.profile):
                    if obj is not None and await self._objects.erase(obj):
                        erased += 1
        return erased

    # -- splits and reading back -----------------------------------------------------------------

    async def split_counts(self, tenant: str, version_id: str, spec: SplitSpec) -> tuple[int, int, int]:
        df = await self.frame(await self.get(tenant, version_id))
        labels = assign_splits(df, spec)
        return int((labels == 0).sum()), int((labels == 1).sum()), int((labels == 2).sum())

    async def read(self, tenant: str, version_id: str, columns: list[str], split: str, spec: SplitSpec) -> pl.DataFrame:
        check_version_id(version_id)
        check_column_names(columns, "columns", self._limits.max_columns)
        if split:
            split_index(split)  # an unknown split is refused before any read
        version = await self.get(tenant, version_id)
        known = [c.name for c in version.columns]
        missing = [c for c in columns if c not in known]
        if missing:
            raise InvalidArgument(f"no column {missing[0]!r}; columns: {known}", field="columns")
        df = await self.frame(version)
        if split:
            wanted = split_index(split)
            df = df.filter(pl.Series(assign_splits(df, spec) == wanted))
        return df.select(columns) if columns else df
