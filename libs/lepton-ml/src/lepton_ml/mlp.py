"""A PyTorch multi-layer perceptron for tabular classification and regression.

The trainer calls :func:`train_mlp` with a float64 feature matrix and gets back an
:class:`MLPModel`. A model is stored as three files (see :meth:`MLPModel.to_files`):

* ``model.safetensors``: the layer weights, tensors only, so loading them never runs code;
* ``architecture.json``: everything else needed to rebuild the network (layer widths,
  task, class labels, the fitted input/target standardisation);
* ``model.onnx``: the same network for serving, with the input standardisation and
  (for regression) the target un-standardisation folded into the graph, so it maps raw
  ``features`` (FP64 ``[batch, n]``, as Triton receives them) to final outputs.

:meth:`MLPModel.from_files` reads only the first two; it never unpickles anything.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import safetensors.torch
import torch
from torch import nn

from lepton_core.errors import DataIntegrityError, FailedPrecondition, InvalidArgument, LeptonError
from lepton_ml import serving

Task = Literal["classification", "regression"]
Optimizer = Literal["adam", "sgd", "adamw"]
Device = Literal["cpu", "cuda", "auto"]

WEIGHTS_FILE: Final = "model.safetensors"
ARCHITECTURE_FILE: Final = "architecture.json"
ONNX_FILE: Final = "model.onnx"
ONNX_OPSET: Final = 17
#: Tensor names in the ONNX graph: the served input and (for regression) output of
#: :mod:`lepton_ml.serving`; a classifier's logits, which :mod:`lepton_ml.onnx_export` turns into labels.
ONNX_INPUT: Final = serving.INPUT
ONNX_OUTPUT: Final = {"classification": "logits", "regression": serving.OUTPUT}
FORMAT: Final = "lepton-mlp"
FORMAT_VERSION: Final = 1

_OPTIMIZERS: Final = ("adam", "sgd", "adamw")
_DEVICES: Final = ("cpu", "cuda", "auto")
_MAX_HIDDEN_LAYERS: Final = 16
_MAX_WIDTH: Final = 8192
_MAX_SEED: Final = 2**32 - 1
#: SGD without momentum barely moves in 100 epochs at these learning rates.
_SGD_MOMENTUM: Final = 0.9


class TrainingCancelled(LeptonError):
    """``should_stop()`` returned True: training stopped after the batch it had just run.

    Attributes:
        epoch: The 1-based epoch that was running.
        batches: How many batches had run in all epochs together.
    """

    def __init__(self, epoch: int, batches: int) -> None:
        super().__init__(f"training cancelled in epoch {epoch} after {batches} batches")
        self.epoch = epoch
        self.batches = batches


# ---------------------------------------------------------------------------------------
# Parameters


def _bad(name: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, field=f"params.{name}")


def _check_int(name: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass; "True epochs" is a caller bug, not a value.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _bad(name, f"must be an integer from {low} to {high}, got {value!r}")
    if not low <= int(value) <= high:
        raise _bad(name, f"must be from {low} to {high}, got {value}")
    return int(value)


def _check_float(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    allowed = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _bad(name, f"must be a number in {allowed}, got {value!r}")
    number = float(value)
    too_low = number <= low if low_open else number < low
    # NaN fails every comparison, so test it explicitly rather than let it through.
    if math.isnan(number) or too_low or number > high:
        raise _bad(name, f"must be in {allowed}, got {value}")
    return number


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value.strip().lower()


def _check_layers(value: object) -> list[int]:
    allowed = f"a list of up to {_MAX_HIDDEN_LAYERS} layer widths, each from 1 to {_MAX_WIDTH}"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _bad("hidden_layers", f"must be {allowed}, got {value!r}")
    if len(value) > _MAX_HIDDEN_LAYERS:
        raise _bad("hidden_layers", f"must be {allowed}, got {len(value)} layers")
    widths = []
    for width in value:
        if isinstance(width, bool) or not isinstance(width, int | np.integer) or not 1 <= int(width) <= _MAX_WIDTH:
            raise _bad("hidden_layers", f"must be {allowed}, got {list(value)!r}")
        widths.append(int(width))
    return widths


@dataclass(frozen=True)
class MLPParams:
    """Hyper-parameters of :func:`train_mlp`, validated on construction.

    Any out-of-range value raises :class:`~lepton_core.errors.InvalidArgument` whose
    ``field`` is ``params.<name>`` and whose message states the allowed range.

    Attributes:
        hidden_layers: Widths of the hidden layers, input side first (ReLU after each);
            empty gives a linear (or logistic) model.
        learning_rate: Optimiser step size, in (0, 1].
        epochs: Most passes over the training rows, 1 to 10000.
        batch_size: Rows per gradient step, 1 to 65536.
        dropout: Drop probability after each hidden layer, in [0, 0.9].
        optimizer: ``adam``, ``adamw`` or ``sgd`` (with momentum 0.9).
        weight_decay: L2 penalty (decoupled for ``adamw``), in [0, 1].
        early_stopping_patience: Epochs without a better validation loss before
            stopping, 0 to 1000; 0 turns early stopping off.
        validation_fraction: Share of rows held out for validation, in [0, 0.5];
            0 turns validation (and so early stopping) off.
        seed: Seeds weight initialisation, dropout, the validation split and shuffling.
        device: ``cpu``, ``cuda``, or ``auto`` (CUDA when available).
    """

    hidden_layers: list[int] = field(default_factory=lambda: [64, 32])
    learning_rate: float = 1e-3
    epochs: int = 100
    batch_size: int = 32
    dropout: float = 0.0
    optimizer: Optimizer = "adam"
    weight_decay: float = 0.0
    early_stopping_patience: int = 10
    validation_fraction: float = 0.1
    seed: int = 0
    device: Device = "auto"

    def __post_init__(self) -> None:
        # Frozen: normalised values go in through object.__setattr__.
        checked: dict[str, object] = {
            "hidden_layers": _check_layers(self.hidden_layers),
            "learning_rate": _check_float("learning_rate", self.learning_rate, 0.0, 1.0, low_open=True),
            "epochs": _check_int("epochs", self.epochs, 1, 10_000),
            "batch_size": _check_int("batch_size", self.batch_size, 1, 65_536),
            "dropout": _check_float("dropout", self.dropout, 0.0, 0.9),
            "optimizer": _check_choice("optimizer", self.optimizer, _OPTIMIZERS),
            "weight_decay": _check_float("weight_decay", self.weight_decay, 0.0, 1.0),
            "early_stopping_patience": _check_int("early_stopping_patience", self.early_stopping_patience, 0, 1000),
            "validation_fraction": _check_float("validation_fraction", self.validation_fraction, 0.0, 0.5),
            "seed": _check_int("seed", self.seed, 0, _MAX_SEED),
            "device": _check_choice("device", self.device, _DEVICES),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_strings(cls, mapping: Mapping[str, str]) -> MLPParams:
        """Parses string hyper-parameters (as they arrive in a training request).

        Args:
            mapping: Parameter name to its text, e.g. ``{"hidden_layers": "64,32",
                "epochs": "50"}``. Names left out keep their defaults.

        Returns:
            The validated parameters.

        Raises:
            InvalidArgument: An unknown name, text that does not parse, or a value out
                of range; ``field`` is ``params.<name>``.
        """
        parsers: dict[str, Callable[[str], object]] = {
            "hidden_layers": _parse_layers,
            "learning_rate": float,
            "epochs": int,
            "batch_size": int,
            "dropout": float,
            "optimizer": str,
            "weight_decay": float,
            "early_stopping_patience": int,
            "validation_fraction": float,
            "seed": int,
            "device": str,
        }
        values: dict[str, Any] = {}
        for name, text in mapping.items():
            parse = parsers.get(name)
            if parse is None:
                raise _bad(name, f"unknown MLP parameter; known: {', '.join(parsers)}")
            try:
                values[name] = parse(text.strip())
            except ValueError:
                kind = {_parse_layers: "comma-separated integers", int: "an integer", float: "a number"}[parse]
                raise _bad(name, f"must be {kind}, got {text!r}") from None
        return cls(**values)

    def resolved_device(self) -> torch.device:
        """The device training runs on.

        Raises:
            FailedPrecondition: ``cuda`` was asked for but this machine has none.
        """
        if self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise FailedPrecondition("CUDA was requested but is not available here", field="params.device")
        return torch.device("cuda", torch.cuda.current_device())


def _parse_layers(text: str) -> list[int]:
    # "" is a valid request for no hidden layers (a linear model).
    return [int(part) for part in text.split(",")] if text else []


# ---------------------------------------------------------------------------------------
# Network


class _Net(nn.Module):
    """Linear layers with ReLU and dropout between them.

    The linear layers sit in a ModuleList and the activations are applied in forward,
    so the weight names (``linears.<i>.weight``) do not depend on the dropout setting.
    """

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int, dropout: float) -> None:
        super().__init__()
        widths = [n_in, *hidden, n_out]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.linears
        for layer in hidden:
            x = self.dropout(torch.relu(layer(x)))
        out: torch.Tensor = last(x)
        return out


class _Serving(nn.Module):
    """Raw FP64 features to final outputs: what ``predict`` runs and ONNX exports.

    Standardising in float64 before casting to the network's float32 keeps large raw
    features from losing precision; regression outputs are un-standardised in float64.
    """

    in_mean: torch.Tensor
    in_std: torch.Tensor
    out_mean: torch.Tensor
    out_std: torch.Tensor

    def __init__(self, net: _Net, arch: _Architecture) -> None:
        super().__init__()
        self.net = net
        self.regression = arch.task == "regression"
        self.register_buffer("in_mean", torch.tensor(arch.input_mean, dtype=torch.float64))
        self.register_buffer("in_std", torch.tensor(arch.input_std, dtype=torch.float64))
        self.register_buffer("out_mean", torch.tensor(arch.target_mean, dtype=torch.float64))
        self.register_buffer("out_std", torch.tensor(arch.target_std, dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = ((features - self.in_mean) / self.in_std).to(torch.float32)
        logits: torch.Tensor = self.net(x)
        out = logits.to(torch.float64)
        if self.regression:
            out = out * self.out_std + self.out_mean
        return out


@dataclass(frozen=True)
class _Architecture:
    """The contents of ``architecture.json`` (everything but the weights)."""

    task: Task
    n_features: int
    hidden_layers: list[int]
    dropout: float
    classes: list[Any]
    classes_dtype: str
    input_mean: list[float]
    input_std: list[float]
    target_mean: float
    target_std: float

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "n_features": self.n_features,
            "hidden_layers": self.hidden_layers,
            "activation": "relu",
            "dropout": self.dropout,
            "classes": self.classes,
            "classes_dtype": self.classes_dtype,
            "input_mean": self.input_mean,
            "input_std": self.input_std,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "onnx": {
                "opset": ONNX_OPSET,
                "input": ONNX_INPUT,
                "output": ONNX_OUTPUT[self.task],
                "dtype": "float64",
            },
            "torch_version": torch.__version__,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Architecture:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} v{doc.get('format_version')!r}")
            if doc.get("activation") != "relu" or doc["task"] not in ONNX_OUTPUT:
                raise ValueError(f"activation {doc.get('activation')!r}, task {doc['task']!r}")
            arch = cls(
                task=doc["task"],
                n_features=int(doc["n_features"]),
                hidden_layers=[int(w) for w in doc["hidden_layers"]],
                dropout=float(doc["dropout"]),
                classes=list(doc["classes"]),
                classes_dtype=str(doc["classes_dtype"]),
                input_mean=[float(v) for v in doc["input_mean"]],
                input_std=[float(v) for v in doc["input_std"]],
                target_mean=float(doc["target_mean"]),
                target_std=float(doc["target_std"]),
            )
            if not len(arch.input_mean) == len(arch.input_std) == arch.n_features:
                raise ValueError("input_mean/input_std length differs from n_features")
            # Only numeric and bool label dtypes are written; refuse anything else (e.g. "O").
            if np.dtype(arch.classes_dtype).kind not in "biuf":
                raise ValueError(f"classes_dtype {arch.classes_dtype!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataIntegrityError(f"{ARCHITECTURE_FILE} is not a Lepton MLP description: {exc}") from exc
        return arch


# ---------------------------------------------------------------------------------------
# Model


class MLPModel:
    """A trained MLP: predicts on raw float64 features, saves to and loads from files.

    Attributes:
        task: ``classification`` or ``regression``.
        n_features_in_: Number of input columns.
        classes_: The class labels (sorted) for classification; ``None`` for regression.
        history: One :class:`EpochReport` per epoch run (empty for a loaded model).
        best_epoch: The epoch whose weights the model holds (``None`` when loaded).
    """

    #: The network computes in float32 (inputs and outputs are float64): two machines, or a
    #: CPU and a GPU, sum in different orders and agree to float32's precision, not float64's.
    compute_dtype: Final = "float32"

    def __init__(self, net: _Net, arch: _Architecture, history: Sequence[EpochReport] = ()) -> None:
        self._arch = arch
        # Predictions run in eval mode (dropout off), on CPU unless moved (to_device).
        self._serving = _Serving(net.cpu(), arch).eval()
        self.device = torch.device("cpu")
        self.task: Task = arch.task
        self.n_features_in_ = arch.n_features
        self.classes_: npt.NDArray[Any] | None = (
            np.asarray(arch.classes, dtype=arch.classes_dtype) if arch.task == "classification" else None
        )
        self.history = list(history)
        self.best_epoch: int | None = None

    def _outputs(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        features = np.asarray(x, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != self.n_features_in_:
            raise InvalidArgument(
                f"expected a [rows, {self.n_features_in_}] matrix, got shape {features.shape}", field="x"
            )
        with torch.inference_mode():
            out: npt.NDArray[np.float64] = self._serving(torch.from_numpy(features).to(self.device)).cpu().numpy()
        return out

    def to_device(self, device: str | torch.device) -> MLPModel:
        """Runs predictions on ``device`` from now on (``cuda:0`` on a GPU serving host); returns self.

        Inputs and outputs stay float64 numpy arrays on the host; only the network moves.
        """
        self.device = torch.device(device)
        self._serving.to(self.device)
        return self

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[Any]:
        """Class labels (classification) or target values (regression) for raw features.

        Args:
            x: Float matrix ``[rows, n_features_in_]``, unstandardised.

        Returns:
            ``[rows]`` labels drawn from ``classes_``, or float64 predictions.
        """
        out = self._outputs(x)
        if self.classes_ is not None:
            labels: npt.NDArray[Any] = self.classes_[out.argmax(axis=1)]
            return labels
        return out[:, 0]

    def predict_proba(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Class probabilities ``[rows, len(classes_)]``, columns in ``classes_`` order.

        Raises:
            FailedPrecondition: The model is a regression model.
        """
        if self.classes_ is None:
            raise FailedPrecondition("predict_proba needs a classification model")
        logits = self._outputs(x)
        # Softmax in float64 with the max subtracted, so large logits do not overflow.
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        proba: npt.NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
        return proba

    def to_files(self) -> dict[str, bytes]:
        """The model as ``model.safetensors``, ``architecture.json`` and ``model.onnx``.

        Raises:
            RuntimeError: ``torch.onnx.export`` failed (the message says why).
        """
        weights = {name: t.detach().cpu().contiguous() for name, t in self._serving.net.state_dict().items()}
        return {
            WEIGHTS_FILE: safetensors.torch.save(weights, metadata={"format": FORMAT}),
            ARCHITECTURE_FILE: self._arch.to_json(),
            ONNX_FILE: self.to_onnx(),
        }

    def to_onnx(self) -> bytes:
        """The serving graph (standardisation included) as ONNX bytes, opset 17.

        Input ``features`` FP64 ``[batch, n_features]``; output ``logits`` FP64
        ``[batch, n_classes]`` or ``prediction`` FP64 ``[batch, 1]``; the batch axis is
        dynamic.
        """
        example = torch.zeros(2, self.n_features_in_, dtype=torch.float64, device=self.device)
        output = ONNX_OUTPUT[self.task]
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            # The default (dynamo) exporter needs onnxscript, which Lepton does not ship;
            # the TorchScript exporter handles this static graph fine but warns that it
            # is deprecated on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                self._serving,
                (example,),
                path := Path(tmp, ONNX_FILE),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=[ONNX_INPUT],
                output_names=[output],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, output: {0: "batch"}},
            )
            return path.read_bytes()

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> MLPModel:
        """Rebuilds a model from ``model.safetensors`` and ``architecture.json``.

        ``model.onnx`` is ignored. Nothing is unpickled: safetensors holds raw tensors.

        Raises:
            DataIntegrityError: A file is missing, malformed, or the weights do not fit
                the described architecture.
        """
        missing = [name for name in (WEIGHTS_FILE, ARCHITECTURE_FILE) if name not in files]
        if missing:
            raise DataIntegrityError(f"MLP model files missing: {', '.join(missing)}")
        arch = _Architecture.from_json(files[ARCHITECTURE_FILE])
        net = _Net(arch.n_features, arch.hidden_layers, arch.n_outputs, arch.dropout)
        try:
            net.load_state_dict(safetensors.torch.load(files[WEIGHTS_FILE]), strict=True)
        except Exception as exc:  # safetensors raises its own error type on bad bytes
            raise DataIntegrityError(f"{WEIGHTS_FILE} does not fit {ARCHITECTURE_FILE}: {exc}") from exc
        return cls(net, arch)


# ---------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class EpochReport:
    """Progress after one epoch.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: Mean training loss over the epoch's rows (cross-entropy, or MSE on
            the standardised target).
        val_loss: The same loss on the validation rows; ``None`` without validation.
        val_metric: Validation accuracy (classification) or RMSE in target units
            (regression); ``None`` without validation.
        seconds: Wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    val_metric: float | None
    seconds: float


@contextmanager
def _private_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seeds torch for one training without leaving the caller's global RNG changed."""
    # Fork only the device in use: forking every CUDA device is slow and warns.
    devices = [device.index] if device.type == "cuda" and device.index is not None else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def _check_data(x: npt.NDArray[Any], y: npt.NDArray[Any], task: str) -> tuple[npt.NDArray[np.float64], Any]:
    if task not in ONNX_OUTPUT:
        raise InvalidArgument(f"must be classification or regression, got {task!r}", field="task")
    features = np.asarray(x, dtype=np.float64)
    target = np.asarray(y)
    if features.ndim != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise InvalidArgument(f"must be a [rows >= 2, columns >= 1] matrix, got shape {features.shape}", field="x")
    if not np.isfinite(features).all():
        raise InvalidArgument("holds NaN or infinite values; impute them first", field="x")
    if target.ndim != 1 or target.shape[0] != features.shape[0]:
        raise InvalidArgument(f"must be a vector of {features.shape[0]} values, got shape {target.shape}", field="y")
    if target.dtype.kind not in "biuf":
        raise InvalidArgument(f"must be numeric, got dtype {target.dtype}", field="y")
    if target.dtype.kind == "f" and not np.isfinite(target).all():
        raise InvalidArgument("holds NaN or infinite values", field="y")
    return features, target


def train_mlp(
    x: npt.NDArray[Any],
    y: npt.NDArray[Any],
    task: Task,
    params: MLPParams,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MLPModel:
    """Trains an MLP; on CPU the same data, parameters and seed give the same model.

    Args:
        x: Float feature matrix ``[rows, features]``; standardised internally with the
            training rows' mean and standard deviation (kept in the model).
        y: ``[rows]`` targets: sortable numeric class labels, or regression values
            (standardised internally and un-standardised on predict).
        task: ``classification`` (cross-entropy) or ``regression`` (MSE).
        params: Hyper-parameters.
        on_epoch: Called after every epoch with its :class:`EpochReport`.
        should_stop: Polled after every batch; True cancels training.

    Returns:
        The trained model. With validation and early stopping on, it holds the weights
        of the epoch with the lowest validation loss.

    Raises:
        InvalidArgument: Bad data (``field`` ``x``, ``y`` or ``task``).
        FailedPrecondition: ``device="cuda"`` on a machine without CUDA.
        TrainingCancelled: ``should_stop()`` returned True.
    """
    features, target = _check_data(x, y, task)
    device = params.resolved_device()
    rng = np.random.default_rng(params.seed)
    n_rows = features.shape[0]

    # Validation split first, so standardisation statistics come from training rows only.
    n_val = round(n_rows * params.validation_fraction)
    if n_val >= n_rows:
        n_val = 0
    order = rng.permutation(n_rows)
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])

    in_mean = features[train_rows].mean(axis=0)
    in_std = features[train_rows].std(axis=0)
    # A constant column would divide by zero; it carries no signal, so leave it centred.
    in_std = np.where(in_std > 0, in_std, 1.0)
    x_std = ((features - in_mean) / in_std).astype(np.float32)

    if task == "classification":
        classes, labels = np.unique(target, return_inverse=True)
        if len(classes) < 2:
            raise InvalidArgument(f"needs at least 2 classes, got {len(classes)}", field="y")
        y_tensor = torch.from_numpy(labels.astype(np.int64))
        t_mean, t_std = 0.0, 1.0
        loss_fn: nn.Module = nn.CrossEntropyLoss()
        n_out = len(classes)
    else:
        values = target.astype(np.float64)
        classes = np.empty(0, dtype=np.float64)
        t_mean = float(values[train_rows].mean())
        t_std = float(values[train_rows].std()) or 1.0
        y_tensor = torch.from_numpy(((values - t_mean) / t_std).astype(np.float32)).unsqueeze(1)
        loss_fn = nn.MSELoss()
        n_out = 1

    arch = _Architecture(
        task=task,
        n_features=features.shape[1],
        hidden_layers=list(params.hidden_layers),
        dropout=params.dropout,
        classes=classes.tolist() if task == "classification" else [],
        classes_dtype=str(classes.dtype),
        input_mean=in_mean.tolist(),
        input_std=in_std.tolist(),
        target_mean=t_mean,
        target_std=t_std,
    )
    x_tensor = torch.from_numpy(x_std)
    # The data is small next to the model's working set, so it all goes on the device once.
    x_train, y_train = x_tensor[train_rows].to(device), y_tensor[train_rows].to(device)
    x_val, y_val = x_tensor[val_rows].to(device), y_tensor[val_rows].to(device)
    validate = n_val > 0
    early_stopping = validate and params.early_stopping_patience > 0

    with _private_rng(device, params.seed):
        net = _Net(arch.n_features, arch.hidden_layers, n_out, params.dropout).to(device)
        optimizer = _optimizer(net, params)
        history: list[EpochReport] = []
        best_loss, best_epoch, best_state = math.inf, 0, None
        batches = 0
        n_train = len(train_rows)
        for epoch in range(1, params.epochs + 1):
            started = time.perf_counter()
            net.train()
            total = 0.0
            shuffled = torch.from_numpy(rng.permutation(n_train)).to(device)
            for start in range(0, n_train, params.batch_size):
                idx = shuffled[start : start + params.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                batches += 1
                if should_stop is not None and should_stop():
                    raise TrainingCancelled(epoch, batches)
            val_loss, val_metric = _evaluate(net, loss_fn, x_val, y_val, task, t_std) if validate else (None, None)
            report = EpochReport(epoch, total / n_train, val_loss, val_metric, time.perf_counter() - started)
            history.append(report)
            if on_epoch is not None:
                on_epoch(report)
            if early_stopping and val_loss is not None:
                if val_loss < best_loss:
                    best_loss, best_epoch = val_loss, epoch
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                elif epoch - best_epoch >= params.early_stopping_patience:
                    break

    if best_state is not None:
        net.load_state_dict(best_state)
    model = MLPModel(net, arch, history)
    model.best_epoch = best_epoch if best_state is not None else len(history)
    return model


def _optimizer(net: nn.Module, params: MLPParams) -> torch.optim.Optimizer:
    lr, decay = params.learning_rate, params.weight_decay
    if params.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=_SGD_MOMENTUM, weight_decay=decay)
    if params.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.Adam(net.parameters(), lr=lr, weight_decay=decay)


def _evaluate(
    net: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, t_std: float
) -> tuple[float, float]:
    """Validation loss and metric (accuracy, or RMSE in target units) with dropout off."""
    net.eval()
    with torch.inference_mode():
        out = net(x)
        loss = float(loss_fn(out, y).item())
    if task == "classification":
        return loss, float((out.argmax(dim=1) == y).float().mean().item())
    # The loss is MSE of the standardised target; scale back to report RMSE in target units.
    return loss, math.sqrt(loss) * t_std
