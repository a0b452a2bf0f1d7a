"""gRPC and event adapters of the data service."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, ref_to_pb, ts
from lepton_data import ingest
from lepton_data.core import DatasetRecord, Datasets, Stored, VersionRecord, arrow_batches, validate_name
from lepton_data.ingest import CsvOptions
from lepton_data.splits import SplitSpec
from lepton_ml.profiling import DatasetProfile


def version_to_pb(v: VersionRecord, deduplicated: bool = False) -> data_pb2.DatasetVersion:
    return data_pb2.DatasetVersion(
        dataset_id=v.dataset_id,
        version_id=v.version_id,
        dataset_name=v.dataset_name,
        object=ref_to_pb(v.object),
        columns=[
            common_pb2.Column(name=c.name, dtype=c.dtype, nullable=c.nullable, categorical=c.categorical)
            for c in v.columns
        ],
        row_count=v.row_count,
        created_at=ts(v.created_at),
        deduplicated=deduplicated,
        origin=v.origin,
        parent_version_id=v.parent_version_id,
        recipe_json=v.recipe_json,
        recipe_digest=v.recipe_digest,
        fitted_json=v.fitted_json,
        format=v.format,
    )


def dataset_to_pb(d: DatasetRecord) -> data_pb2.Dataset:
    return data_pb2.Dataset(
        dataset_id=d.dataset_id,
        name=d.name,
        version_count=len(d.version_ids),
        latest_version_id=d.version_ids[-1] if d.version_ids else "",
        rules_json=d.rules_json,
        created_at=ts(d.created_at),
        updated_at=ts(d.updated_at),
    )


def profile_to_pb(version_id: str, p: DatasetProfile) -> data_pb2.DatasetProfile:
    columns = []
    for c in p.columns:
        col = data_pb2.ColumnProfile(
            name=c.name,
            dtype=c.dtype,
            count=c.count,
            nulls=c.nulls,
            distinct=c.distinct,
            categorical=c.categorical,
            quantiles=c.quantiles or {},
            top_values=[data_pb2.TopValue(value=str(t.value), count=t.count) for t in (c.top_values or [])],
        )
        for attr in ("min", "max", "mean", "std"):
            value = getattr(c, attr)
            if value is not None:
                setattr(col, attr, float(value))
        if c.histogram is not None:
            col.histogram.edges.extend(c.histogram.edges)
            col.histogram.counts.extend(c.histogram.counts)
        columns.append(col)
    return data_pb2.DatasetProfile(version_id=version_id, rows=p.rows, columns=columns)


def spec_from_pb(spec: data_pb2.SplitSpec) -> SplitSpec:
    return SplitSpec.of(spec.seed, spec.train, spec.validation, spec.test, spec.stratify_column)


def csv_options(header: data_pb2.UploadHeader) -> CsvOptions:
    c = header.csv
    return CsvOptions(
        delimiter=c.delimiter,
        has_header=c.has_header if c.HasField("has_header") else True,
        encoding=c.encoding or "utf-8",
        quote_char=c.quote_char or '"',
    )


#: Most rows one ``ReadDataset`` batch may hold.
MAX_BATCH_ROWS = 1_000_000
#: What ``UploadHeader.expected_digest`` looks like (the SDK sends it so).
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def check_header(header: data_pb2.UploadHeader, max_upload: int) -> None:
    """Refuses a bad upload header as soon as it arrives, before a byte of the file is kept."""
    validate_name(header.dataset_name)
    ingest.check_options(header.format or "csv", csv_options(header))
    if header.expected_size < 0:
        raise InvalidArgument(f"must be 0 (unknown) or more, got {header.expected_size}", field="header.expected_size")
    if header.expected_size > max_upload:
        raise InvalidArgument(
            f"{header.expected_size} bytes announced; uploads are limited to {max_upload} bytes",
            field="header.expected_size",
        )
    if header.expected_digest and not DIGEST_RE.fullmatch(header.expected_digest):
        raise InvalidArgument(
            f"expected 'sha256:' and 64 lower-case hex digits; got {shown(header.expected_digest)}",
            field="header.expected_digest",
        )


#: How long an upload without ``expected_size`` waits, once its stream has ended, for a
#: cancellation that ended it (see :func:`_no_cancellation`).
CANCEL_GRACE_S = 0.05


async def _no_cancellation(context: grpc.aio.ServicerContext) -> None:
    """Returns only if the stream that just ended was not cancelled by the client.

    grpc's asyncio server ends the request iterator the same way for a client that finished
    and for one that cancelled (a client whose request iterator raised, say); the
    cancellation reaches the handler a moment later, as a ``CancelledError`` at its next
    await. A short wait lets it arrive before anything is stored. Clients that send
    ``expected_size`` (the SDK always does) are checked by size instead, with no wait.
    """
    await asyncio.sleep(CANCEL_GRACE_S)  # a cancellation raises CancelledError here
    if context.done():
        raise asyncio.CancelledError("the client cancelled the upload")


log = logging.getLogger(__name__)

#: The spool folder of one upload: ``lepton-upload-<pid>-<random>``, so a data process that starts can
#: tell the leftovers of one that died (killed mid-upload) from those of one still running on the host.
SPOOL_PREFIX = "lepton-upload-"


def clear_spool(spool: Path) -> list[Path]:
    """Removes the upload folders in ``spool`` whose data process is gone; returns them."""
    removed = []
    for folder in spool.glob(f"{SPOOL_PREFIX}*"):
        pid = folder.name[len(SPOOL_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


class DataServicer(data_pb2_grpc.DataServiceServicer):
    def __init__(self, runtime: Runtime, datasets: Datasets, max_upload_bytes: int, spool_dir: str | None) -> None:
        self._rt = runtime
        self._datasets = datasets
        self._max_upload = max_upload_bytes
        self._spool_dir = spool_dir
        for left in clear_spool(Path(spool_dir or tempfile.gettempdir())):
            log.warning("removed %s: an upload a data process that died was receiving", left)

    async def _announce(self, tenant: str, stored: Stored) -> None:
        """Events for a stored version: dataset.created, version.created, validation.failed."""
        if stored.deduplicated:
            return
        v = stored.version
        lin = lineage(dataset_id=v.dataset_id, dataset_version_id=v.version_id)
        if stored.dataset_created:
            await self._rt.publish(
                events_pb2.DatasetCreated(tenant=tenant, lineage=lin, dataset_name=v.dataset_name),
                tenant=tenant,
                event_id=f"dataset.created:{tenant}:{v.dataset_id}:{v.version_id}",
                ce_subject=v.dataset_id,
            )
        await self._rt.publish(
            events_pb2.DatasetVersionCreated(
                tenant=tenant,
                lineage=lin,
                dataset_name=v.dataset_name,
                object=ref_to_pb(v.object),
                columns=version_to_pb(v).columns,
                row_count=v.row_count,
                origin=v.origin,
                parent_version_id=v.parent_version_id,
                recipe_digest=v.recipe_digest,
            ),
            tenant=tenant,
            event_id=f"dataset.version.created:{tenant}:{v.version_id}",
            ce_subject=v.version_id,
        )
        if stored.violations:
            await self._rt.publish(
                events_pb2.DatasetValidationFailed(
                    tenant=tenant,
                    lineage=lin,
                    violations=len(stored.violations),
                    descriptions=[x.description for x in stored.violations],
                ),
                tenant=tenant,
                event_id=f"dataset.validation.failed:{tenant}:{v.version_id}",
                ce_subject=v.version_id,
            )

    async def UploadDataset(
        self, request_iterator: AsyncIterator[data_pb2.UploadDatasetRequest], context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        tenant = current_tenant()
        with tempfile.TemporaryDirectory(prefix=f"{SPOOL_PREFIX}{os.getpid()}-", dir=self._spool_dir) as tmp:
            path = Path(tmp) / "upload"
            header, size, digest = await self._spool(tenant, request_iterator, path)
            if not header.expected_size:
                await _no_cancellation(context)
            if header.expected_size and size != header.expected_size:
                raise InvalidArgument(
                    f"received {size} bytes but the header announced {header.expected_size}: the upload was cut off",
                    field="header.expected_size",
                )
            if header.expected_digest and header.expected_digest != digest:
                raise InvalidArgument(
                    f"the bytes hash to {digest}, not {header.expected_digest}", field="header.expected_digest"
                )
            stored = await self._datasets.ingest_file(
                tenant, header.dataset_name, header.format or "csv", csv_options(header), path, digest
            )
        await self._announce(tenant, stored)
        return version_to_pb(stored.version, deduplicated=stored.deduplicated)

    async def _spool(
        self, tenant: str, request_iterator: AsyncIterator[data_pb2.UploadDatasetRequest], path: Path
    ) -> tuple[data_pb2.UploadHeader, int, str]:
        """Writes the chunks to a local file, hashing as they come; nothing is kept on failure.

        An upload the tenant's plan has no room for (a dataset too many, no bytes left) is refused
        on its header, before a chunk is read; one whose version turns out too large is refused
        before it is stored (:meth:`~lepton_data.core.Datasets.ensure_room`).
        """
        header: data_pb2.UploadHeader | None = None
        size = 0
        hasher = hashlib.sha256()
        # Each chunk is hashed and written in a thread while the next one is received (both release the
        # GIL): the spool overlaps the transfer instead of following each chunk. One chunk at a time, in
        # order, so the file and the hash see the bytes as sent.
        spooling: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()

        def spool(chunk: bytes) -> None:
            hasher.update(chunk)
            out.write(chunk)

        with path.open("wb") as out:
            try:
                async for req in request_iterator:
                    if header is None:
                        if req.WhichOneof("part") != "header":
                            raise InvalidArgument("the first message must be the header", field="header")
                        header = req.header
                        check_header(header, self._max_upload)
                        await self._datasets.ensure_room(tenant, header.dataset_name)
                        continue
                    if req.WhichOneof("part") != "chunk":
                        raise InvalidArgument("only chunks may follow the header", field="chunk")
                    size += len(req.chunk)
                    if size > self._max_upload:
                        raise InvalidArgument(f"upload exceeds the limit of {self._max_upload} bytes", field="chunk")
                    if spooling is not None:
                        await spooling
                    spooling = loop.run_in_executor(None, spool, req.chunk)
            finally:
                if spooling is not None:
                    await asyncio.gather(spooling, return_exceptions=True)
            if spooling is not None:
                await spooling  # a write that failed (the disk full) fails the upload
        if header is None:
            raise InvalidArgument("no header was sent", field="header")
        return header, size, "sha256:" + hasher.hexdigest()

    async def GetDatasetVersion(
        self, request: data_pb2.GetDatasetVersionRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        return version_to_pb(await self._datasets.get(current_tenant(), request.version_id))

    async def ListDatasetVersions(
        self, request: data_pb2.ListDatasetVersionsRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ListDatasetVersionsResponse:
        versions = await self._datasets.list_versions(current_tenant(), request.dataset_name)
        return data_pb2.ListDatasetVersionsResponse(versions=[version_to_pb(v) for v in versions])

    async def GetDataset(
        self, request: data_pb2.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.Dataset:
        return dataset_to_pb(await self._datasets.dataset(current_tenant(), request.dataset))

    async def ListDatasets(
        self, request: data_pb2.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ListDatasetsResponse:
        found = await self._datasets.list_datasets(current_tenant(), request.search)
        return data_pb2.ListDatasetsResponse(datasets=[dataset_to_pb(d) for d in found])

    async def DeleteDataset(
        self, request: data_pb2.DeleteDatasetRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DeleteDatasetResponse:
        tenant = current_tenant()
        record, versions, objects = await self._datasets.delete(tenant, request.dataset)
        await self._rt.publish(
            events_pb2.DatasetDeleted(
                tenant=tenant,
                lineage=lineage(dataset_id=record.dataset_id),
                dataset_name=record.name,
                versions_deleted=versions,
                version_ids=record.version_ids,
            ),
            tenant=tenant,
            event_id=f"dataset.deleted:{tenant}:{record.dataset_id}:{record.updated_at.isoformat()}",
            ce_subject=record.dataset_id,
        )
        return data_pb2.DeleteDatasetResponse(versions_deleted=versions, objects_deleted=objects)

    async def UpdateSchema(
        self, request: data_pb2.UpdateSchemaRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        tenant = current_tenant()
        stored = await self._datasets.update_schema(
            tenant, request.version_id, [(c.name, c.dtype) for c in request.changes]
        )
        await self._announce(tenant, stored)
        return version_to_pb(stored.version, deduplicated=stored.deduplicated)

    async def SetValidationRules(
        self, request: data_pb2.SetValidationRulesRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.Dataset:
        tenant = current_tenant()
        record = await self._datasets.set_rules(tenant, request.dataset, request.rules_json or "[]")
        await self._rt.publish(
            events_pb2.DatasetRulesUpdated(
                tenant=tenant, lineage=lineage(dataset_id=record.dataset_id), rules=len(json.loads(record.rules_json))
            ),
            tenant=tenant,
            event_id=f"dataset.rules.updated:{tenant}:{record.dataset_id}:{record.updated_at.isoformat()}",
            ce_subject=record.dataset_id,
        )
        return dataset_to_pb(record)

    async def ValidateVersion(
        self, request: data_pb2.ValidateVersionRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ValidationReport:
        checked, violations = await self._datasets.validate(current_tenant(), request.version_id, request.rules_json)
        return data_pb2.ValidationReport(
            version_id=request.version_id,
            valid=not violations,
            rules_checked=checked,
            violations=[
                data_pb2.Violation(
                    rule_index=v.rule_index,
                    kind=v.kind,
                    column=v.column,
                    description=v.description,
                    count=v.count,
                    examples_json=[json.dumps(e, default=str) for e in v.examples],
                )
                for v in violations
            ],
        )

    async def ApplyRecipe(
        self, request: data_pb2.ApplyRecipeRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        tenant = current_tenant()
        stored = await self._datasets.apply_recipe(tenant, request.version_id, request.recipe_json)
        await self._announce(tenant, stored)
        return version_to_pb(stored.version, deduplicated=stored.deduplicated)

    async def GetProfile(
        self, request: data_pb2.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetProfile:
        return profile_to_pb(request.version_id, await self._datasets.profile(current_tenant(), request.version_id))

    async def SplitVersion(
        self, request: data_pb2.SplitVersionRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.SplitVersionResponse:
        train, val, test = await self._datasets.split_counts(
            current_tenant(), request.version_id, spec_from_pb(request.spec)
        )
        return data_pb2.SplitVersionResponse(train_rows=train, validation_rows=val, test_rows=test)

    async def ReadDataset(
        self, request: data_pb2.ReadDatasetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[data_pb2.RecordBatchChunk]:
        if not 0 <= request.batch_rows <= MAX_BATCH_ROWS:
            raise InvalidArgument(
                f"must be between 1 and {MAX_BATCH_ROWS} (0: the default), got {request.batch_rows}", field="batch_rows"
            )
        df = await self._datasets.read(
            current_tenant(), request.version_id, list(request.columns), request.split, spec_from_pb(request.spec)
        )
        for data, rows in arrow_batches(df, request.batch_rows or 65_536):
            yield data_pb2.RecordBatchChunk(arrow_ipc=data, rows=rows)
