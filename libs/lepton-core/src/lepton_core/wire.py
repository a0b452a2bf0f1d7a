"""Conversions between protobuf wire types and the records services keep.

Servicers and event handlers use these at the edge so service cores work on plain
records; one place per type keeps the conversions consistent.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from lepton.common.v1 import common_pb2

from lepton_core.bus import ObjectRefRecord


def ref_to_pb(ref: ObjectRefRecord | None) -> common_pb2.ObjectRef:
    if ref is None:
        return common_pb2.ObjectRef()
    return common_pb2.ObjectRef(bucket=ref.bucket, name=ref.name, digest=ref.digest, size=ref.size)


def ref_from_pb(pb: common_pb2.ObjectRef) -> ObjectRefRecord:
    return ObjectRefRecord(bucket=pb.bucket, name=pb.name, digest=pb.digest, size=pb.size)


def ts(value: datetime | None) -> Timestamp:
    out = Timestamp()
    if value is not None:
        out.FromDatetime(value.astimezone(UTC))
    return out


def now() -> datetime:
    return datetime.now(UTC)


def lineage(**ids: str | int) -> common_pb2.Lineage:
    """A Lineage message from keyword ids (``dataset_version_id=...``)."""
    return common_pb2.Lineage(**ids)  # type: ignore[arg-type]
