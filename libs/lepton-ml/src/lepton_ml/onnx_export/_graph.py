"""What every part of the ONNX export shares: tensor names, opsets and a small graph builder."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lepton_ml import serving

#: The graph's input, as the platform's Triton model takes it (:data:`lepton_ml.serving.INPUT`).
INPUT_NAME: Final = serving.INPUT
#: The graph's first output, one value per row (:data:`lepton_ml.serving.OUTPUT`).
PREDICTION: Final = serving.OUTPUT
#: The second output of classifiers that have ``predict_proba``; only ONNX graphs have it.
PROBABILITIES: Final = "probabilities"
#: Default-domain opset: every onnxruntime since 1.13 runs it.
OPSET: Final = 17
#: ``ai.onnx.ml`` opset (tree ensembles, SVMs, label extraction).
ML_OPSET: Final = 3

#: Names Lepton adds to a graph start with this, clear of skl2onnx's and torch's.
PREFIX: Final = "lepton_"
#: The folded chain's output: the estimator's features, FP64.
FRONT_OUT: Final = f"{PREFIX}features_f64"
NP_OF: Final[dict[int, Any]] = {
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT: np.float32,
    TensorProto.INT64: np.int64,
}


class Refused(Exception):
    """Internal: the conversion cannot go on; the message is the Conversion's reason."""


class Graph:
    """Nodes and constants for the preprocessing front (and the output tails)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._consts: dict[tuple[int, tuple[int, ...], bytes], str] = {}

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, elem_type: int = TensorProto.DOUBLE) -> str:
        array = np.asarray(value, dtype=np.bool_ if elem_type == TensorProto.BOOL else NP_OF[elem_type])
        key = (elem_type, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh("c")
            self.initializers.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def op(self, op_type: str, *inputs: str, output: str = "", **attrs: Any) -> str:
        out = output or self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def session_options() -> Any:
    """onnxruntime options for the checks: one thread, errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def first_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``, for a reason that fits on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
