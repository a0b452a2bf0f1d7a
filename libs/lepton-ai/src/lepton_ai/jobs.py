"""``client.jobs``: training jobs on the trainer."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from typing import Any

from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_ai._transport import OUTAGE_S, Outage, Transport
from lepton_ai.errors import InvalidArgument, Unavailable

STATES: dict[str, trainer_pb2.JobState.ValueType] = {
    "queued": trainer_pb2.JOB_STATE_QUEUED,
    "running": trainer_pb2.JOB_STATE_RUNNING,
    "succeeded": trainer_pb2.JOB_STATE_SUCCEEDED,
    "failed": trainer_pb2.JOB_STATE_FAILED,
    "cancelled": trainer_pb2.JOB_STATE_CANCELLED,
}


def state_name(state: int) -> str:
    """A job state's name as :data:`STATES` spells it (``"running"``), or ``"unknown"``."""
    return next((k for k, v in STATES.items() if v == state), "unknown")


class Jobs:
    """Training jobs; reached as ``client.jobs``. Returns the platform's TrainingJob messages."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _stub(self) -> trainer_pb2_grpc.TrainingServiceStub:
        return trainer_pb2_grpc.TrainingServiceStub(self._t.channel("trainer"))

    def submit(
        self,
        dataset_version_id: str,
        algorithm: str,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        model_name: str = "",
        seed: int | None = None,
        search: Mapping[str, Any] | None = None,
    ) -> trainer_pb2.TrainingJob:
        """Queues a training job and returns it at once (``model.fit`` submits and then waits).

        ``params`` are the algorithm's parameters as text (``{"alpha": "0.5"}``; ``algorithms()``
        lists each algorithm's). ``search`` makes it a hyper-parameter search: ``{"kind": "grid",
        "space": {"alpha": ["0.1", "1", "10"]}}`` (or ``"random"`` with ``"trials": n``; ``"metric"``
        optional), one trial per candidate, then the best fitted on all training rows; the job's
        ``trials`` compare them. The job's progress: ``get``, ``watch``, or the ``training.*`` events.
        """
        request = trainer_pb2.SubmitTrainingRequest(
            dataset_version_id=dataset_version_id,
            algorithm=algorithm,
            target=target,
            params=dict(params or {}),
            model_name=model_name,
        )
        if seed is not None:
            request.seed = seed
        if search is not None:
            request.search.kind = str(search.get("kind", "grid"))
            for name, values in dict(search.get("space", {})).items():
                request.search.space[name].values.extend(str(v) for v in values)
            request.search.trials = int(search.get("trials", 0))
            request.search.metric = str(search.get("metric", ""))
        result: trainer_pb2.TrainingJob = self._t.call("trainer", self._stub().SubmitTraining, request)
        return result

    def get(self, job_id: str) -> trainer_pb2.TrainingJob:
        result: trainer_pb2.TrainingJob = self._t.call(
            "trainer", self._stub().GetTrainingJob, trainer_pb2.GetTrainingJobRequest(job_id=job_id)
        )
        return result

    def list(self, state: str = "", limit: int = 100) -> builtins.list[trainer_pb2.TrainingJob]:
        request = trainer_pb2.ListTrainingJobsRequest(limit=limit)
        if state:
            if state not in STATES:
                raise InvalidArgument(f"state: expected one of {', '.join(STATES)} or empty, got {state!r}")
            request.state = STATES[state]
        return list(self._t.call("trainer", self._stub().ListTrainingJobs, request).jobs)

    def watch(
        self, job_id: str, *, timeout: float = 3600.0, ride_out: float = OUTAGE_S
    ) -> Iterator[trainer_pb2.TrainingJob]:
        """The job after every change, until it ends.

        A trainer that restarts meanwhile is ridden out: the watch opens again (for up to ``ride_out``
        seconds without an answer, then ``Unavailable``), and until it does the last update is repeated
        with its ``stage`` saying so, for a progress bar to show.
        """
        request = trainer_pb2.GetTrainingJobRequest(job_id=job_id)
        outage = Outage("trainer", ride_out)
        last: trainer_pb2.TrainingJob | None = None
        while True:
            try:
                for update in self._t.stream("trainer", self._stub().WatchTrainingJob, request, timeout=timeout):
                    outage.over()
                    last = update
                    yield update
                return
            except Unavailable as exc:
                left = outage.ride(exc)
                if last is not None:
                    waiting = trainer_pb2.TrainingJob()
                    waiting.CopyFrom(last)
                    waiting.stage = outage.notice(left)
                    yield waiting

    def cancel(self, job_id: str) -> trainer_pb2.TrainingJob:
        result: trainer_pb2.TrainingJob = self._t.call(
            "trainer", self._stub().CancelTrainingJob, trainer_pb2.GetTrainingJobRequest(job_id=job_id)
        )
        return result

    def algorithms(self) -> builtins.list[trainer_pb2.AlgorithmInfo]:
        return list(
            self._t.call("trainer", self._stub().ListAlgorithms, trainer_pb2.ListAlgorithmsRequest()).algorithms
        )
