"""The algorithms the trainer runs, with typed, range-checked hyper-parameters.

The catalogue is data: each entry names its scikit-learn estimator, task and
parameters (type, default, range or choices), and is served by ListAlgorithms so
the SDK and CLI validate before submitting. Estimators that take a ``random_state``
get the job's seed, so a job is reproducible and matches a direct scikit-learn fit.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from sklearn import cluster, ensemble, linear_model, naive_bayes, neighbors, svm, tree

from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_ml import artifacts
from lepton_ml.mlp import EpochReport, MLPModel, MLPParams, train_mlp

REGRESSION, CLASSIFICATION, CLUSTERING = "regression", "classification", "clustering"
NONE_WORDS = ("none", "null", "")


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default and allowed range or choices."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    description: str = ""

    @property
    def type_name(self) -> str:
        return "choice" if self.choices else self.kind.__name__

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "text" + (" or none" if self.nullable else "")
        if self.low is None and self.high is None:
            return f"a {self.kind.__name__}" + (" or none" if self.nullable else "")
        span = f"a {self.kind.__name__} in [{_num(self.low)}, {_num(self.high)}]"
        return span + (" or none" if self.nullable else "")

    def parse(self, name: str, raw: str) -> Any:
        field_name = f"params.{name}"
        text = raw.strip()
        if self.nullable and text.lower() in NONE_WORDS:
            return None
        if self.choices:
            if text not in self.choices:
                raise InvalidArgument(f"got {shown(raw)}; expected {self.allowed()}", field=field_name)
            return text
        try:
            if self.kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                return text.lower() in ("true", "1")
            value: Any = self.kind(text)
        except ValueError:
            raise InvalidArgument(f"got {shown(raw)}; expected {self.allowed()}", field=field_name) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"got {shown(raw)}; expected {self.allowed()}", field=field_name)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidArgument(f"{value} is outside the allowed range: expected {self.allowed()}", field=field_name)
        return value


def _num(value: float | None) -> str:
    if value is None:
        return "-inf"
    return f"{value:g}"


@dataclass(frozen=True)
class Algorithm:
    name: str
    task: str
    build: Callable[..., Any]
    params: Mapping[str, Param] = field(default_factory=dict)
    seeded: bool = False
    description: str = ""
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def parse(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """Validated parameter values (defaults filled in); InvalidArgument names the bad one."""
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise InvalidArgument(
                f"{self.name} has no parameter {shown(unknown[0])}; its parameters: {known}",
                field=f"params.{unknown[0]}",
            )
        values = {k: p.default for k, p in self.params.items()}
        values.update({k: self.params[k].parse(k, v) for k, v in raw.items()})
        return values

    def make(self, raw: Mapping[str, str], seed: int = 0) -> tuple[Any, dict[str, Any]]:
        """The estimator for validated ``raw`` parameters, and the parameters used."""
        values = self.parse(raw)
        extra = {"random_state": seed} if self.seeded else {}
        return self.build(**values, **self.fixed, **extra), values


# Shared parameter shapes.
_FIT_INTERCEPT = Param(bool, True, description="Fit an intercept term.")
_ALPHA = Param(float, 1.0, 0.0, 1e9, description="Regularisation strength.")
_MAX_ITER = Param(int, 1000, 1, 1_000_000, description="Most solver iterations.")
_C = Param(float, 1.0, 1e-9, 1e9, description="Inverse regularisation strength.")
_MAX_DEPTH = Param(int, None, 1, 1000, nullable=True, description="Deepest tree; none grows until pure.")
_MIN_SPLIT = Param(int, 2, 2, 1_000_000, description="Fewest rows to split a node.")
_MIN_LEAF = Param(int, 1, 1, 1_000_000, description="Fewest rows in a leaf.")
_N_ESTIMATORS = Param(int, 100, 1, 10_000, description="Trees in the forest.")
_MAX_FEATURES = Param(str, "sqrt", choices=("sqrt", "log2", "all"), description="Features tried per split.")
_KERNEL = Param(str, "rbf", choices=("linear", "rbf", "poly", "sigmoid"), description="Kernel.")
_GAMMA = Param(str, "scale", choices=("scale", "auto"), description="Kernel coefficient rule.")
_DEGREE = Param(int, 3, 1, 10, description="Degree of the poly kernel.")
_N_NEIGHBORS = Param(int, 5, 1, 10_000, description="Neighbours that vote.")
_WEIGHTS = Param(str, "uniform", choices=("uniform", "distance"), description="How neighbours are weighted.")
_P = Param(int, 2, 1, 10, description="Minkowski power (1 Manhattan, 2 Euclidean).")
_HGB = {
    "learning_rate": Param(float, 0.1, 1e-6, 1.0, description="Shrinkage per iteration."),
    "max_iter": Param(int, 100, 1, 10_000, description="Boosting iterations."),
    "max_depth": _MAX_DEPTH,
    "max_leaf_nodes": Param(int, 31, 2, 100_000, description="Most leaves per tree."),
    "min_samples_leaf": Param(int, 20, 1, 1_000_000, description="Fewest rows in a leaf."),
    "l2_regularization": Param(float, 0.0, 0.0, 1e6, description="L2 penalty on leaf values."),
}


class MLPEstimator:
    """The torch MLP behind the scikit-learn ``fit``/``predict`` the trainer calls.

    ``on_epoch`` (set by the trainer) receives each epoch's report, which becomes the
    job's progress and ``training.progress`` events.
    """

    def __init__(self, task: str, random_state: int = 0, **values: Any) -> None:
        self.task = task
        self.params = MLPParams.from_strings({k: str(v) for k, v in values.items()} | {"seed": str(random_state)})
        self.on_epoch: Callable[[EpochReport], None] | None = None
        self.threads = int(os.environ.get("LEPTON_TORCH_THREADS", "1"))
        self.model_: MLPModel | None = None

    def fit(self, x: Any, y: Any) -> MLPEstimator:
        # torch's intra-op threads contend with everything else on the host (an MLP took
        # 30-46 s instead of 4 s on a busy 2-core machine). Set only around this fit:
        # torch's setting is process-wide and would slow scikit-learn's OpenMP fits too.
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self._fit(x, y)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, x: Any, y: Any) -> MLPEstimator:
        task: Literal["classification", "regression"] = (
            "classification" if self.task == CLASSIFICATION else "regression"
        )
        self.model_ = train_mlp(x, y, task, self.params, on_epoch=self.on_epoch)
        return self

    def predict(self, x: Any) -> Any:
        assert self.model_ is not None, "fit first"
        return self.model_.predict(x)


def _mlp(task: str) -> Callable[..., Any]:
    def build(**values: Any) -> MLPEstimator:
        return MLPEstimator(task, **values)

    return build


_MLP = {
    "hidden_layers": Param(str, "64,32", description="Widths of the hidden layers, comma-separated."),
    "learning_rate": Param(float, 1e-3, 1e-9, 1.0, description="Optimiser step size."),
    "epochs": Param(int, 100, 1, 10_000, description="Most passes over the training rows."),
    "batch_size": Param(int, 32, 1, 65_536, description="Rows per gradient step."),
    "dropout": Param(float, 0.0, 0.0, 0.9, description="Dropout after each hidden layer."),
    "optimizer": Param(str, "adam", choices=("adam", "adamw", "sgd"), description="Optimiser."),
    "weight_decay": Param(float, 0.0, 0.0, 1.0, description="L2 weight decay."),
    "early_stopping_patience": Param(
        int, 10, 0, 1000, description="Epochs without improvement before stopping (0: off)."
    ),
    "validation_fraction": Param(float, 0.1, 0.0, 0.5, description="Training rows held for early stopping."),
    "device": Param(
        str, "cpu", choices=("auto", "cpu", "cuda"), description="Default: the trainer's LEPTON_TRAINER_DEVICE (cpu)."
    ),
}


def _forest(cls: Callable[..., Any]) -> Callable[..., Any]:
    def build(max_features: str, **kw: Any) -> Any:
        return cls(max_features=None if max_features == "all" else max_features, **kw)

    return build


_ALGORITHMS = (
    Algorithm("linear_regression", REGRESSION, linear_model.LinearRegression, {"fit_intercept": _FIT_INTERCEPT},
              description="Ordinary least squares."),
    Algorithm("ridge", REGRESSION, linear_model.Ridge, {"alpha": _ALPHA, "fit_intercept": _FIT_INTERCEPT},
              description="Least squares with an L2 penalty."),
    Algorithm("lasso", REGRESSION, linear_model.Lasso,
              {"alpha": Param(float, 1.0, 1e-12, 1e9, description="L1 strength."), "max_iter": _MAX_ITER,
               "fit_intercept": _FIT_INTERCEPT}, seeded=True, description="Least squares with an L1 penalty."),
    Algorithm("elastic_net", REGRESSION, linear_model.ElasticNet,
              {"alpha": Param(float, 1.0, 1e-12, 1e9, description="Penalty strength."),
               "l1_ratio": Param(float, 0.5, 0.0, 1.0, description="Share of L1 in the penalty."),
               "max_iter": _MAX_ITER, "fit_intercept": _FIT_INTERCEPT}, seeded=True,
              description="Least squares with L1 and L2 penalties."),
    Algorithm("logistic_regression", CLASSIFICATION, linear_model.LogisticRegression,
              {"C": _C, "max_iter": _MAX_ITER,
               "solver": Param(str, "lbfgs", choices=("lbfgs", "liblinear", "newton-cg", "saga"),
                               description="Optimisation algorithm.")},
              seeded=True, description="Linear classifier with a logistic link."),
    Algorithm("decision_tree_classifier", CLASSIFICATION, tree.DecisionTreeClassifier,
              {"max_depth": _MAX_DEPTH, "min_samples_split": _MIN_SPLIT, "min_samples_leaf": _MIN_LEAF,
               "criterion": Param(str, "gini", choices=("gini", "entropy", "log_loss"), description="Split quality.")},
              seeded=True, description="A single decision tree."),
    Algorithm("decision_tree_regressor", REGRESSION, tree.DecisionTreeRegressor,
              {"max_depth": _MAX_DEPTH, "min_samples_split": _MIN_SPLIT, "min_samples_leaf": _MIN_LEAF,
               "criterion": Param(str, "squared_error", choices=("squared_error", "friedman_mse", "absolute_error"),
                                  description="Split quality.")},
              seeded=True, description="A single regression tree."),
    Algorithm("random_forest_classifier", CLASSIFICATION, _forest(ensemble.RandomForestClassifier),
              {"n_estimators": _N_ESTIMATORS, "max_depth": _MAX_DEPTH, "min_samples_leaf": _MIN_LEAF,
               "max_features": _MAX_FEATURES}, seeded=True, fixed={"n_jobs": 1},
              description="Bagged decision trees."),
    Algorithm("random_forest_regressor", REGRESSION, _forest(ensemble.RandomForestRegressor),
              {"n_estimators": _N_ESTIMATORS, "max_depth": _MAX_DEPTH, "min_samples_leaf": _MIN_LEAF,
               "max_features": Param(str, "all", choices=("sqrt", "log2", "all"), description="Features per split.")},
              seeded=True, fixed={"n_jobs": 1}, description="Bagged regression trees."),
    Algorithm("gradient_boosting_classifier", CLASSIFICATION, ensemble.HistGradientBoostingClassifier, _HGB,
              seeded=True, description="Histogram gradient boosting (scikit-learn's HistGradientBoosting)."),
    Algorithm("gradient_boosting_regressor", REGRESSION, ensemble.HistGradientBoostingRegressor, _HGB,
              seeded=True, description="Histogram gradient boosting for regression."),
    Algorithm("svc", CLASSIFICATION, svm.SVC,
              {"C": _C, "kernel": _KERNEL, "gamma": _GAMMA, "degree": _DEGREE}, seeded=True,
              description="Support vector classifier, linear or kernel."),
    Algorithm("svr", REGRESSION, svm.SVR,
              {"C": _C, "kernel": _KERNEL, "gamma": _GAMMA, "degree": _DEGREE,
               "epsilon": Param(float, 0.1, 0.0, 1e6, description="Width of the no-penalty tube.")},
              description="Support vector regression, linear or kernel."),
    Algorithm("knn_classifier", CLASSIFICATION, neighbors.KNeighborsClassifier,
              {"n_neighbors": _N_NEIGHBORS, "weights": _WEIGHTS, "p": _P}, description="k-nearest neighbours vote."),
    Algorithm("knn_regressor", REGRESSION, neighbors.KNeighborsRegressor,
              {"n_neighbors": _N_NEIGHBORS, "weights": _WEIGHTS, "p": _P}, description="k-nearest neighbours mean."),
    Algorithm("gaussian_nb", CLASSIFICATION, naive_bayes.GaussianNB,
              {"var_smoothing": Param(float, 1e-9, 0.0, 1.0, description="Variance added for stability.")},
              description="Gaussian naive Bayes."),
    Algorithm("mlp_classifier", CLASSIFICATION, _mlp(CLASSIFICATION), _MLP, seeded=True,
              description="PyTorch multi-layer perceptron (softmax output)."),
    Algorithm("mlp_regressor", REGRESSION, _mlp(REGRESSION), _MLP, seeded=True,
              description="PyTorch multi-layer perceptron (linear output)."),
    Algorithm("kmeans", CLUSTERING, cluster.KMeans,
              {"n_clusters": Param(int, 8, 1, 10_000, description="Clusters to find."),
               "n_init": Param(int, 10, 1, 1000, description="Restarts with new centroids."),
               "max_iter": Param(int, 300, 1, 1_000_000, description="Most iterations per restart.")},
              seeded=True, description="k-means clustering (no target)."),
)  # fmt: skip

_TASK_OF = {"regressor": REGRESSION, "classifier": CLASSIFICATION, "clusterer": CLUSTERING}


def custom_algorithm(name: str, cls: type) -> Algorithm:
    """An Algorithm for a registered custom estimator class.

    Parameters come from ``__init__``'s signature, typed by their defaults; the task
    from scikit-learn's estimator type (a ``RegressorMixin`` is a regressor).
    """
    params: dict[str, Param] = {}
    seeded = False
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name == "random_state":
            seeded = True
            continue
        default = None if p.default is inspect.Parameter.empty else p.default
        kind = type(default) if isinstance(default, bool | int | float | str) else str
        params[p.name] = Param(kind, default, nullable=default is None, description=f"{cls.__name__}.{p.name}")
    tags = getattr(cls, "__sklearn_tags__", None)
    estimator_type = getattr(cls, "_estimator_type", None)
    if estimator_type is None and tags is not None:
        try:
            estimator_type = tags(cls()).estimator_type
        except Exception:
            estimator_type = None
    task = _TASK_OF.get(str(estimator_type), REGRESSION)
    doc = (cls.__doc__ or "").strip().splitlines()
    return Algorithm(f"custom:{name}", task, cls, params, seeded=seeded, description=doc[0] if doc else cls.__name__)


CATALOGUE: dict[str, Algorithm] = {a.name: a for a in _ALGORITHMS} | {
    f"custom:{name}": custom_algorithm(name, cls) for name, cls in artifacts.custom_model_classes().items()
}


def algorithm(name: str) -> Algorithm:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown algorithm {shown(name)}; available: {', '.join(sorted(CATALOGUE))}", field="algorithm"
        ) from None
