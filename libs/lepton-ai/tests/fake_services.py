"""The fake platform's services: servicers on the generated bases, each with a tiny state.

See fakes.py for how they are served and how a test steers them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import polars as pl
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from lepton.common.v1 import common_pb2
from lepton.data.v1 import data_pb2, data_pb2_grpc
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.events.v1 import events_pb2, stream_pb2, stream_pb2_grpc
from lepton.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_core.rpc import SUBSCRIBED_HEADER
from lepton_ml.signing import Signer

if TYPE_CHECKING:
    from .fakes import FakePlatform

M = TypeVar("M", bound=Message)
TENANT = "tenant-unit"

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
NAME = re.compile(r"[a-z0-9_-]{1,64}")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """``context.abort``, which raises, typed as never returning."""
    context.abort(code, details)
    raise AssertionError("context.abort returned")


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _copy(message: M) -> M:
    out = type(message)()
    out.CopyFrom(message)
    return out


#: The fake platform's artifact signing key: it signs what add_version is given.
SIGNER = Signer.generate()


class FakeData(data_pb2_grpc.DataServiceServicer):
    """Datasets and their immutable versions, each a polars DataFrame."""

    add_to = staticmethod(data_pb2_grpc.add_DataServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.datasets: dict[str, data_pb2.Dataset] = {}  # by name
        self.versions: dict[str, data_pb2.DatasetVersion] = {}
        self.frames: dict[str, pl.DataFrame] = {}
        self.batch_rows = 2  # rows per ReadDataset chunk, so that a small table takes several

    def add(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        origin: str = "upload",
        parent: str = "",
        recipe: str = "",
        digest: str = "",
    ) -> data_pb2.DatasetVersion:
        """Stores a new version of ``name`` (creating the dataset) and publishes its event."""
        with self.fake.lock:
            dataset = self.datasets.get(name)
            if dataset is None:
                dataset = data_pb2.Dataset(dataset_id=f"ds_{len(self.datasets) + 1:03d}", name=name, rules_json="[]")
                self.datasets[name] = dataset
            version = data_pb2.DatasetVersion(
                dataset_id=dataset.dataset_id,
                version_id=f"dv_{len(self.versions) + 1:04d}",
                dataset_name=name,
                object=common_pb2.ObjectRef(bucket="datasets", name=name, digest=digest),
                columns=[common_pb2.Column(name=c, dtype=str(t)) for c, t in frame.schema.items()],
                row_count=frame.height,
                created_at=_now(),
                origin=origin,
                parent_version_id=parent,
                recipe_json=recipe,
                fitted_json=json.dumps([{} for _ in json.loads(recipe)["steps"]]) if recipe else "",
            )
            self.versions[version.version_id] = version
            self.frames[version.version_id] = frame
            dataset.version_count += 1
            dataset.latest_version_id = version.version_id
            payload = events_pb2.DatasetVersionCreated(
                tenant=TENANT,
                lineage=common_pb2.Lineage(dataset_id=dataset.dataset_id, dataset_version_id=version.version_id),
                dataset_name=name,
                row_count=frame.height,
                origin=origin,
            )
            self.fake.events.publish("dataset.version.created", version.version_id, payload)
            return version

    def version(self, version_id: str, context: grpc.ServicerContext) -> data_pb2.DatasetVersion:
        with self.fake.lock:
            if version_id not in self.versions:
                abort(context, NOT_FOUND, f"version_id: no dataset version {version_id!r}")
            return self.versions[version_id]

    def UploadDataset(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            abort(context, INVALID, "header: the first message must be the upload header")
        header = first.header
        data = b"".join(r.chunk for r in request_iterator)
        if header.expected_size and len(data) != header.expected_size:
            abort(context, INVALID, f"expected_size: {header.expected_size} bytes announced, {len(data)} arrived")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if header.expected_digest and header.expected_digest != digest:
            abort(context, INVALID, f"expected_digest: the bytes hash to {digest}")
        if not NAME.fullmatch(header.dataset_name):
            abort(context, INVALID, f"dataset_name: {header.dataset_name!r} is not 1-64 of a-z 0-9 - _")
        with self.fake.lock:
            for version in self.versions.values():
                if version.dataset_name == header.dataset_name and version.object.digest == digest:
                    repeat = _copy(version)
                    repeat.deduplicated = True
                    return repeat
        return self.add(header.dataset_name, _parse(header, data, context), digest=digest)

    def GetDatasetVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.version(request.version_id, context)

    def GetDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            for dataset in self.datasets.values():
                if request.dataset in (dataset.name, dataset.dataset_id):
                    return dataset
        abort(context, NOT_FOUND, f"dataset: no dataset named {request.dataset!r}")

    def ListDatasets(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            found = [d for d in self.datasets.values() if request.search in d.name]
            return data_pb2.ListDatasetsResponse(datasets=found)

    def ListDatasetVersions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            found = [v for v in self.versions.values() if request.dataset_name in ("", v.dataset_name)]
            return data_pb2.ListDatasetVersionsResponse(versions=found)

    def DeleteDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        dataset = self.GetDataset(data_pb2.GetDatasetRequest(dataset=request.dataset), context)
        with self.fake.lock:
            gone = [k for k, v in self.versions.items() if v.dataset_id == dataset.dataset_id]
            for key in gone:
                del self.versions[key], self.frames[key]
            del self.datasets[dataset.name]
            return data_pb2.DeleteDatasetResponse(versions_deleted=len(gone), objects_deleted=len(gone))

    def ApplyRecipe(self, request: Any, context: grpc.ServicerContext) -> Any:
        parent = self.version(request.version_id, context)
        frame = self.frames[parent.version_id]
        steps = json.loads(request.recipe_json or "{}").get("steps")
        if not steps:
            abort(context, INVALID, "recipe_json.steps: a recipe needs at least one step")
        for i, step in enumerate(steps):
            if step.get("op") == "drop":
                frame = frame.drop(step["columns"])
            elif step.get("op") == "fill_nulls":
                frame = frame.fill_null(step["value"])
            else:
                abort(context, INVALID, f"recipe_json.steps[{i}].op: unknown step {step.get('op')!r}")
        recipe = json.dumps({"steps": steps}, sort_keys=True)
        return self.add(parent.dataset_name, frame, origin="recipe", parent=parent.version_id, recipe=recipe)

    def GetProfile(self, request: Any, context: grpc.ServicerContext) -> Any:
        frame = self.frames[self.version(request.version_id, context).version_id]
        columns = []
        for name in frame.columns:
            s = frame[name]
            c = data_pb2.ColumnProfile(
                name=name, dtype=str(s.dtype), count=s.len(), nulls=s.null_count(), distinct=s.n_unique()
            )
            if s.dtype.is_numeric():
                c.min, c.max, c.mean = float(s.min()), float(s.max()), float(s.mean())  # type: ignore[arg-type]
            else:
                c.categorical = True
                c.top_values.extend(data_pb2.TopValue(value=str(v), count=n) for v, n in s.value_counts().rows())
            columns.append(c)
        return data_pb2.DatasetProfile(version_id=request.version_id, rows=frame.height, columns=columns)

    def SplitVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows = self.version(request.version_id, context).row_count
        spec = request.spec
        if abs(spec.train + spec.validation + spec.test - 1) > 1e-9:
            abort(context, INVALID, "spec: train + validation + test must be 1")
        train, test = round(rows * spec.train), round(rows * spec.test)
        return data_pb2.SplitVersionResponse(train_rows=train, validation_rows=rows - train - test, test_rows=test)

    def ReadDataset(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        frame = self.frames[self.version(request.version_id, context).version_id]
        missing = [c for c in request.columns if c not in frame.columns]
        if missing:
            abort(context, INVALID, f"columns: no column {missing[0]!r}")
        if request.columns:
            frame = frame.select(list(request.columns))
        step = request.batch_rows or self.batch_rows
        for start in range(0, frame.height, step):
            part = frame.slice(start, step)
            buf = io.BytesIO()
            part.write_ipc_stream(buf)
            yield data_pb2.RecordBatchChunk(arrow_ipc=buf.getvalue(), rows=part.height)


def _parse(header: Any, data: bytes, context: grpc.ServicerContext) -> pl.DataFrame:
    try:
        if header.format == "csv":
            has_header = header.csv.has_header if header.csv.HasField("has_header") else True
            return pl.read_csv(io.BytesIO(data), separator=header.csv.delimiter or ",", has_header=has_header)
        if header.format == "arrow":
            return pl.read_ipc_stream(io.BytesIO(data))
        if header.format == "parquet":
            return pl.read_parquet(io.BytesIO(data))
        if header.format == "jsonl":
            return pl.read_ndjson(io.BytesIO(data))
    except Exception as exc:  # any parse failure is the caller's bad file
        abort(context, INVALID, f"format: the bytes are not valid {header.format}: {exc}")
    abort(context, INVALID, f"format: {header.format!r} is not csv, parquet, jsonl or arrow")


JOB_DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
ALGORITHMS = [
    trainer_pb2.AlgorithmInfo(
        name="linear_regression",
        task="regression",
        params=[trainer_pb2.ParamInfo(name="fit_intercept", type="bool", default="true")],
    ),
    trainer_pb2.AlgorithmInfo(
        name="ridge", task="regression", params=[trainer_pb2.ParamInfo(name="alpha", type="float", default="1.0")]
    ),
    trainer_pb2.AlgorithmInfo(
        name="kmeans", task="clustering", params=[trainer_pb2.ParamInfo(name="n_clusters", type="int", default="8")]
    ),
]


class FakeTrainer(trainer_pb2_grpc.TrainingServiceServicer):
    """Training jobs. A submitted job moves one state each time a watcher looks:
    queued, running, then ``outcome`` ("succeeded" registers a version; "hold" runs until cancelled)."""

    add_to = staticmethod(trainer_pb2_grpc.add_TrainingServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.jobs: dict[str, trainer_pb2.TrainingJob] = {}  # oldest first
        self.scripted: set[str] = set()
        self.outcome = "succeeded"
        self.metrics = {"r2": 0.75, "rmse": 1.25}

    def add_job(
        self,
        state: trainer_pb2.JobState.ValueType = trainer_pb2.JOB_STATE_QUEUED,
        *,
        scripted: bool = False,
        **fields: Any,
    ) -> trainer_pb2.TrainingJob:
        """A job as given; ``scripted``: it moves on as a submitted one does when watched."""
        with self.fake.lock:
            job = trainer_pb2.TrainingJob(job_id=f"job_{len(self.jobs) + 1:04d}", state=state, **fields)
            self.jobs[job.job_id] = job
            if scripted:
                self.scripted.add(job.job_id)
            return job

    def job(self, job_id: str, context: grpc.ServicerContext) -> trainer_pb2.TrainingJob:
        with self.fake.lock:
            if job_id not in self.jobs:
                abort(context, NOT_FOUND, f"job_id: no training job {job_id!r}")
            return self.jobs[job_id]

    def ListAlgorithms(self, request: Any, context: grpc.ServicerContext) -> Any:
        return trainer_pb2.ListAlgorithmsResponse(algorithms=ALGORITHMS)

    def SubmitTraining(self, request: Any, context: grpc.ServicerContext) -> Any:
        version = self.fake.data.version(request.dataset_version_id, context)
        columns = [c.name for c in version.columns]
        if request.algorithm not in {a.name for a in ALGORITHMS}:
            abort(context, INVALID, f"algorithm: no algorithm {request.algorithm!r}")
        if request.algorithm != "kmeans" and request.target not in columns:
            abort(context, INVALID, f"target: the dataset has no column {request.target!r}")
        job = self.add_job(
            algorithm=request.algorithm,
            target=request.target,
            params=dict(request.params),
            features=[c for c in columns if c != request.target],
            model_name=request.model_name or f"{version.dataset_name}-{request.algorithm}",
            lineage=common_pb2.Lineage(dataset_id=version.dataset_id, dataset_version_id=version.version_id),
            seed=request.seed if request.HasField("seed") else 42,
            stage="queued",
            scripted=True,
        )
        with self.fake.lock:
            return _copy(job)

    def GetTrainingJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.job(request.job_id, context)

    def ListTrainingJobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            jobs = [j for j in reversed(self.jobs.values()) if request.state in (0, j.state)]
            return trainer_pb2.ListTrainingJobsResponse(jobs=jobs[: request.limit or 100])

    def CancelTrainingJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            job = self.job(request.job_id, context)
            if job.state in JOB_DONE:
                state = trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
                abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"job_id: job {job.job_id} already {state}")
            job.state, job.stage = trainer_pb2.JOB_STATE_CANCELLED, "cancelled"
            self.fake.changed.notify_all()
            return job

    def WatchTrainingJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.job(request.job_id, context)
        sent: trainer_pb2.TrainingJob | None = None
        while context.is_active() and not self.fake.stopping:
            with self.fake.lock:
                job = _copy(self.jobs[request.job_id])
                if job == sent:
                    self.fake.changed.wait(0.05)
                    continue
            yield job
            sent = job
            if job.state in JOB_DONE:
                return
            self._advance(job.job_id)

    def _advance(self, job_id: str) -> None:
        with self.fake.lock:
            job = self.jobs[job_id]
            if job_id not in self.scripted or job.state in JOB_DONE:
                return
            if job.state == trainer_pb2.JOB_STATE_QUEUED:
                job.state, job.stage, job.progress = trainer_pb2.JOB_STATE_RUNNING, "fitting", 0.5
            elif self.outcome == "succeeded":
                job.state, job.stage, job.progress = trainer_pb2.JOB_STATE_SUCCEEDED, "done", 1.0
                self.fake.registry.add_version(job.model_name, job_id=job_id, metrics=self.metrics)
            elif self.outcome == "failed":
                job.state, job.error = trainer_pb2.JOB_STATE_FAILED, "fit: the target column is constant"
            self.fake.changed.notify_all()


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Models, their versions, aliases (compare-and-set) and artifacts."""

    add_to = staticmethod(registry_pb2_grpc.add_RegistryServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.models: dict[str, registry_pb2.RegisteredModel] = {}
        self.versions: dict[str, list[registry_pb2.ModelVersion]] = {}
        self.artifacts: dict[tuple[str, int], tuple[bytes, str]] = {}  # (bytes, digest sent)
        self.chunk_size = 64 * 1024
        #: ListModelVersions calls that still answer as if the newest version were not there yet.
        self.hidden_polls = 0

    def add_version(
        self,
        name: str,
        *,
        metrics: dict[str, float] | None = None,
        artifact: bytes = b"PK\x03\x04fake-bundle",
        digest: str = "",
        signed: bool = True,
        job_id: str = "",
        status: str = "ready",
        algorithm: str = "ridge",
    ) -> registry_pb2.ModelVersion:
        with self.fake.lock:
            model = self.models.setdefault(name, registry_pb2.RegisteredModel(name=name, task="regression"))
            model.latest_version += 1
            version = registry_pb2.ModelVersion(
                model_name=name,
                version=model.latest_version,
                lineage=common_pb2.Lineage(training_job_id=job_id, model_name=name, model_version=model.latest_version),
                algorithm=algorithm,
                metrics=metrics or {"r2": 0.5},
                status=status,
            )
            self.versions.setdefault(name, []).append(version)
            if signed:  # as the trainer signs every artifact
                artifact = SIGNER.sign(artifact)
            self.artifacts[(name, version.version)] = (
                artifact,
                digest or "sha256:" + hashlib.sha256(artifact).hexdigest(),
            )
            self.fake.changed.notify_all()
            return version

    def model(self, name: str, context: grpc.ServicerContext) -> registry_pb2.RegisteredModel:
        with self.fake.lock:
            if name not in self.models:
                abort(context, NOT_FOUND, f"name: no model named {name!r}")
            return self.models[name]

    def resolve(self, name: str, number: int, alias: str, context: grpc.ServicerContext) -> registry_pb2.ModelVersion:
        with self.fake.lock:
            model = self.model(name, context)
            if alias:
                if alias not in model.aliases:
                    abort(context, NOT_FOUND, f"alias: {name} has no alias {alias!r}")
                number = model.aliases[alias]
            for version in self.versions[name]:
                if version.version == (number or model.latest_version):
                    return version
            abort(context, NOT_FOUND, f"version: {name} has no version {number}")

    def GetModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.model(request.name, context)

    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            return registry_pb2.ListModelsResponse(models=list(self.models.values()))

    def GetModelVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.resolve(request.model_name, request.version, request.alias, context)

    def ListModelVersions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            if self.hidden_polls > 0:
                self.hidden_polls -= 1
                versions = self.versions.get(request.model_name, [])[:-1]
                if not versions:
                    abort(context, NOT_FOUND, f"model_name: no model named {request.model_name!r}")
                return registry_pb2.ListModelVersionsResponse(versions=versions)
            self.model(request.model_name, context)
            return registry_pb2.ListModelVersionsResponse(versions=self.versions[request.model_name])

    def GetArtifactPublicKey(self, request: Any, context: grpc.ServicerContext) -> Any:
        keys = SIGNER.trusted()
        return registry_pb2.ArtifactPublicKey(pem=keys.pem().decode(), key_ids=[k.hex() for k in keys.keys])

    def DownloadArtifact(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        version = self.resolve(request.model_name, request.version, request.alias, context)
        data, digest = self.artifacts[(version.model_name, version.version)]
        for start in range(0, max(len(data), 1), self.chunk_size):
            first = start == 0
            yield registry_pb2.ArtifactChunk(
                data=data[start : start + self.chunk_size],
                digest=digest if first else "",
                size=len(data) if first else 0,
            )

    def SetAlias(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            model = self.model(request.model_name, context)
            target = self.resolve(request.model_name, request.version, "", context)
            if target.status == "archived":
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"version: {request.model_name} v{request.version} is archived and cannot take an alias",
                )
            current = model.aliases.get(request.alias, 0)
            if request.HasField("expected_version") and request.expected_version != current:
                abort(
                    context,
                    grpc.StatusCode.ABORTED,
                    f"expected_version: {request.alias} points at v{current}, not v{request.expected_version}",
                )
            model.aliases[request.alias] = request.version
            return registry_pb2.ModelAlias(
                model_name=model.name, alias=request.alias, version=request.version, previous_version=current
            )

    def DeleteModelVersion(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            model = self.model(request.model_name, context)
            target = self.resolve(request.model_name, request.version, "", context)
            aliases = sorted(a for a, v in model.aliases.items() if v == target.version)
            if aliases:
                abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"version: version {target.version} of {model.name} is aliased as {', '.join(aliases)}",
                )
            self.versions[model.name].remove(target)
            self.artifacts.pop((model.name, target.version), None)
            return registry_pb2.DeleteModelVersionResponse(
                model_name=model.name, version=target.version, artifact_erased=True
            )

    def SearchModelVersions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            found = [
                v
                for name in sorted(self.versions)
                for v in self.versions[name]
                if request.name_contains in name
                and (not request.metric or request.metric in v.metrics)
                and (not request.HasField("min_value") or v.metrics.get(request.metric, 0) >= request.min_value)
                and (not request.HasField("max_value") or v.metrics.get(request.metric, 0) <= request.max_value)
            ]
        start, size = int(request.page_token or 0), request.page_size or 50
        more = start + size < len(found)
        return registry_pb2.SearchModelVersionsResponse(
            versions=found[start : start + size], next_page_token=str(start + size) if more else ""
        )


class FakeEvaluator(evaluator_pb2_grpc.EvaluationServiceServicer):
    """Evaluations; with ``hold`` set, Evaluate answers only after the caller's deadline."""

    add_to = staticmethod(evaluator_pb2_grpc.add_EvaluationServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.hold = False

    def Evaluate(self, request: Any, context: grpc.ServicerContext) -> Any:
        version = self.fake.registry.resolve(request.model_name, request.model_version, request.alias, context)
        with self.fake.lock:
            while self.hold and context.is_active() and not self.fake.stopping:
                self.fake.changed.wait(0.05)
        return evaluator_pb2.Evaluation(
            evaluation_id="ev_0001",
            lineage=common_pb2.Lineage(model_name=version.model_name, model_version=version.version),
            metrics={"r2": 0.8},
            rows=request.rows or "holdout",
        )


class FakeDeployer(deployer_pb2_grpc.DeploymentServiceServicer):
    """Deployments; Deploy makes one READY at once, serving the version asked for."""

    add_to = staticmethod(deployer_pb2_grpc.add_DeploymentServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.deployments: dict[str, deployer_pb2.Deployment] = {}

    def add(self, name: str, model_name: str, version: int, *, routes: int = 1) -> deployer_pb2.Deployment:
        with self.fake.lock:
            deployment = deployer_pb2.Deployment(
                name=name,
                state=deployer_pb2.DEPLOYMENT_STATE_READY,
                lineage=common_pb2.Lineage(model_name=model_name, model_version=version, deployment=name),
                triton_model=name,
                triton_version=str(version),
                triton_url="127.0.0.1:1",
                feature_columns=["units", "price"],
                routes=[
                    deployer_pb2.Route(
                        triton_model=name, triton_version=str(version), weight=1.0, model_version=version
                    )
                    for _ in range(routes)
                ],
            )
            self.deployments[name] = deployment
            return deployment

    def GetDeployment(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            if request.name not in self.deployments:
                abort(context, NOT_FOUND, f"name: no deployment named {request.name!r}")
            return self.deployments[request.name]

    def ListDeployments(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            return deployer_pb2.ListDeploymentsResponse(deployments=list(self.deployments.values()))

    def Deploy(self, request: Any, context: grpc.ServicerContext) -> Any:
        version = self.fake.registry.resolve(request.model_name, request.version, request.alias, context)
        deployment = self.add(request.name, request.model_name, version.version)
        with self.fake.lock:
            deployment.config.CopyFrom(request.config)
            return deployment

    def DeleteDeployment(self, request: Any, context: grpc.ServicerContext) -> Any:
        deployment = self.GetDeployment(request, context)
        with self.fake.lock:
            del self.deployments[request.name]
            return deployment


class FakeMonitor(monitor_pb2_grpc.MonitorServiceServicer):
    """Alert rules, labels and prediction logs (paged ``page_size`` at a time)."""

    add_to = staticmethod(monitor_pb2_grpc.add_MonitorServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.logs: list[monitor_pb2.PredictionLog] = []

    def SendLabels(self, request: Any, context: grpc.ServicerContext) -> Any:
        return monitor_pb2.SendLabelsResponse(accepted=len(request.labels), matched=len(request.labels))

    def SetRules(self, request: Any, context: grpc.ServicerContext) -> Any:
        statuses = [monitor_pb2.RuleStatus(rule=r) for r in request.rules]
        for status in statuses:
            status.rule.severity = status.rule.severity or "warning"
        return monitor_pb2.RuleList(deployment=request.deployment, rules=statuses)

    def QueryPredictionLogs(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            found = [log for log in self.logs if request.deployment in ("", log.deployment)]
        start, size = int(request.page_token or 0), request.page_size or 100
        more = start + size < len(found)
        return monitor_pb2.QueryPredictionLogsResponse(
            logs=found[start : start + size], next_page_token=str(start + size) if more else "", scanned=len(found)
        )


class FakeEvents(stream_pb2_grpc.EventServiceServicer):
    """The event log and its subscriptions: NATS-style patterns over catalogue names."""

    add_to = staticmethod(stream_pb2_grpc.add_EventServiceServicer_to_server)

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.log: list[stream_pb2.Event] = []
        self.subscribers = 0  # subscriptions confirmed (headers sent) so far

    def publish(self, name: str, subject: str, payload: Message, *, type_: str = "") -> stream_pb2.Event:
        with self.fake.lock:
            event = stream_pb2.Event(
                id=f"ev-{len(self.log) + 1}",
                type=type_ or f"ai.lepton.{name}.v1",
                name=name,
                source=f"/lepton/{name.split('.')[0]}",
                time=_now(),
                subject=subject,
                traceparent=TRACEPARENT,
                payload=payload.SerializeToString(),
                payload_type=payload.DESCRIPTOR.full_name,
                tenant=TENANT,
            )
            self.log.append(event)
            self.fake.changed.notify_all()
            return event

    def Subscribe(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        from lepton_core.events import CATALOGUE

        if request.pattern and not any(matches(request.pattern, s.name) for s in CATALOGUE):
            abort(context, INVALID, f"pattern: {request.pattern!r} matches no event in the catalogue")
        since = request.since.ToNanoseconds() if request.HasField("since") else None
        with self.fake.lock:
            seen = 0 if since is not None else len(self.log)
            self.subscribers += 1
            self.fake.changed.notify_all()
        # The SDK waits for these (with the platform's mark): from here on nothing is missed.
        context.send_initial_metadata(((SUBSCRIBED_HEADER, "1"),))
        sent = 0
        while context.is_active() and not self.fake.stopping:
            with self.fake.lock:
                if seen == len(self.log):
                    self.fake.changed.wait(0.05)
                    continue
                new, seen = self.log[seen:], len(self.log)
            for event in new:
                if (not request.pattern or matches(request.pattern, event.name)) and (
                    since is None or event.time.ToNanoseconds() >= since
                ):
                    yield event
                    sent += 1
                    if sent == request.limit:
                        return


def matches(pattern: str, name: str) -> bool:
    """NATS wildcards over dotted names: ``*`` one part, ``>`` the rest (one part or more)."""
    want, have = pattern.split("."), name.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)
