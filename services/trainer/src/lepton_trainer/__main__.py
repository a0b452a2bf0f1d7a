"""``python -m lepton_trainer``: runs the trainer service (API and, by default, a worker)."""

from __future__ import annotations

from lepton.events.v1 import events_pb2
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core.bus import EVENTS_STREAM, JOBS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_ml.signing import signer_from_setting
from lepton_trainer.api import TrainingServicer, Worker
from lepton_trainer.core import JobRecord, Jobs
from lepton_trainer.permissions import RULES
from lepton_trainer.retrain import RetrainingHandler
from lepton_trainer.settings import TrainerSettings

#: One durable consumer shared by every trainer process: add processes to scale out.
WORKERS_DURABLE = "trainers"
RETRAIN_DURABLE = "trainer-retrain"


def main() -> None:
    settings = TrainerSettings()
    # Read at start-up: a trainer that cannot sign would make artifacts no loader accepts.
    signer = signer_from_setting(settings.artifact_signing_key_file, "LEPTON_TRAINER_ARTIFACT_SIGNING_KEY_FILE")

    async def setup(rt: Runtime) -> Register:
        jobs = Jobs(await RecordStore.open(rt.js, "jobs", JobRecord), rt.objects, signer, settings.device, rt.plans)
        rt.on_tenant_deleted(jobs.stop_tenant)
        data = settings.peer(settings.data_url)
        servicer = TrainingServicer(rt, jobs, data)
        # The monitor's retraining requests, submitted as SubmitTraining would (one durable for every process).
        rt.consume(
            EVENTS_STREAM,
            RETRAIN_DURABLE,
            {events_pb2.RetrainingRequested: RetrainingHandler(rt, jobs, data)},
        )
        if settings.run_worker:
            worker = Worker(rt, jobs, settings.worker_id)
            await jobs.warm()
            rt.consume(
                JOBS_STREAM,
                WORKERS_DURABLE,
                {events_pb2.TrainingRequested: worker.on_requested},
                ack_wait=settings.job_ack_wait_s,
            )

        return grpc_service(
            trainer_pb2_grpc.add_TrainingServiceServicer_to_server,
            servicer,
            trainer_pb2.DESCRIPTOR.services_by_name["TrainingService"],
        )

    run_service("trainer", settings, setup, RULES)


if __name__ == "__main__":
    main()
