"""``python -m lepton_data``: runs the data service."""

from __future__ import annotations

from lepton.data.v1 import data_pb2, data_pb2_grpc

from lepton_core.bus import RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_data.api import DataServicer
from lepton_data.core import DatasetRecord, Datasets, VersionRecord
from lepton_data.ingest import Limits
from lepton_data.permissions import RULES
from lepton_data.settings import DataSettings


def main() -> None:
    settings = DataSettings()

    async def setup(rt: Runtime) -> Register:
        datasets = Datasets(
            await RecordStore.open(rt.js, "datasets", VersionRecord),
            await RecordStore.open(rt.js, "datasets", DatasetRecord),
            rt.objects,
            Limits(max_rows=settings.max_rows, max_columns=settings.max_columns),
            rt.plans,
        )
        servicer = DataServicer(rt, datasets, settings.max_upload_bytes, settings.spool_dir)

        return grpc_service(
            data_pb2_grpc.add_DataServiceServicer_to_server,
            servicer,
            data_pb2.DESCRIPTOR.services_by_name["DataService"],
        )

    run_service("data", settings, setup, RULES)


if __name__ == "__main__":
    main()
