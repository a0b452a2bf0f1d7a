"""gRPC and event adapters of the data service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core.errors import InvalidArgument
from lepton_core.rpc import current_tenant
from lepton_core.service import Runtime
from lepton_core.wire import lineage, ref_to_pb, ts
from lepton_data.core import Datasets, VersionRecord


def version_to_pb(v: VersionRecord, deduplicated: bool = False) -> data_pb2.DatasetVersion:
    return data_pb2.DatasetVersion(
        dataset_id=v.dataset_id,
        version_id=v.version_id,
        dataset_name=v.dataset_name,
        object=ref_to_pb(v.object),
        columns=[common_pb2.Column(name=c.name, dtype=c.dtype, nullable=c.nullable) for c in v.columns],
        row_count=v.row_count,
        created_at=ts(v.created_at),
        deduplicated=deduplicated,
    )


class DataServicer(data_pb2_grpc.DataServiceServicer):
    def __init__(self, runtime: Runtime, datasets: Datasets, max_upload_bytes: int) -> None:
        self._rt = runtime
        self._datasets = datasets
        self._max_upload = max_upload_bytes

    async def UploadDataset(
        self, request_iterator: AsyncIterator[data_pb2.UploadDatasetRequest], context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        tenant = current_tenant()
        header: data_pb2.UploadHeader | None = None
        parts: list[bytes] = []
        size = 0
        async for req in request_iterator:
            if header is None:
                if req.WhichOneof("part") != "header":
                    raise InvalidArgument("the first message must be the header", field="header")
                header = req.header
                continue
            if req.WhichOneof("part") != "chunk":
                raise InvalidArgument("only chunks may follow the header", field="chunk")
            size += len(req.chunk)
            if size > self._max_upload:
                raise InvalidArgument(f"upload exceeds the limit of {self._max_upload} bytes", field="chunk")
            parts.append(req.chunk)
        if header is None:
            raise InvalidArgument("no header was sent", field="header")
        version, existed = await self._datasets.ingest(
            tenant, header.dataset_name, header.format or "csv", b"".join(parts)
        )
        if not existed:
            await self._rt.publish(
                events_pb2.DatasetVersionCreated(
                    tenant=tenant,
                    lineage=lineage(dataset_id=version.dataset_id, dataset_version_id=version.version_id),
                    dataset_name=version.dataset_name,
                    object=ref_to_pb(version.object),
                    columns=version_to_pb(version).columns,
                    row_count=version.row_count,
                ),
                tenant=tenant,
                event_id=f"dataset.version.created:{tenant}:{version.version_id}",
                ce_subject=version.version_id,
            )
        return version_to_pb(version, deduplicated=existed)

    async def GetDatasetVersion(
        self, request: data_pb2.GetDatasetVersionRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.DatasetVersion:
        if not request.version_id:
            raise InvalidArgument("a version id is required", field="version_id")
        return version_to_pb(await self._datasets.get(current_tenant(), request.version_id))

    async def ListDatasetVersions(
        self, request: data_pb2.ListDatasetVersionsRequest, context: grpc.aio.ServicerContext
    ) -> data_pb2.ListDatasetVersionsResponse:
        versions = await self._datasets.list(current_tenant(), request.dataset_name)
        return data_pb2.ListDatasetVersionsResponse(versions=[version_to_pb(v) for v in versions])
