"""``python -m lepton_evaluator``: runs the evaluator service."""

from __future__ import annotations

from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2

from lepton_core.bus import EVENTS_STREAM, RecordStore
from lepton_core.service import Register, Runtime, grpc_service, run_service
from lepton_evaluator.api import (
    ComparisonHandler,
    EvaluationServicer,
    TrainingCompletedHandler,
    VersionDeletedHandler,
)
from lepton_evaluator.core import EvaluationRecord, Evaluations
from lepton_evaluator.permissions import RULES
from lepton_evaluator.settings import EvaluatorSettings
from lepton_ml.signing import trusted_from_setting


def main() -> None:
    settings = EvaluatorSettings()
    # Read at start-up: without the artifact public key no artifact could be verified, so none is loaded.
    trusted = trusted_from_setting(settings.artifact_public_key_file, "LEPTON_EVALUATOR_ARTIFACT_PUBLIC_KEY_FILE")

    async def setup(rt: Runtime) -> Register:
        evaluations = Evaluations(await RecordStore.open(rt.js, "evaluations", EvaluationRecord), rt.objects, trusted)
        rt.consume(
            EVENTS_STREAM,
            "evaluator",
            {
                events_pb2.TrainingCompleted: TrainingCompletedHandler(rt, evaluations),
                events_pb2.ModelVersionDeleted: VersionDeletedHandler(evaluations),
            },
        )
        rt.consume(
            EVENTS_STREAM,
            "evaluator-compare",
            {events_pb2.ModelVersionCreated: ComparisonHandler(rt, rt.objects, trusted)},
        )
        servicer = EvaluationServicer(
            evaluations, settings.peer(settings.registry_url), settings.peer(settings.data_url)
        )

        return grpc_service(
            evaluator_pb2_grpc.add_EvaluationServiceServicer_to_server,
            servicer,
            evaluator_pb2.DESCRIPTOR.services_by_name["EvaluationService"],
        )

    run_service("evaluator", settings, setup, RULES)


if __name__ == "__main__":
    main()
