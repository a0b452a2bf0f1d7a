"""``la.models``: scikit-learn-like estimators that train on the platform.

>>> model = la.models.LinearRegression()
>>> model.fit(dataset)                 # remote: queued, trained, evaluated, registered, deployed
>>> prediction = model.predict(new_data)

``fit`` submits a training job for a dataset version and waits for it with a
progress bar (Ctrl-C asks whether to cancel the job). It then waits for the
registry version. ``predict`` goes through the deployed Triton model when the
model's deployment serves this version, else it evaluates the downloaded artifact
locally (the same bundle Triton serves, recipe preprocessing included).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from lepton.deployer.v1 import deployer_pb2, deployer_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc
from lepton.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from lepton_ai import _artifacts, _progress
from lepton_ai._transport import Outage, Transport, pauses
from lepton_ai.datasets import Dataset
from lepton_ai.deployments import gateway_predict
from lepton_ai.errors import FailedPrecondition, InvalidArgument, LeptonError, NotFound, Unavailable
from lepton_ai.jobs import Jobs
from lepton_ml import serving

if TYPE_CHECKING:
    # Loading a bundle needs skops and scikit-learn (seconds to import), and torch for an MLP:
    # only when used, so that `import lepton_ai` and every `lepton` command start fast.
    from lepton_ml import artifacts
    from lepton_ml.signing import TrustedKeys

DONE = (trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED, trainer_pb2.JOB_STATE_CANCELLED)
#: Column names taken as the target when a dataset does not say and fit() is not told.
TARGET_NAMES = ("target", "label", "y")


class Model:
    """A model to train on the platform; subclasses name the algorithm.

    Args:
        **params: Hyper-parameters, checked against the platform's catalogue
            before anything is submitted.
    """

    algorithm: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self._params = {k: v for k, v in params.items()}
        self._transport: Transport | None = None
        self.job_id: str = ""
        self.model_name: str = ""
        self.version: int = 0
        self.metrics: dict[str, float] = {}
        self.features: list[str] = []
        self.target: str = ""
        self._artifact: bytes | None = None  # downloaded, until the bundle is loaded from it
        self._bundle: artifacts.Bundle | None = None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters given (scikit-learn's name for it)."""
        return dict(self._params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        dataset: Dataset,
        target: str | None = None,
        *,
        model_name: str = "",
        seed: int | None = None,
        progress: bool | None = None,
        timeout: float = 3600.0,
    ) -> Model:
        """Trains on ``dataset`` through the platform and waits until the model is registered."""
        t = dataset._datasets._t
        self._transport = t
        target = target if target is not None else _infer_target(dataset, self.algorithm)
        self._check_params(t)
        job = Jobs(t).submit(
            dataset.version_id,
            self.algorithm,
            target,
            params={k: _text(v) for k, v in self._params.items()},
            model_name=model_name,
            seed=seed,
        )
        self.job_id = job.job_id
        trainer = trainer_pb2_grpc.TrainingServiceStub(t.channel("trainer"))
        job = self._wait(t, trainer, job, _progress.wanted(progress), timeout)
        if job.state == trainer_pb2.JOB_STATE_CANCELLED:
            raise LeptonError(f"training job {job.job_id} was cancelled")
        if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
            raise FailedPrecondition(f"training job {job.job_id} failed: {job.error}")
        self.model_name, self.features, self.target = job.model_name, list(job.features), job.target
        version = self._registered(t, job.job_id, deadline=time.monotonic() + 120)
        self.version, self.metrics = version.version, dict(version.metrics)
        self._artifact, self._bundle = None, None
        return self

    def _check_params(self, t: Transport) -> None:
        catalogue = t.call(
            "trainer",
            trainer_pb2_grpc.TrainingServiceStub(t.channel("trainer")).ListAlgorithms,
            trainer_pb2.ListAlgorithmsRequest(),
        )
        known = {a.name: a for a in catalogue.algorithms}
        if self.algorithm not in known:
            raise InvalidArgument(
                f"algorithm: the platform has no {self.algorithm!r}; it has {', '.join(sorted(known))}"
            )
        names = {p.name for p in known[self.algorithm].params}
        for name in self._params:
            if name not in names:
                raise InvalidArgument(
                    f"params.{name}: {self.algorithm} has no such parameter; it has {', '.join(sorted(names))}"
                )

    def _wait(
        self,
        t: Transport,
        trainer: trainer_pb2_grpc.TrainingServiceStub,
        job: trainer_pb2.TrainingJob,
        show: bool,
        timeout: float,
    ) -> trainer_pb2.TrainingJob:
        request = trainer_pb2.GetTrainingJobRequest(job_id=job.job_id)
        updates = Jobs(t).watch(job.job_id, timeout=timeout)  # rides through a trainer restart
        try:
            if not show:
                for update in updates:
                    job = update
                return job
            return _progress.follow(updates, f"train {self.algorithm}") or job
        except KeyboardInterrupt:
            if _confirm(f"cancel training job {job.job_id}?"):
                t.call("trainer", trainer.CancelTrainingJob, request)
                raise LeptonError(f"training job {job.job_id} was cancelled") from None
            print(f"training job {job.job_id} keeps running", file=sys.stderr)
            raise

    def _registered(self, t: Transport, job_id: str, deadline: float) -> registry_pb2.ModelVersion:
        registry = registry_pb2_grpc.RegistryServiceStub(t.channel("registry"))
        waits = pauses()  # evaluation and registration take ~0.1-0.5 s after the job
        outage = Outage("registry")
        while True:
            try:
                versions = t.call(
                    "registry",
                    registry.ListModelVersions,
                    registry_pb2.ListModelVersionsRequest(model_name=self.model_name),
                )
                outage.over()
                for v in versions.versions:
                    if v.lineage.training_job_id == job_id:
                        found: registry_pb2.ModelVersion = v
                        return found
            except NotFound:
                pass
            except Unavailable as exc:  # a registry restarting: its events wait in the stream meanwhile
                outage.ride(exc)
                continue
            if time.monotonic() > deadline:
                raise FailedPrecondition(
                    f"job {job_id} finished but no registry version appeared; is the evaluator running?"
                )
            time.sleep(next(waits))

    # -- predicting ------------------------------------------------------------------------------

    def _require_fitted(self) -> Transport:
        if self._transport is None or not self.model_name:
            raise FailedPrecondition("this model is not trained yet: call fit(dataset) first")
        return self._transport

    def predict(self, x: Any) -> npt.NDArray[Any]:
        """Predictions for rows (a DataFrame, a dict of columns, or an array in feature order)."""
        t = self._require_fitted()
        # The signature alone: a deployment serves the model without loading it here (an MLP needs torch).
        columns = _artifacts.input_columns(self._signature())
        try:
            frame = serving.as_frame(x, columns)
        except ValueError as exc:
            raise InvalidArgument(f"x: {exc}") from None
        deployment = self._deployment(t)
        if deployment is not None:
            return gateway_predict(t, deployment, frame, str(self.version))
        return self.bundle().predict(frame)

    def predict_proba(self, x: Any) -> npt.NDArray[np.float64]:
        """Class probabilities (classifiers only), from the artifact."""
        bundle = self.bundle()
        if not hasattr(bundle.model, "predict_proba"):
            raise FailedPrecondition(f"{self.algorithm} gives no probabilities")
        try:
            frame = serving.as_frame(x, _artifacts.input_columns(bundle.signature))
        except ValueError as exc:
            raise InvalidArgument(f"x: {exc}") from None  # as predict() says it
        return np.asarray(bundle.model.predict_proba(bundle.features(frame)), dtype=np.float64)

    def score(self, dataset: Dataset) -> float:
        """R² for regressors, accuracy for classifiers, on every row of ``dataset``."""
        frame = dataset.to_polars()
        predicted = self.predict(frame)
        truth = frame[self.target].to_numpy()
        if self._signature().task == "classification":
            return float(np.mean(predicted == truth))
        residual = float(np.sum((truth - predicted) ** 2))
        total = float(np.sum((truth - truth.mean()) ** 2))
        return 1.0 - residual / total if total else 0.0

    def bundle(self) -> artifacts.Bundle:
        """The trained artifact (model, signature, preprocessing), downloaded once and digest-checked.

        Raises:
            FailedPrecondition: The model cannot be loaded here: an MLP needs torch
                (``pip install 'lepton-ml[torch]'``).
        """
        if self._bundle is None:
            self._bundle = _artifacts.load_bundle(self._download(), self._keys())
            self._artifact = None
        return self._bundle

    def _signature(self) -> artifacts.Signature:
        if self._bundle is not None:
            return self._bundle.signature
        return _artifacts.signature(self._download(), self._keys())

    def _keys(self) -> TrustedKeys:
        from lepton_ai.registry import Models

        return Models(self._require_fitted())._artifact_keys()

    def _download(self) -> bytes:
        if self._artifact is None:
            from lepton_ai.registry import Models

            self._artifact = Models(self._require_fitted()).download(self.model_name, self.version)
        return self._artifact

    def _deployment(self, t: Transport) -> deployer_pb2.Deployment | None:
        deployer = deployer_pb2_grpc.DeploymentServiceStub(t.channel("deployer"))
        try:
            d = t.call("deployer", deployer.GetDeployment, deployer_pb2.GetDeploymentRequest(name=self.model_name))
        except (NotFound, LeptonError):
            return None
        if d.state != deployer_pb2.DEPLOYMENT_STATE_READY or d.lineage.model_version != self.version:
            return None
        ready: deployer_pb2.Deployment = d
        return ready

    def wait_deployed(self, timeout: float = 300.0) -> bool:
        """Waits until Triton serves this version; False if it did not within ``timeout``."""
        t = self._require_fitted()
        deadline = time.monotonic() + timeout
        waits = pauses()
        while time.monotonic() < deadline:
            if self._deployment(t) is not None:
                return True
            time.sleep(next(waits))
        return False


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _infer_target(dataset: Dataset, algorithm: str) -> str:
    if algorithm == "kmeans":
        return ""
    for name in TARGET_NAMES:
        if name in dataset.columns:
            return name
    names = " / ".join(TARGET_NAMES)
    raise InvalidArgument(f"target: the dataset has no column named {names}; say which: fit(dataset, target=...)")


def _confirm(question: str) -> bool:
    """Asks on a terminal or in a notebook; yes where nobody can answer (a pipe, a batch job)."""
    if not (sys.stdin.isatty() or _progress.in_jupyter()):
        return True
    try:
        answer = input(f"{question} [Y/n] ")
    except (EOFError, NotImplementedError):  # IPython's StdinNotImplementedError: the front end has no input box
        return True
    return answer.strip().lower() in ("", "y", "yes")


def _model(name: str, algorithm: str, doc: str) -> type[Model]:
    return type(name, (Model,), {"algorithm": algorithm, "__doc__": doc, "__module__": __name__})


LinearRegression = _model("LinearRegression", "linear_regression", "Ordinary least squares.")
Ridge = _model("Ridge", "ridge", "Least squares with an L2 penalty.")
Lasso = _model("Lasso", "lasso", "Least squares with an L1 penalty.")
ElasticNet = _model("ElasticNet", "elastic_net", "Least squares with L1 and L2 penalties.")
LogisticRegression = _model("LogisticRegression", "logistic_regression", "Linear classifier.")
DecisionTreeClassifier = _model("DecisionTreeClassifier", "decision_tree_classifier", "A decision tree.")
DecisionTreeRegressor = _model("DecisionTreeRegressor", "decision_tree_regressor", "A regression tree.")
RandomForestClassifier = _model("RandomForestClassifier", "random_forest_classifier", "Bagged trees.")
RandomForestRegressor = _model("RandomForestRegressor", "random_forest_regressor", "Bagged regression trees.")
GradientBoostingClassifier = _model(
    "GradientBoostingClassifier", "gradient_boosting_classifier", "Histogram gradient boosting."
)
GradientBoostingRegressor = _model(
    "GradientBoostingRegressor", "gradient_boosting_regressor", "Histogram gradient boosting for regression."
)
SVC = _model("SVC", "svc", "Support vector classifier.")
SVR = _model("SVR", "svr", "Support vector regression.")
KNeighborsClassifier = _model("KNeighborsClassifier", "knn_classifier", "k-nearest neighbours vote.")
KNeighborsRegressor = _model("KNeighborsRegressor", "knn_regressor", "k-nearest neighbours mean.")
GaussianNB = _model("GaussianNB", "gaussian_nb", "Gaussian naive Bayes.")
KMeans = _model("KMeans", "kmeans", "k-means clustering.")


class MLP(Model):
    """A PyTorch multi-layer perceptron; ``task`` picks classifier or regressor."""

    def __init__(self, task: str = "regression", **params: Any) -> None:
        if task not in ("regression", "classification"):
            raise InvalidArgument(f"task: expected regression or classification, got {task!r}")
        super().__init__(**params)
        self.algorithm = "mlp_classifier" if task == "classification" else "mlp_regressor"  # type: ignore[misc]


class Custom(Model):
    """A custom model registered on the trainer host (entry point ``lepton.models``)."""

    def __init__(self, entry_point: str, **params: Any) -> None:
        super().__init__(**params)
        self.algorithm = f"custom:{entry_point}"  # type: ignore[misc]


#: SDK class per platform algorithm name (a test checks it covers the whole catalogue).
BY_ALGORITHM: Mapping[str, Callable[..., Model]] = {
    cls.algorithm: cls
    for cls in (
        LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression, DecisionTreeClassifier, DecisionTreeRegressor,
        RandomForestClassifier, RandomForestRegressor, GradientBoostingClassifier, GradientBoostingRegressor,
        SVC, SVR, KNeighborsClassifier, KNeighborsRegressor, GaussianNB, KMeans,
    )
}  # fmt: skip
