"""The data service as a process on real NATS: limits, tenants, and its event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.events.v1 import events_pb2
from nats.aio.client import Client as NATS

from lepton_core import events
from lepton_core.bus import EVENTS_STREAM
from lepton_core.rpc import client_channel
from lepton_platform.testing import StartService

CSV = b"x,y\n1,2.5\n2,3.5\n3,4.5\n"


async def _upload(address: str, key: str, name: str, raw: bytes) -> data_pb2.DatasetVersion:
    async def parts() -> AsyncIterator[data_pb2.UploadDatasetRequest]:
        yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="csv"))
        yield data_pb2.UploadDatasetRequest(chunk=raw)

    async with client_channel(address, key) as ch:
        return await data_pb2_grpc.DataServiceStub(ch).UploadDataset(parts(), timeout=30)


async def test_upload_emits_one_event_and_keeps_tenants_apart(service: StartService, nc: NATS) -> None:
    a, b = "ta" + uuid.uuid4().hex[:8], "tb" + uuid.uuid4().hex[:8]
    address = service("data", {"key-a": a, "key-b": b})
    version = await _upload(address, "key-a", "small", CSV)
    assert version.row_count == 3 and [c.name for c in version.columns] == ["x", "y"]
    assert [c.dtype for c in version.columns] == ["Int64", "Float64"]
    await _upload(address, "key-a", "small", CSV)  # same bytes: no second event

    sub = await nc.jetstream().subscribe(
        f"lepton.evt.{a}.dataset.version.created", stream=EVENTS_STREAM, ordered_consumer=True
    )
    msg = await sub.next_msg(timeout=5)
    event = events.decode(msg)
    assert isinstance(event.data, events_pb2.DatasetVersionCreated)
    assert event.data.lineage.dataset_version_id == version.version_id
    with pytest.raises(TimeoutError):
        await sub.next_msg(timeout=0.5)
    await sub.unsubscribe()

    async with client_channel(address, "key-b") as ch:
        stub = data_pb2_grpc.DataServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetDatasetVersion(data_pb2.GetDatasetVersionRequest(version_id=version.version_id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await stub.ListDatasetVersions(data_pb2.ListDatasetVersionsRequest())).versions == []


async def test_size_and_row_limits_are_enforced_with_a_clear_error(service: StartService) -> None:
    t = "t" + uuid.uuid4().hex[:8]
    address = service("data", {"k": t}, max_upload_bytes="40", max_rows="2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _upload(address, "k", "rows", CSV)  # 23 bytes, 3 rows
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "chunk: 3 rows; at most 2 are allowed"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _upload(address, "k", "bytes", CSV + CSV)  # 46 bytes
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "chunk: upload exceeds the limit of 40 bytes"
