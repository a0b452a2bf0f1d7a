"""Estimator graphs: the model itself in ONNX, with Lepton's outputs, and the whole graph assembled.

scikit-learn estimators go through skl2onnx (classifiers with ``zipmap`` off, so
probabilities are a tensor); the torch MLP through its own :meth:`MLPModel.to_onnx`
(:mod:`lepton_ml.mlp`), with a softmax and the label lookup appended for classifiers.
Every graph answers ``prediction`` FP64 ``[batch, 1]`` and, for classifiers with
``predict_proba``, ``probabilities`` FP64 ``[batch, n_classes]``.

The estimator runs in FP64 wherever skl2onnx and onnxruntime both have a double form;
trees and tree ensembles in FP32 (onnxruntime's tree kernels compute in float32 only),
and so does SVR, which has no double kernel. For tree classifiers the label is taken
from the probabilities as scikit-learn does (the first class on a tie, ties measured to
float32 rounding), because onnxruntime's own label flips even votes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from lepton_ml.onnx_export._graph import (
    FRONT_OUT,
    INPUT_NAME,
    ML_OPSET,
    OPSET,
    PREDICTION,
    PREFIX,
    PROBABILITIES,
    Graph,
    Refused,
    first_line,
    session_options,
)


@dataclass(frozen=True)
class ModelGraph:
    """An estimator's graph, before the folded chain goes in front of it."""

    model: onnx.ModelProto
    dtype: int  # the element type the estimator's input takes
    note: str
    classes: list[Any] | None


def _float32_reason(model: Any) -> str:
    if type(model).__module__.startswith(("sklearn.tree", "sklearn.ensemble")):
        return (
            "FP32: onnxruntime's tree-ensemble kernels compute in float32 only (scikit-learn's "
            "trees and forests compare float32 features too); checked with the float tolerance"
        )
    return ""


def _argmax_classifiers() -> tuple[type, ...]:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

    return (DecisionTreeClassifier, ExtraTreeClassifier, RandomForestClassifier, ExtraTreesClassifier)


def _tie_band(model: Any) -> float:
    """How far apart float32 vote sums of exactly tied classes can come out: a few
    float32 epsilons per tree (summed votes are at most 1)."""
    trees = len(getattr(model, "estimators_", [])) or 1
    return 4 * trees * float(np.finfo(np.float32).eps)


def sklearn_graph(model: Any, n_features: int) -> ModelGraph:
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
    from sklearn.base import is_classifier

    classifier = bool(is_classifier(model))
    options = {id(model): {"zipmap": False}} if classifier else None
    reason = _float32_reason(model)
    attempts = [(TensorProto.FLOAT, reason)] if reason else [(TensorProto.DOUBLE, "FP64: exact to rounding")]
    errors: list[str] = []
    while attempts:
        elem, note = attempts.pop(0)
        tensor_type = DoubleTensorType if elem == TensorProto.DOUBLE else FloatTensorType
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proto = convert_sklearn(
                    model,
                    initial_types=[(INPUT_NAME, tensor_type([None, n_features]))],
                    target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
                    options=options,
                )
            # A converter may emit a double graph onnxruntime has no kernel for (SVR).
            ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # skl2onnx and onnxruntime raise many types; each is a refusal
            errors.append(f"{'FP64' if elem == TensorProto.DOUBLE else 'FP32'}: {first_line(exc)}")
            if elem == TensorProto.DOUBLE:
                attempts.append((TensorProto.FLOAT, f"FP32: no FP64 form ({first_line(exc)})"))
            continue
        return _with_outputs(proto, model, elem, note, classifier)
    raise Refused(f"skl2onnx cannot convert {type(model).__name__}: {'; '.join(errors)}")


def _with_outputs(proto: onnx.ModelProto, model: Any, elem: int, note: str, classifier: bool) -> ModelGraph:
    """Renames skl2onnx's outputs to ``prediction`` (FP64 ``[batch, 1]``) and ``probabilities``."""
    graph = proto.graph
    produced = [o.name for o in graph.output]
    for name in produced:
        _rename(graph, name, f"{PREFIX}skl_{name}")
    tail = Graph(f"{PREFIX}out_")
    outputs = [helper.make_tensor_value_info(PREDICTION, TensorProto.DOUBLE, ["batch", 1])]
    classes: list[Any] | None = None
    has_proba = classifier and hasattr(model, "predict_proba") and len(produced) > 1
    if has_proba:
        classes = np.asarray(model.classes_).tolist()
        proba = tail.op("Cast", f"{PREFIX}skl_{produced[1]}", output=PROBABILITIES, to=TensorProto.DOUBLE)
        outputs.append(helper.make_tensor_value_info(PROBABILITIES, TensorProto.DOUBLE, ["batch", len(classes)]))
    elif classifier:
        classes = np.asarray(model.classes_).tolist()
    if has_proba and isinstance(model, _argmax_classifiers()):
        # scikit-learn's label here is classes_[argmax(proba)], the first class on a tie.
        # onnxruntime sums the votes in float32 (and takes p0 = 1 - p1 for two classes),
        # so an even vote comes out 0.49999994 / 0.50000006 and the label would flip:
        # classes within that rounding of the best count as tied, and the first wins.
        band = tail.const(_tie_band(model))
        best_p = tail.op("ReduceMax", proba, axes=[1], keepdims=1)
        tied = tail.op("GreaterOrEqual", proba, tail.op("Sub", best_p, band))
        best = tail.op("ArgMax", tail.op("Cast", tied, to=TensorProto.DOUBLE), axis=1, keepdims=1)
        tail.op("Gather", tail.const(np.asarray(classes, dtype=np.float64)), best, output=PREDICTION, axis=0)
    else:
        labels = tail.op("Cast", f"{PREFIX}skl_{produced[0]}", to=TensorProto.DOUBLE)
        tail.op("Reshape", labels, tail.const([-1, 1], TensorProto.INT64), output=PREDICTION)
    graph.node.extend(tail.nodes)
    graph.initializer.extend(tail.initializers)
    del graph.output[:]
    graph.output.extend(outputs)
    return ModelGraph(proto, elem, note, classes)


def mlp_graph(model: Any) -> ModelGraph:
    from lepton_ml.mlp import ONNX_OUTPUT

    proto = onnx.load_from_string(model.to_onnx())
    note = "float32 network inside FP64 standardisation, as torch runs it; checked with the float tolerance"
    if model.task == "regression":
        return ModelGraph(proto, TensorProto.DOUBLE, note, None)
    graph, logits = proto.graph, ONNX_OUTPUT["classification"]
    tail = Graph(f"{PREFIX}out_")
    classes = np.asarray(model.classes_).tolist()
    tail.op("Softmax", logits, output=PROBABILITIES, axis=1)
    best = tail.op("ArgMax", logits, axis=1, keepdims=1)
    tail.op("Gather", tail.const(np.asarray(classes, dtype=np.float64)), best, output=PREDICTION, axis=0)
    graph.node.extend(tail.nodes)
    graph.initializer.extend(tail.initializers)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(PREDICTION, TensorProto.DOUBLE, ["batch", 1]),
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.DOUBLE, ["batch", len(classes)]),
        ]
    )
    return ModelGraph(proto, TensorProto.DOUBLE, note, classes)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def assemble(model: ModelGraph, front: Graph | None, n_inputs: int) -> onnx.ModelProto:
    """The estimator graph with the folded chain (if any) in front, on pinned opsets."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.model)
    graph = proto.graph
    input_elem = model.dtype
    if front is not None:
        inner = f"{PREFIX}model_input"
        _rename(graph, INPUT_NAME, inner)
        if model.dtype == TensorProto.DOUBLE:
            _rename_nodes_output(front, FRONT_OUT, inner)
        else:
            front.op("Cast", FRONT_OUT, output=inner, to=model.dtype)
        nodes = [*front.nodes, *graph.node]
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(front.initializers)
        input_elem = TensorProto.DOUBLE
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(INPUT_NAME, input_elem, ["batch", n_inputs])])
    # The parts declare what each used (skl2onnx: the lowest that will do, torch: 17);
    # the whole gets the pinned versions, other domains keep theirs.
    pinned = {"": OPSET, "ai.onnx.ml": ML_OPSET}
    versions = {op.domain or "": op.version for op in proto.opset_import}
    versions.update({n.domain: 0 for n in graph.node if n.domain not in versions})
    opsets = [helper.make_opsetid(d, pinned.get(d, v)) for d, v in sorted(versions.items())]
    if "" not in versions:
        opsets.insert(0, helper.make_opsetid("", OPSET))
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    proto.ir_version = helper.find_min_ir_version_for(list(proto.opset_import))
    proto.producer_name = "lepton"
    del graph.value_info[:]  # shapes are re-inferred; stale ones from the parts would only mislead
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _rename_nodes_output(front: Graph, old: str, new: str) -> None:
    for node in front.nodes:
        node.output[:] = [new if n == old else n for n in node.output]
        if node.name == old:
            node.name = new
