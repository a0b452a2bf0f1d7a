"""``make demo``: one real dataset through the whole platform, end to end.

Starts NATS, Triton and the six services; uploads scikit-learn's diabetes data as
CSV; trains, evaluates, registers and deploys a linear regression through the
platform's own events; asks Triton for five predictions; then prints them next
to the true values, the evaluation metrics, and the trace that spans it all.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import numpy.typing as npt
import polars as pl
import tritonclient.grpc.aio as triton_aio
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from opentelemetry import trace

from lepton_core.rpc import client_channel
from lepton_core.telemetry import current_trace_id, inject_context, setup_telemetry, shutdown_telemetry
from lepton_ml import serving
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import SERVICES
from lepton_platform.tracesink import TraceSink

T = TypeVar("T")
CHUNK = 64 * 1024


def write_diabetes_csv(path: Path) -> Path:
    """scikit-learn's bundled diabetes data (442 rows, 10 features, target) as CSV."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(path, index=False)
    return path


@dataclass
class PipelineResult:
    dataset_version: data_pb2.DatasetVersion
    job: trainer_pb2.TrainingJob
    evaluation: evaluator_pb2.Evaluation
    model_version: registry_pb2.ModelVersion
    deployment: deployer_pb2.Deployment
    rows: npt.NDArray[np.float64]
    truth: npt.NDArray[np.float64]
    predictions: npt.NDArray[np.float64]
    monitor: monitor_pb2.PredictionStats
    trace_id: str
    services_in_trace: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)


async def poll(
    what: str, call: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float, interval: float = 0.2
) -> T:
    """Calls ``call`` every ``interval`` seconds until ``done(result)``; NOT_FOUND counts as not yet."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = await call()
            if done(result):
                return result
            last = result
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            last = exc.details()
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s (last: {last})")


async def _chunks(name: str, raw: bytes) -> AsyncIterator[data_pb2.UploadDatasetRequest]:
    yield data_pb2.UploadDatasetRequest(header=data_pb2.UploadHeader(dataset_name=name, format="csv"))
    for start in range(0, len(raw), CHUNK):
        yield data_pb2.UploadDatasetRequest(chunk=raw[start : start + CHUNK])


def settled(deployment: deployer_pb2.Deployment, version: int | None = None) -> bool:
    """Whether ``deployment`` is done with ``version`` (any, when None): READY or FAILED.

    Not merely "not loading": a first deploy is ROLLING_OUT between LOADING and READY.
    """
    done = deployment.state in (deployer_pb2.DEPLOYMENT_STATE_READY, deployer_pb2.DEPLOYMENT_STATE_FAILED)
    return done and (version is None or deployment.lineage.model_version == version)


async def run_pipeline(
    platform: EmbeddedPlatform, csv_path: Path, sink: TraceSink | None = None, model_name: str = ""
) -> PipelineResult:
    """Drives one upload → train → evaluate → register → deploy → predict run in one trace.

    ``model_name`` names the model (and its deployment); empty: the trainer's default name, made
    from the dataset's and the algorithm's. A run on a platform others train on too passes its
    own, so nobody else's version of the same name can roll out under it.
    """
    tracer = trace.get_tracer("lepton.demo")
    key = platform.api_key
    a = platform.addresses
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    with tracer.start_as_current_span("lepton demo pipeline"):
        trace_id = current_trace_id()
        async with (
            client_channel(a["data"], key) as data_ch,
            client_channel(a["trainer"], key) as trainer_ch,
            client_channel(a["evaluator"], key) as eval_ch,
            client_channel(a["registry"], key) as reg_ch,
            client_channel(a["deployer"], key) as dep_ch,
            client_channel(a["monitor"], key) as mon_ch,
        ):
            version = await data_pb2_grpc.DataServiceStub(data_ch).UploadDataset(
                _chunks("diabetes", csv_path.read_bytes()), timeout=60
            )
            seconds["upload"] = time.monotonic() - t0
            trainer = trainer_pb2_grpc.TrainingServiceStub(trainer_ch)
            job = await trainer.SubmitTraining(
                trainer_pb2.SubmitTrainingRequest(
                    dataset_version_id=version.version_id,
                    algorithm="linear_regression",
                    target="target",
                    model_name=model_name,
                ),
                timeout=30,
            )
            job = await poll(
                "training",
                lambda: trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id), timeout=10),
                lambda j: j.state in (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED),
                120,
            )
            if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"training failed: {job.error}")
            seconds["train"] = time.monotonic() - t0
            evaluation = await poll(
                "evaluation",
                lambda: evaluator_pb2_grpc.EvaluationServiceStub(eval_ch).GetEvaluation(
                    evaluator_pb2.GetEvaluationRequest(training_job_id=job.job_id), timeout=10
                ),
                lambda e: True,
                120,
            )
            registry = registry_pb2_grpc.RegistryServiceStub(reg_ch)
            model_version = await poll(
                "registration",
                lambda: registry.GetModelVersion(
                    registry_pb2.GetModelVersionRequest(model_name=job.model_name), timeout=10
                ),
                lambda v: v.lineage.training_job_id == job.job_id,
                120,
            )
            deployment = await poll(
                "deployment",
                lambda: deployer_pb2_grpc.DeploymentServiceStub(dep_ch).GetDeployment(
                    deployer_pb2.GetDeploymentRequest(name=job.model_name), timeout=10
                ),
                lambda d: (
                    d.state != deployer_pb2.DEPLOYMENT_STATE_LOADING
                    and d.lineage.model_version == model_version.version
                ),
                300,
            )
            if deployment.state != deployer_pb2.DEPLOYMENT_STATE_READY:
                raise RuntimeError(f"deployment failed: {deployment.error}")
            seconds["deployed"] = time.monotonic() - t0

            sample = pl.read_csv(csv_path).head(5)
            rows = sample.select(list(model_version.features)).to_numpy().astype(np.float64)
            truth = sample[model_version.target].to_numpy().astype(np.float64)
            predictions = await infer(platform.gateway_url, key, deployment, sample)
            seconds["predicted"] = time.monotonic() - t0
            monitor = monitor_pb2_grpc.MonitorServiceStub(mon_ch)
            stats = await poll(
                "prediction log",
                lambda: monitor.GetPredictionStats(
                    monitor_pb2.GetPredictionStatsRequest(deployment=deployment.name), timeout=10
                ),
                lambda s: s.logged_requests >= 1,
                60,
            )
    result = PipelineResult(
        dataset_version=version,
        job=job,
        evaluation=evaluation,
        model_version=model_version,
        deployment=deployment,
        rows=rows,
        truth=truth,
        predictions=predictions,
        monitor=stats,
        trace_id=trace_id,
        seconds=seconds,
    )
    if sink is not None:
        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        wanted = {f"lepton-{s}" for s in SERVICES}
        deadline = time.monotonic() + 30
        while not wanted <= sink.services(trace_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        result.services_in_trace = sink.services(trace_id)
    return result


async def infer(
    gateway: str, api_key: str, deployment: deployer_pb2.Deployment, frame: pl.DataFrame
) -> npt.NDArray[np.float64]:
    """Predictions through the inference gateway (KServe V2 gRPC, the API key), with the trace context attached."""
    client = triton_aio.InferenceServerClient(gateway)
    try:
        with trace.get_tracer("lepton.demo").start_as_current_span("gateway infer"):
            carrier: dict[str, str] = {}
            inject_context(carrier)
            result = await client.infer(
                deployment.name,
                serving.input_tensors(frame, deployment.feature_columns, deployment.text_columns),
                outputs=[triton_aio.InferRequestedOutput(deployment.output_names[0])],
                parameters=carrier,
                headers={"authorization": f"Bearer {api_key}"},
                client_timeout=30,
            )
        out = result.as_numpy(deployment.output_names[0])
        assert out is not None
        return np.asarray(out, dtype=np.float64).reshape(-1)
    finally:
        await client.close()


def print_result(r: PipelineResult) -> None:
    print(
        f"\ndataset    {r.dataset_version.dataset_name} version {r.dataset_version.version_id} "
        f"({r.dataset_version.row_count} rows, {len(r.dataset_version.columns)} columns)"
    )
    print(f"training   job {r.job.job_id} ({r.job.algorithm}) on worker {r.job.worker_id}")
    print(f"registry   {r.model_version.model_name} v{r.model_version.version}")
    print(f"deployment {r.deployment.name} -> Triton model {r.deployment.triton_model} v{r.deployment.triton_version}")
    print("\npredictions from Triton, through the inference gateway with the API key, for 5 rows:")
    print(f"  {'row':>3}  {'predicted':>10}  {'true':>8}")
    for i, (p, t) in enumerate(zip(r.predictions, r.truth, strict=True)):
        print(f"  {i:>3}  {p:>10.2f}  {t:>8.1f}")
    print(f"\nevaluation on {r.evaluation.test_rows} held-out rows:")
    for name in sorted(r.evaluation.metrics):
        ci = ""
        if name == r.evaluation.headline_metric and r.evaluation.ci_high > r.evaluation.ci_low:
            ci = f"  (95% bootstrap CI {r.evaluation.ci_low:.4f} to {r.evaluation.ci_high:.4f})"
        print(f"  {name:<18} {r.evaluation.metrics[name]:.4f}{ci}")
    print(f"  plots: {', '.join(r.evaluation.plots)} (EvaluationService.GetPlot)")
    print(f"\nmonitor    {r.monitor.logged_requests} prediction log(s), {r.monitor.logged_rows} rows")
    print(f"\ntrace {r.trace_id}")
    print(f"  services with spans in it: {', '.join(sorted(r.services_in_trace))}")
    print("  seconds since start: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items()))


async def _amain(workdir: Path) -> int:
    sink = TraceSink()
    setup_telemetry("lepton-demo", sink.endpoint, export_delay_ms=200)
    platform = EmbeddedPlatform(workdir, api_key=secrets.token_urlsafe(24), otlp_endpoint=sink.endpoint)
    try:
        print(f"starting NATS, Triton, the six services and the gateway (logs in {workdir / 'logs'}) ...", flush=True)
        await asyncio.to_thread(platform.start)
        csv = write_diabetes_csv(workdir / "diabetes.csv")
        result = await run_pipeline(platform, csv, sink)
        print_result(result)
        missing = {f"lepton-{s}" for s in SERVICES} - result.services_in_trace
        if missing:
            print(f"  missing spans from: {', '.join(sorted(missing))}", file=sys.stderr)
            return 1
        return 0
    finally:
        await asyncio.to_thread(platform.stop)
        shutdown_telemetry()
        sink.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="lepton-demo-") as tmp:
        code = asyncio.run(_amain(Path(tmp)))
    print("\nall processes stopped.")
    sys.exit(code)


if __name__ == "__main__":
    main()
