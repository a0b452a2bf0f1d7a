"""ONNX export of model bundles, with the preprocessing chain folded in and exactness checked.

:func:`convert` turns a bundle (see :mod:`lepton_ml.artifacts`) into one ONNX graph:

* scikit-learn estimators go through skl2onnx (classifiers with ``zipmap`` off, so
  probabilities are a tensor); the torch MLP through its own :meth:`MLPModel.to_onnx`
  (:mod:`lepton_ml.mlp`), with a softmax and the label lookup appended for classifiers.
* A bundle's :class:`~lepton_ml.artifacts.Preprocess` chain is replayed symbolically
  and written as ONNX nodes in front of the estimator, so the graph takes the raw
  numeric columns the platform's Triton model takes (``features``, FP64, the
  signature's numeric inputs in their raw order, NaN meaning missing). Only steps with
  an exact ONNX form are folded (see :data:`FOLDABLE_STEPS`); a feature that depends on
  any other step (one-hot of text, forward fill, arithmetic on narrow dtypes) makes the
  conversion refuse and say which step on which column. A step no feature depends on
  does not refuse. The folded features are bit for bit those polars computes (nulls
  are tracked apart from NaN, scalar division is a product with the reciprocal as in
  polars, clip keeps NaN), except ``log`` and ``pow``, whose libm may differ by an ulp.
  Rows the original refuses (a strict cast that does not convert) are outside the
  contract: polars raises on them, the graph returns a value.
* The graph is then run with onnxruntime on a sample and compared with
  ``Bundle.predict`` on the same rows. A conversion that is not exact within the
  tolerance, or that skl2onnx cannot do at all, comes back as ``Conversion(ok=False,
  reason=...)``: a refusal, never an exception and never a silently different model.

Tensors: input ``features`` ``[batch, n]``; output ``prediction`` FP64 ``[batch, 1]``
(values, class labels or cluster ids, the same tensor the platform's Triton model
returns) and, for classifiers with ``predict_proba``, ``probabilities`` FP64
``[batch, n_classes]`` in ``classes`` order.

Dtypes (recorded per conversion in ``model_dtype`` and ``dtype_note``): the estimator
runs in FP64 ("double") wherever skl2onnx and onnxruntime both have a double form,
which keeps it exact to rounding (linear models, logistic regression, SVC, k-NN,
Gaussian naive Bayes, k-means). Trees and tree ensembles run in FP32: onnxruntime's
tree kernels compute in float32 only, and scikit-learn's decision trees and forests
compare float32 features too (HistGradientBoosting compares float64, so a value within
float32 rounding of one of its thresholds may go the other way; the check is what
vouches for it). SVR has no double kernel in onnxruntime and falls back to FP32. For
tree classifiers the label is taken from the probabilities as scikit-learn does (the
first class on a tie, ties measured to float32 rounding), because onnxruntime's own
label flips even votes. The MLP's network is float32 inside FP64 standardisation, as
in torch. FP32 models are checked with :data:`FLOAT_TOLERANCE`, FP64 ones with
:data:`DOUBLE_TOLERANCE`. The input tensor has the estimator's dtype, except that a
folded chain always takes FP64 (it replays polars' float64 arithmetic) and casts to
FP32 in-graph in front of an FP32 estimator.

Opsets: default domain 17 and ``ai.onnx.ml`` 3, with the smallest IR version those
need (8), so onnxruntime 1.13 and later (the Triton builds on JetPack included) load
the graph, not only the pinned 1.32.

:func:`export_edge_bundle` packs a checked conversion with a standalone ``runner.py``
(numpy and onnxruntime only) and a Triton model repository, for devices that run
neither polars nor Lepton.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import polars as pl
from onnx import TensorProto, helper, numpy_helper

from lepton_core.errors import FailedPrecondition
from lepton_ml import artifacts, recipes

INPUT_NAME: Final = "features"
PREDICTION: Final = "prediction"
PROBABILITIES: Final = "probabilities"
#: Default-domain opset: every onnxruntime since 1.13 runs it.
OPSET: Final = 17
#: ``ai.onnx.ml`` opset (tree ensembles, SVMs, label extraction).
ML_OPSET: Final = 3
#: Rows synthesized from the signature when no sample is given.
SAMPLE_ROWS: Final = 200
SAMPLE_SEED: Final = 0
#: Steps that have an exact ONNX form (on Float64, Int64 and Boolean columns). The
#: row-dropping steps are listed because serving skips them, so they fold to nothing.
FOLDABLE_STEPS: Final = (
    "fill_nulls",
    "cast",
    "clip",
    "select",
    "rename",
    "derive",
    "standardize",
    "bucketize",
    *sorted(recipes.ROW_DROPPING_OPS),
)
EDGE_FORMAT: Final = "lepton-edge"
EDGE_FORMAT_VERSION: Final = 1
TRITON_MAX_BATCH_SIZE: Final = 64
TRITON_MAX_QUEUE_DELAY_US: Final = 200

#: Column dtypes whose polars arithmetic a float64 graph reproduces exactly.
_EXACT_DTYPES: Final = frozenset({"Float64", "Int64", "Boolean"})
_NARROW_DTYPES: Final = frozenset({"Float32", "Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32", "UInt64"})
_PREFIX: Final = "lepton_"
#: The folded chain's output: the estimator's features, FP64.
_FRONT_OUT: Final = f"{_PREFIX}features_f64"
_NP_OF: Final[dict[int, Any]] = {
    TensorProto.DOUBLE: np.float64,
    TensorProto.FLOAT: np.float32,
    TensorProto.INT64: np.int64,
}
_TRITON_TYPE: Final[dict[int, str]] = {TensorProto.DOUBLE: "TYPE_FP64", TensorProto.FLOAT: "TYPE_FP32"}


@dataclass(frozen=True)
class Tolerance:
    """How far ONNX outputs may be from the original's.

    A regression value passes when ``|onnx - original| <= atol + rtol * |original|``;
    class labels and cluster ids must be identical; probabilities may differ by at
    most ``probability_atol``.
    """

    rtol: float
    atol: float
    probability_atol: float = 1e-5


#: For estimators that run in FP64 in the graph.
DOUBLE_TOLERANCE: Final = Tolerance(rtol=1e-5, atol=1e-6)
#: For estimators that run in FP32 (trees, SVR, the MLP's network).
FLOAT_TOLERANCE: Final = Tolerance(rtol=1e-4, atol=1e-4)


@dataclass(frozen=True)
class Conversion:
    """The outcome of :func:`convert`: an ONNX model and how exact it was found to be.

    Attributes:
        ok: True when the graph was built and matched the original on every checked row.
        reason: Why not, when ``ok`` is False (a refused step, a converter error, or the
            numbers of a failed check); empty when ok.
        onnx: The serialized model (also set when only the check failed, to inspect it).
        input_name: The input tensor's name, ``features``.
        input_dtype: ``float64`` or ``float32``.
        input_shape: ``(-1, n)``: any batch size, ``n`` columns.
        input_columns: What each input column is, in order: the raw numeric columns
            when a chain is folded, else the estimator's features.
        output_names: ``prediction``, then ``probabilities`` for classifiers that have them.
        task: ``regression``, ``classification`` or ``clustering``.
        classes: Class labels in ``probabilities`` column order (classifiers only).
        model_dtype: The dtype the estimator runs in inside the graph.
        dtype_note: Why that dtype.
        folded_steps: The chain's steps now in the graph, e.g. ``fill_nulls(bmi)``.
        opset: Opset per domain (``""`` is the default domain).
        tolerance: What the check allowed.
        sample: ``given`` or ``synthesized`` (see :func:`convert`).
        rows_checked: Rows compared.
        max_abs_diff: Largest ``|onnx - original|`` over ``prediction``.
        max_probability_diff: Largest difference over ``probabilities``.
        mismatched_labels: Rows whose label (or cluster id) differs.
    """

    ok: bool
    reason: str = ""
    onnx: bytes = b""
    input_name: str = INPUT_NAME
    input_dtype: str = ""
    input_shape: tuple[int, int] = (-1, 0)
    input_columns: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    task: str = ""
    classes: list[Any] | None = None
    model_dtype: str = ""
    dtype_note: str = ""
    folded_steps: list[str] = field(default_factory=list)
    opset: dict[str, int] = field(default_factory=dict)
    tolerance: Tolerance | None = None
    sample: str = ""
    rows_checked: int = 0
    max_abs_diff: float | None = None
    max_probability_diff: float | None = None
    mismatched_labels: int | None = None

    def report(self) -> dict[str, Any]:
        """Everything but the model bytes, as JSON-ready values (``check.json``)."""
        doc = asdict(self)
        del doc["onnx"]
        doc["input_shape"] = list(self.input_shape)
        return doc


class ConversionRefused(FailedPrecondition, ValueError):
    """:func:`export_edge_bundle` was asked to pack a conversion that is not exact.

    Attributes:
        conversion: The refused conversion; ``conversion.reason`` says why.
    """

    def __init__(self, conversion: Conversion) -> None:
        super().__init__(f"the ONNX conversion is not exact: {conversion.reason}")
        self.conversion = conversion


class _Refused(Exception):
    """Internal: the conversion cannot go on; the message is the Conversion's reason."""


# ---------------------------------------------------------------------------------------
# Graph building


class _Graph:
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
        array = np.asarray(value, dtype=np.bool_ if elem_type == TensorProto.BOOL else _NP_OF[elem_type])
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


@dataclass(frozen=True)
class _Col:
    """A column of the frame as the chain reaches a step, in graph form.

    ``values`` is a double ``[batch, 1]`` tensor and ``mask`` a bool one, True where
    polars holds a null; keeping nulls apart from the values keeps a real NaN (which
    ``fill_nulls`` leaves alone) distinct from a null (which it fills). ``mask`` is
    empty when the column cannot hold a null. ``opaque`` says why the column has no
    graph form; such a column only refuses the conversion if a feature needs it.
    """

    values: str = ""
    mask: str = ""
    dtype: str = "Float64"
    opaque: str = ""


class _Folder:
    """Replays a Preprocess chain on graph tensors, the way ``Preprocess.apply`` does on frames."""

    def __init__(self, graph: _Graph, raw: list[tuple[str, str]], numeric: list[str]) -> None:
        self.g = graph
        self.folded: list[str] = []
        self.env: dict[str, _Col] = {}
        self._batch_shape = ""
        nulls = graph.op("IsNaN", INPUT_NAME)
        for name, dtype in raw:
            if name not in numeric:
                self.env[name] = _Col(dtype=dtype, opaque=f"input column '{name}' is {dtype} (text)")
                continue
            index = graph.const([numeric.index(name)], TensorProto.INT64)
            values = graph.op("Gather", INPUT_NAME, index, axis=1)
            mask = graph.op("Gather", nulls, index, axis=1)
            self.env[name] = self._raw_column(name, dtype, values, mask)

    def _raw_column(self, name: str, dtype: str, values: str, mask: str) -> _Col:
        """The tensor column as the Triton model's ``raw_frame`` casts it to its upload dtype."""
        g = self.g
        if dtype == "Float64":
            return _Col(values, mask, dtype)
        if dtype == "Float32":
            rounded = g.op("Cast", g.op("Cast", values, to=TensorProto.FLOAT), to=TensorProto.DOUBLE)
            return _Col(rounded, mask, dtype)
        if dtype == "Boolean":
            truth = g.op("Not", g.op("Equal", values, g.const(0.0)))
            return _Col(g.op("Cast", truth, to=TensorProto.DOUBLE), mask, dtype)
        if dtype == "Int64" or dtype in _NARROW_DTYPES:
            # polars truncates toward zero on a float-to-int cast, as the C cast does.
            whole = g.op("Cast", g.op("Cast", values, to=TensorProto.INT64), to=TensorProto.DOUBLE)
            return _Col(whole, mask, dtype)
        return _Col(dtype=dtype, opaque=f"input column '{name}' is {dtype}, which has no ONNX form")

    def batch_column(self, value: float | bool) -> str:
        """A ``[batch, 1]`` tensor filled with ``value`` (bool for a bool value, else double)."""
        g = self.g
        if not self._batch_shape:
            rows = g.op("Shape", INPUT_NAME, start=0, end=1)
            self._batch_shape = g.op("Concat", rows, g.const([1], TensorProto.INT64), axis=0)
        fill = np.asarray([value], dtype=np.bool_ if isinstance(value, bool) else np.float64)
        return g.op("ConstantOfShape", self._batch_shape, value=numpy_helper.from_array(fill))

    def add_null_column(self, name: str, dtype: str) -> None:
        """The target, which ``Preprocess.apply`` adds as nulls when the caller does not send it."""
        if name in self.env:
            return
        if artifacts.is_text_dtype(dtype):
            self.env[name] = _Col(dtype=dtype, opaque=f"the target column '{name}' is text")
        else:
            self.env[name] = _Col(self.batch_column(0.0), self.batch_column(True), dtype.split("(")[0] or "Float64")

    # ------------------------------------------------------------------ helpers

    def _get(self, name: str, op: str) -> _Col:
        if name not in self.env:
            raise _Refused(f"step '{op}' names column '{name}', which the chain does not have at that point")
        return self.env[name]

    def _or(self, *masks: str) -> str:
        present = [m for m in masks if m]
        if not present:
            return ""
        out = present[0]
        for m in present[1:]:
            out = self.g.op("Or", out, m)
        return out

    @staticmethod
    def _opaque(col: _Col, op: str, name: str) -> _Col:
        if col.opaque.startswith("input column") or col.opaque.startswith("the target"):
            return _Col(dtype=col.dtype, opaque=f"step '{op}' on column '{name}' has no ONNX form ({col.opaque})")
        return col

    @staticmethod
    def _narrow(col: _Col, op: str, name: str) -> _Col | None:
        """An opaque column when ``op`` would compute on a dtype the graph cannot match bit for bit."""
        if col.dtype in _EXACT_DTYPES:
            return None
        return _Col(
            dtype=col.dtype,
            opaque=f"step '{op}' on column '{name}' ({col.dtype}) has no exact ONNX form: "
            "only Float64, Int64 and Boolean columns are computed exactly",
        )

    @staticmethod
    def _numeric(col: _Col, op: str, name: str) -> None:
        if col.dtype == "Boolean" or artifacts.is_text_dtype(col.dtype):
            raise _Refused(f"step '{op}' needs a numeric column but '{name}' is {col.dtype}; the chain cannot run")

    # ------------------------------------------------------------------ steps

    def step(self, step: Any, params: dict[str, Any]) -> None:
        op: str = step.op
        if op in recipes.ROW_DROPPING_OPS:
            return  # serving skips row-dropping steps; so does the graph
        handler = getattr(self, f"_step_{op}", None)
        if handler is None:
            raise _Refused(f"step '{op}' has no ONNX form")
        handler(step, params)

    def _step_fill_nulls(self, step: recipes.FillNulls, params: dict[str, Any]) -> None:
        name = step.column
        col = self._get(name, step.op)
        self.folded.append(f"fill_nulls({name})")
        if col.opaque:
            self.env[name] = self._opaque(col, step.op, name)
            return
        if step.strategy == "forward":
            self.env[name] = _Col(
                dtype=col.dtype,
                opaque=f"step 'fill_nulls' (strategy 'forward') on column '{name}' has no ONNX form: "
                "it carries values from one row to the next",
            )
            return
        fill = step.value if step.strategy == "constant" else params.get("fill")
        if col.dtype == "Boolean":
            if not isinstance(fill, bool):
                raise _Refused(f"step 'fill_nulls' fills Boolean column '{name}' with {fill!r}; the chain cannot run")
            value, dtype = float(fill), "Boolean"
        else:
            narrow = self._narrow(col, step.op, name)
            if narrow is not None:
                self.env[name] = narrow
                return
            if isinstance(fill, bool) or not isinstance(fill, int | float):
                raise _Refused(f"step 'fill_nulls' fills numeric column '{name}' with {fill!r}; the chain cannot run")
            # polars fills an Int64 column with a float by turning it into Float64.
            value, dtype = float(fill), "Int64" if col.dtype == "Int64" and isinstance(fill, int) else "Float64"
        values = self.g.op("Where", col.mask, self.g.const(value), col.values) if col.mask else col.values
        self.env[name] = _Col(values, "", dtype)

    def _step_cast(self, step: recipes.Cast, params: dict[str, Any]) -> None:
        name = step.column
        col = self._get(name, step.op)
        self.folded.append(f"cast({name}, {step.dtype})")
        if col.opaque:
            self.env[name] = self._opaque(col, step.op, name)
        elif step.dtype in ("str", "category"):
            self.env[name] = _Col(dtype="String", opaque=f"step 'cast' to {step.dtype} on column '{name}' is text")
        else:
            # On the values a strict cast accepts (whole numbers for int, 0/1 for bool),
            # every numeric cast keeps the value; anything else makes polars raise.
            dtype = {"int": "Int64", "float": "Float64", "bool": "Boolean"}[step.dtype]
            self.env[name] = _Col(col.values, col.mask, dtype)

    def _step_clip(self, step: recipes.Clip, params: dict[str, Any]) -> None:
        name = step.column
        col = self._get(name, step.op)
        self.folded.append(f"clip({name})")
        if col.opaque:
            self.env[name] = self._opaque(col, step.op, name)
            return
        self._numeric(col, step.op, name)
        narrow = self._narrow(col, step.op, name)
        if narrow is not None:
            self.env[name] = narrow
            return
        lower, upper = params.get("lower"), params.get("upper")
        if col.dtype == "Int64":
            # The same whole-number bounds recipes._apply_clip uses for integer columns.
            lower = math.ceil(lower) if lower is not None else None
            upper = math.floor(upper) if upper is not None else None
        g, values = self.g, col.values
        # Where, not Min/Max: a NaN compares false and so stays NaN, as polars' clip keeps it.
        if lower is not None:
            bound = g.const(float(lower))
            values = g.op("Where", g.op("Less", values, bound), bound, values)
        if upper is not None:
            bound = g.const(float(upper))
            values = g.op("Where", g.op("Greater", values, bound), bound, values)
        self.env[name] = _Col(values, col.mask, col.dtype)

    def _step_select(self, step: recipes.Select, params: dict[str, Any]) -> None:
        self.env = {name: self._get(name, step.op) for name in step.columns}

    def _step_rename(self, step: recipes.Rename, params: dict[str, Any]) -> None:
        moved = {new: self._get(old, step.op) for old, new in step.mapping.items()}
        kept = {k: v for k, v in self.env.items() if k not in step.mapping}
        if set(moved) & set(kept):
            raise _Refused(f"step 'rename' renames onto an existing column {sorted(set(moved) & set(kept))}")
        self.env = {**kept, **moved}

    def _step_derive(self, step: recipes.Derive, params: dict[str, Any]) -> None:
        self.folded.append(f"derive({step.name} = {step.left} {step.operator} {step.right or ''})".replace(" )", ")"))
        left = self._get(step.left, step.op)
        right = self._get(step.right, step.op) if isinstance(step.right, str) else None
        operands = [(left, step.left)] + ([(right, str(step.right))] if right is not None else [])
        for col, col_name in operands:
            if col.opaque:
                self.env[step.name] = self._opaque(col, step.op, col_name)
                return
            self._numeric(col, step.op, col_name)
            narrow = self._narrow(col, step.op, col_name)
            if narrow is not None:
                self.env[step.name] = narrow
                return
        g = self.g
        literal = float(step.right) if isinstance(step.right, int | float) else None
        rv = right.values if right is not None else g.const(literal) if literal is not None else ""
        mask = self._or(left.mask, right.mask if right is not None else "")
        both_int = left.dtype == "Int64" and (
            (right is not None and right.dtype == "Int64") or (right is None and isinstance(step.right, int))
        )
        lv = left.values
        if step.operator in ("+", "-", "*"):
            values = g.op({"+": "Add", "-": "Sub", "*": "Mul"}[step.operator], lv, rv)
            dtype = "Int64" if both_int else "Float64"
        elif step.operator == "/" and literal is not None:
            # Division by a number: polars multiplies by its reciprocal (see standardize).
            dtype = "Float64"
            if literal == 0:
                values, mask = lv, self.batch_column(True)
            else:
                values = g.op("Mul", lv, g.const(1.0 / literal))
        elif step.operator == "/":
            values, dtype = g.op("Div", lv, rv), "Float64"
            mask = self._or(mask, g.op("Equal", rv, g.const(0.0)))
        elif step.operator == "log":
            # polars orders NaN above every number, so `NaN > 0` holds and log(NaN) stays NaN.
            positive = g.op("Or", g.op("Greater", lv, g.const(0.0)), g.op("IsNaN", lv))
            values, dtype = g.op("Log", lv), "Float64"
            mask = self._or(mask, g.op("Not", positive))
        elif step.operator == "abs":
            values, dtype = g.op("Abs", lv), left.dtype
        else:  # pow: a non-finite power is null
            values, dtype = g.op("Pow", lv, rv), "Float64"
            mask = self._or(mask, g.op("Or", g.op("IsNaN", values), g.op("IsInf", values)))
        self.env[step.name] = _Col(values, mask, dtype)

    def _step_standardize(self, step: recipes.Standardize, params: dict[str, Any]) -> None:
        g = self.g
        for name in step.columns:
            col = self._get(name, step.op)
            self.folded.append(f"standardize({name})")
            if col.opaque:
                self.env[name] = self._opaque(col, step.op, name)
                continue
            self._numeric(col, step.op, name)
            stats = params.get(name) or {}
            mean, std = float(stats.get("mean", 0.0)), float(stats.get("std") or 1.0)
            # The column is cast to Float64 first, so narrow dtypes are exact here too.
            # polars divides by a scalar as a product with its reciprocal; so does the graph,
            # which keeps the result bit for bit equal (a true Div is an ulp off a third of the time).
            values = g.op("Mul", g.op("Sub", col.values, g.const(mean)), g.const(1.0 / std))
            self.env[name] = _Col(values, col.mask, "Float64")

    def _step_bucketize(self, step: recipes.Bucketize, params: dict[str, Any]) -> None:
        name, out = step.column, f"{step.column}_bucket"
        col = self._get(name, step.op)
        self.folded.append(f"bucketize({name})")
        if out in self.env:
            raise _Refused(f"step 'bucketize' writes '{out}', which already exists; the chain cannot run")
        if col.opaque:
            self.env[out] = self._opaque(col, step.op, name)
            return
        self._numeric(col, step.op, name)
        narrow = self._narrow(col, step.op, name)
        if narrow is not None:
            self.env[out] = narrow
            return
        g = self.g
        bounds = [float(b) for b in params.get("boundaries", [])]
        above = [g.op("Cast", g.op("GreaterOrEqual", col.values, g.const(b)), to=TensorProto.DOUBLE) for b in bounds]
        values = g.op("Sum", *above) if above else self.batch_column(0.0)
        # A NaN is treated as missing when bucketizing (recipes._fit_values).
        mask = self._or(col.mask, g.op("IsNaN", col.values))
        self.env[out] = _Col(values, mask, "Int32")

    def _step_one_hot(self, step: recipes.OneHot, params: dict[str, Any]) -> None:
        self._get(step.column, step.op)
        reason = f"step 'one_hot' on column '{step.column}' has no ONNX form"
        names = [f"{step.column}={c}" for c in params.get("categories", [])]
        self.env = {k: v for k, v in self.env.items() if k != step.column}
        self.env.update({n: _Col(dtype="Int8", opaque=reason) for n in names})

    # ------------------------------------------------------------------ output

    def features(self, names: Sequence[str], output: str) -> None:
        """Concatenates the estimator's features (nulls as NaN, as ``Bundle.features`` gives them)."""
        g, parts = self.g, []
        for name in names:
            if name not in self.env:
                raise _Refused(f"feature '{name}' is not a column the chain produces")
            col = self.env[name]
            if col.opaque:
                raise _Refused(col.opaque)
            parts.append(g.op("Where", col.mask, g.const(math.nan), col.values) if col.mask else col.values)
        g.op("Concat", *parts, output=output, axis=1)


def _fold(bundle: artifacts.Bundle, graph: _Graph, output: str) -> tuple[list[str], list[str]]:
    """Writes the chain into ``graph``; returns the input columns and the folded steps."""
    assert bundle.preprocess is not None
    signature = bundle.signature
    raw = _raw_columns(signature)
    numeric = signature.numeric_inputs()
    if not numeric:
        raise _Refused("the bundle has no numeric input columns to feed an ONNX graph")
    folder = _Folder(graph, raw, numeric)
    folder.add_null_column(bundle.preprocess.target, bundle.preprocess.target_dtype)
    for entry in bundle.preprocess.recipes:
        try:
            recipe = recipes.Recipe.model_validate(entry["recipe"])
            fitted = list(entry["fitted"])
        except Exception as exc:  # pydantic or a malformed entry: the bundle cannot be replayed either
            raise _Refused(f"the preprocessing chain does not parse: {exc}") from exc
        if len(fitted) != len(recipe.steps):
            raise _Refused(f"{len(fitted)} fitted entries for {len(recipe.steps)} steps in the preprocessing chain")
        for step, params in zip(recipe.steps, fitted, strict=True):
            folder.step(step, dict(params))
    folder.features(signature.features, output)
    return numeric, folder.folded


def _raw_columns(signature: artifacts.Signature) -> list[tuple[str, str]]:
    if signature.inputs:
        return [(c["name"], c["dtype"]) for c in signature.inputs]
    return [(name, "Float64") for name in signature.features]


# ---------------------------------------------------------------------------------------
# Estimator graphs


@dataclass(frozen=True)
class _ModelGraph:
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


def _sklearn_graph(model: Any, n_features: int) -> _ModelGraph:
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
            ort.InferenceSession(proto.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # skl2onnx and onnxruntime raise many types; each is a refusal
            errors.append(f"{'FP64' if elem == TensorProto.DOUBLE else 'FP32'}: {_first_line(exc)}")
            if elem == TensorProto.DOUBLE:
                attempts.append((TensorProto.FLOAT, f"FP32: no FP64 form ({_first_line(exc)})"))
            continue
        return _with_outputs(proto, model, elem, note, classifier)
    raise _Refused(f"skl2onnx cannot convert {type(model).__name__}: {'; '.join(errors)}")


def _with_outputs(proto: onnx.ModelProto, model: Any, elem: int, note: str, classifier: bool) -> _ModelGraph:
    """Renames skl2onnx's outputs to ``prediction`` (FP64 ``[batch, 1]``) and ``probabilities``."""
    graph = proto.graph
    produced = [o.name for o in graph.output]
    for name in produced:
        _rename(graph, name, f"{_PREFIX}skl_{name}")
    tail = _Graph(f"{_PREFIX}out_")
    outputs = [helper.make_tensor_value_info(PREDICTION, TensorProto.DOUBLE, ["batch", 1])]
    classes: list[Any] | None = None
    has_proba = classifier and hasattr(model, "predict_proba") and len(produced) > 1
    if has_proba:
        classes = np.asarray(model.classes_).tolist()
        proba = tail.op("Cast", f"{_PREFIX}skl_{produced[1]}", output=PROBABILITIES, to=TensorProto.DOUBLE)
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
        labels = tail.op("Cast", f"{_PREFIX}skl_{produced[0]}", to=TensorProto.DOUBLE)
        tail.op("Reshape", labels, tail.const([-1, 1], TensorProto.INT64), output=PREDICTION)
    graph.node.extend(tail.nodes)
    graph.initializer.extend(tail.initializers)
    del graph.output[:]
    graph.output.extend(outputs)
    return _ModelGraph(proto, elem, note, classes)


def _mlp_graph(model: Any) -> _ModelGraph:
    from lepton_ml.mlp import ONNX_OUTPUT

    proto = onnx.load_from_string(model.to_onnx())
    note = "float32 network inside FP64 standardisation, as torch runs it; checked with the float tolerance"
    if model.task == "regression":
        return _ModelGraph(proto, TensorProto.DOUBLE, note, None)
    graph, logits = proto.graph, ONNX_OUTPUT["classification"]
    tail = _Graph(f"{_PREFIX}out_")
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
    return _ModelGraph(proto, TensorProto.DOUBLE, note, classes)


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


def _assemble(model: _ModelGraph, front: _Graph | None, n_inputs: int) -> onnx.ModelProto:
    """The estimator graph with the folded chain (if any) in front, on pinned opsets."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.model)
    graph = proto.graph
    input_elem = model.dtype
    if front is not None:
        inner = f"{_PREFIX}model_input"
        _rename(graph, INPUT_NAME, inner)
        if model.dtype == TensorProto.DOUBLE:
            _rename_nodes_output(front, _FRONT_OUT, inner)
        else:
            front.op("Cast", _FRONT_OUT, output=inner, to=model.dtype)
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


def _rename_nodes_output(front: _Graph, old: str, new: str) -> None:
    for node in front.nodes:
        node.output[:] = [new if n == old else n for n in node.output]
        if node.name == old:
            node.name = new


# ---------------------------------------------------------------------------------------
# Samples and the exactness check


def _session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass(frozen=True)
class _Sample:
    tensor: npt.NDArray[np.float64]  # the input columns, NaN for missing
    frame: pl.DataFrame  # the same rows as the platform's Triton model builds them
    source: str


def _input_columns(bundle: artifacts.Bundle) -> list[str]:
    return bundle.signature.numeric_inputs() if bundle.preprocess is not None else list(bundle.signature.features)


def _frame_from_tensor(
    bundle: artifacts.Bundle, x: npt.NDArray[np.float64], text: dict[str, list[str | None]]
) -> pl.DataFrame:
    """The raw frame the platform's Triton model builds from a ``features`` tensor.

    Mirrors ``triton_model.model.raw_frame``: NaN means missing, each column goes back
    to the dtype it had at upload; text columns (not in the graph) come from the sample.
    """
    dtypes = dict(_raw_columns(bundle.signature))
    columns: dict[str, pl.Series] = {}
    for j, name in enumerate(_input_columns(bundle)):
        series = pl.Series(name, x[:, j], dtype=pl.Float64).fill_nan(None)
        dtype = getattr(pl, dtypes.get(name, "Float64"), pl.Float64)
        columns[name] = series.cast(dtype) if dtype != pl.Float64 else series
    for name, values in text.items():
        columns[name] = pl.Series(name, values, dtype=pl.String)
    return pl.DataFrame(columns)


def _given_sample(bundle: artifacts.Bundle, sample: pl.DataFrame) -> _Sample:
    names = _input_columns(bundle)
    missing = [n for n in [*names, *bundle.signature.text_inputs()] if n not in sample.columns]
    if missing:
        raise _Refused(f"the sample lacks input columns {missing}")
    if sample.height == 0:
        raise _Refused("the sample has no rows")
    try:
        x = sample.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy().astype(np.float64)
    except pl.exceptions.PolarsError as exc:
        raise _Refused(f"the sample's input columns are not all numeric: {_first_line(exc)}") from exc
    text = {n: sample.get_column(n).cast(pl.String).to_list() for n in bundle.signature.text_inputs()}
    return _Sample(x, _frame_from_tensor(bundle, x, text), "given")


def _value_ranges(bundle: artifacts.Bundle, names: list[str]) -> dict[str, tuple[float, float]]:
    """Rough per-column ranges to synthesize rows in, from what the bundle knows of its data.

    Only a guide for where to draw values: the check compares whatever is drawn.
    """
    ranges: dict[str, tuple[float, float]] = {}
    if bundle.preprocess is not None:
        for entry in bundle.preprocess.recipes:
            steps = entry.get("recipe", {}).get("steps", [])
            for step, params in zip(steps, entry.get("fitted", []), strict=False):
                if step.get("op") == "standardize":
                    for name in step.get("columns", []):
                        stats = params.get(name) or {}
                        mean, std = float(stats.get("mean", 0.0)), float(stats.get("std") or 1.0)
                        ranges.setdefault(name, (mean - 2 * std, mean + 2 * std))
                elif step.get("op") == "clip" and params.get("lower") is not None and params.get("upper") is not None:
                    lo, hi = float(params["lower"]), float(params["upper"])
                    ranges.setdefault(step["column"], (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)))
        return {k: v for k, v in ranges.items() if k in names}
    model = bundle.model
    arch = getattr(model, "_arch", None)
    lows: npt.NDArray[np.float64] | None = None
    highs: npt.NDArray[np.float64] | None = None
    if arch is not None:
        centre, spread = np.asarray(arch.input_mean), 2 * np.asarray(arch.input_std)
        lows, highs = centre - spread, centre + spread
    elif hasattr(model, "theta_") and hasattr(model, "var_"):  # Gaussian naive Bayes
        spread = 2 * np.sqrt(np.asarray(model.var_))
        lows, highs = (model.theta_ - spread).min(axis=0), (model.theta_ + spread).max(axis=0)
    elif hasattr(model, "cluster_centers_"):
        centers = np.asarray(model.cluster_centers_)
        lows, highs = centers.min(axis=0), centers.max(axis=0)
    else:
        trees = [model, *np.ravel(getattr(model, "estimators_", []))]
        splits: dict[int, list[float]] = {}
        for tree in trees:
            inner = getattr(tree, "tree_", None)
            if inner is not None:
                for feature, threshold in zip(inner.feature, inner.threshold, strict=True):
                    if feature >= 0:
                        splits.setdefault(int(feature), []).append(float(threshold))
        for j, values in splits.items():
            lo, hi = min(values), max(values)
            pad = 0.1 * (hi - lo) or 1.0
            ranges[names[j]] = (lo - pad, hi + pad)
    if lows is not None and highs is not None:
        ranges = {names[j]: (float(lows[j]), float(highs[j])) for j in range(len(names))}
    return ranges


def _synthesized_sample(bundle: artifacts.Bundle) -> _Sample:
    """Up to ``SAMPLE_ROWS`` seeded rows drawn per input column from its dtype and :func:`_value_ranges`.

    Float columns are uniform over the column's range; without one, half the candidate
    rows are standard normal and half log-normal (positive, for logs and ratios). Int
    columns are those values rounded, Boolean columns 0/1, text columns ``"0"``. Rows
    whose features come out NaN or infinite (the log of a negative number, say) are
    dropped: the estimator was trained on finite features and is not asked about others.
    About one row in ten is then null in each column the chain fills, so the comparison
    covers the folded imputation; a column whose null would reach the estimator gets none.
    """
    names = _input_columns(bundle)
    dtypes = dict(_raw_columns(bundle.signature))
    rng = np.random.default_rng(SAMPLE_SEED)
    ranges = _value_ranges(bundle, names)
    n = 2 * SAMPLE_ROWS
    x = np.empty((n, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        lo, hi = ranges.get(name, (math.nan, math.nan))
        if math.isfinite(lo + hi):
            column = rng.uniform(lo, hi, n)
        else:
            column = np.concatenate([rng.standard_normal(n // 2), rng.lognormal(size=n - n // 2)])
        dtype = dtypes.get(name, "Float64")
        if dtype == "Boolean":
            column = rng.integers(0, 2, n).astype(np.float64)
        elif dtype.startswith(("Int", "UInt")):
            column = np.round(column)
            column = np.abs(column) if dtype.startswith("UInt") else column
        x[:, j] = column
    text: dict[str, list[str | None]] = {c: ["0"] * n for c in bundle.signature.text_inputs()}
    try:
        features = bundle.features(_frame_from_tensor(bundle, x, text))
    except Exception as exc:  # the chain refuses drawn values (a strict cast, say): ask for real rows
        raise _Refused(
            f"rows synthesized from the signature do not pass the chain ({_first_line(exc)}); give a sample"
        ) from exc
    keep = np.flatnonzero(np.isfinite(features).all(axis=1))[:SAMPLE_ROWS]
    if len(keep) == 0:
        raise _Refused("no row synthesized from the signature gives finite features; give a sample")
    x = x[keep]
    text = {c: v[: len(keep)] for c, v in text.items()}
    if bundle.preprocess is not None:
        holes = rng.random(x.shape) < 0.1
        for j in range(len(names)):
            trial = x.copy()
            trial[holes[:, j], j] = np.nan
            try:
                filled = bundle.features(_frame_from_tensor(bundle, trial, text))
            except Exception:  # the chain cannot take a null there: keep the column complete
                continue
            if np.isfinite(filled).all():
                x = trial
    return _Sample(x, _frame_from_tensor(bundle, x, text), "synthesized")


def _check(
    onnx_bytes: bytes, bundle: artifacts.Bundle, sample: _Sample, input_dtype: Any, tolerance: Tolerance
) -> dict[str, Any]:
    """Runs the graph and the original on the sample; the numbers and, on failure, the reason."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, _session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {INPUT_NAME: sample.tensor.astype(input_dtype)}), strict=True))
    try:
        features = bundle.features(sample.frame)
        expected = np.asarray(bundle.model.predict(features))
    except Exception as exc:  # the original itself fails on these rows: nothing to compare with
        raise _Refused(f"the original bundle cannot predict on the sample: {_first_line(exc)}") from exc
    rows = len(expected)
    prediction = np.asarray(got[PREDICTION], dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {"rows_checked": rows, "reason": ""}
    task = bundle.signature.task
    if task == "regression":
        truth = expected.astype(np.float64).reshape(-1)
        diff = np.abs(prediction - truth)
        both_nan = np.isnan(prediction) & np.isnan(truth)
        diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
        out["max_abs_diff"] = float(diff.max())
        allowed = tolerance.atol + tolerance.rtol * np.abs(np.nan_to_num(truth))
        failing = int((diff > allowed).sum())
        if failing:
            out["reason"] = (
                f"max abs diff {out['max_abs_diff']:.1e} on {rows} rows > tolerance "
                f"(atol {tolerance.atol:g} + rtol {tolerance.rtol:g} * |y|), exceeded on {failing} rows"
            )
        return out
    truth = expected.astype(np.float64).reshape(-1)
    mismatched = int((prediction != truth).sum())
    out["mismatched_labels"] = mismatched
    out["max_abs_diff"] = float(np.abs(prediction - truth).max())
    reasons = []
    if mismatched:
        reasons.append(f"labels differ on {mismatched} of {rows} rows")
    if PROBABILITIES in got:
        proba = np.asarray(bundle.model.predict_proba(features), dtype=np.float64)
        worst = float(np.abs(np.asarray(got[PROBABILITIES], dtype=np.float64) - proba).max())
        out["max_probability_diff"] = worst
        if not worst <= tolerance.probability_atol:
            reasons.append(
                f"max probability diff {worst:.1e} on {rows} rows > tolerance {tolerance.probability_atol:g}"
            )
    out["reason"] = "; ".join(reasons)
    return out


# ---------------------------------------------------------------------------------------
# Public API


def _as_bundle(bundle_or_artifact: artifacts.Bundle | bytes) -> artifacts.Bundle:
    if isinstance(bundle_or_artifact, artifacts.Bundle):
        return bundle_or_artifact
    return artifacts.load_bundle(bundle_or_artifact)


def _sample(bundle: artifacts.Bundle, sample: pl.DataFrame | None) -> _Sample:
    return _given_sample(bundle, sample) if sample is not None else _synthesized_sample(bundle)


def convert(
    bundle_or_artifact: artifacts.Bundle | bytes,
    sample: pl.DataFrame | None = None,
    *,
    tolerance: Tolerance | None = None,
) -> Conversion:
    """Converts a bundle's model (and its preprocessing chain) to ONNX and checks it is exact.

    Args:
        bundle_or_artifact: A loaded :class:`~lepton_ml.artifacts.Bundle` or artifact bytes.
        sample: Raw rows to check on: the signature's raw input columns when the bundle
            has a chain (nulls allowed where the chain fills them), else its features.
            Without one, :data:`SAMPLE_ROWS` rows are synthesized from the signature and
            what the bundle knows of its data (seeded, so repeatable); a real sample is
            the stronger check.
        tolerance: What the check allows; by default :data:`DOUBLE_TOLERANCE` for an
            estimator that runs in FP64 and :data:`FLOAT_TOLERANCE` for FP32.

    Returns:
        A :class:`Conversion`. ``ok`` is False, with ``reason`` saying why, when a chain
        step has no ONNX form, skl2onnx cannot convert the estimator, or the graph's
        outputs differ from ``Bundle.predict`` beyond the tolerance.

    Raises:
        DataIntegrityError: ``bundle_or_artifact`` is bytes that are not a model bundle.
    """
    bundle = _as_bundle(bundle_or_artifact)
    signature = bundle.signature
    columns = _input_columns(bundle)
    base = Conversion(ok=False, input_shape=(-1, len(columns)), input_columns=columns, task=signature.task)
    try:
        front: _Graph | None = None
        folded: list[str] = []
        if bundle.preprocess is not None:
            front = _Graph(f"{_PREFIX}pp_")
            columns, folded = _fold(bundle, front, _FRONT_OUT)
        if hasattr(bundle.model, "to_onnx") and hasattr(bundle.model, "task"):
            model = _mlp_graph(bundle.model)
            model_dtype = "float32"
        else:
            model = _sklearn_graph(bundle.model, len(signature.features))
            model_dtype = "float64" if model.dtype == TensorProto.DOUBLE else "float32"
        proto = _assemble(model, front, len(columns))
    except _Refused as exc:
        return replace(base, reason=str(exc))
    except Exception as exc:  # a graph the checker or onnx refuses is a refusal too
        return replace(base, reason=f"the ONNX graph could not be built: {_first_line(exc)}")
    input_elem = proto.graph.input[0].type.tensor_type.elem_type
    chosen = tolerance or (DOUBLE_TOLERANCE if model_dtype == "float64" else FLOAT_TOLERANCE)
    built = replace(
        base,
        onnx=proto.SerializeToString(),
        input_dtype=np.dtype(_NP_OF[input_elem]).name,
        input_columns=columns,
        output_names=[o.name for o in proto.graph.output],
        classes=model.classes,
        model_dtype=model_dtype,
        dtype_note=model.note,
        folded_steps=folded,
        opset={op.domain: op.version for op in proto.opset_import},
        tolerance=chosen,
    )
    return _checked(built, bundle, sample)


def check(
    bundle_or_artifact: artifacts.Bundle | bytes,
    onnx_model: bytes,
    sample: pl.DataFrame | None = None,
    *,
    tolerance: Tolerance | None = None,
) -> Conversion:
    """Checks an ONNX model (such as ``Conversion.onnx``) against the bundle it came from.

    The input's dtype is read from the graph; its columns are the bundle's raw numeric
    inputs when it has a chain, else its features. Useful after any change to the bytes.

    Args:
        bundle_or_artifact: The original bundle or its artifact bytes.
        onnx_model: The serialized ONNX model.
        sample: As for :func:`convert`.
        tolerance: As for :func:`convert`; by default from the input dtype.

    Returns:
        The check's outcome as a :class:`Conversion` (``ok`` False with the numbers when
        the outputs differ beyond the tolerance).
    """
    bundle = _as_bundle(bundle_or_artifact)
    columns = _input_columns(bundle)
    base = Conversion(ok=False, input_shape=(-1, len(columns)), input_columns=columns, task=bundle.signature.task)
    try:
        proto = onnx.load_from_string(onnx_model)
        elem = proto.graph.input[0].type.tensor_type.elem_type
        dtype = np.dtype(_NP_OF[elem]).name
    except Exception as exc:  # not a model, or an input type no Lepton graph has
        return replace(base, reason=f"not an ONNX model with a float input: {_first_line(exc)}")
    built = replace(
        base,
        onnx=onnx_model,
        input_dtype=dtype,
        output_names=[o.name for o in proto.graph.output],
        opset={op.domain: op.version for op in proto.opset_import},
        tolerance=tolerance or (DOUBLE_TOLERANCE if dtype == "float64" else FLOAT_TOLERANCE),
    )
    return _checked(built, bundle, sample)


def _checked(built: Conversion, bundle: artifacts.Bundle, sample: pl.DataFrame | None) -> Conversion:
    assert built.tolerance is not None
    try:
        rows = _sample(bundle, sample)
        numbers = _check(built.onnx, bundle, rows, np.dtype(built.input_dtype), built.tolerance)
    except _Refused as exc:
        return replace(built, reason=str(exc))
    except Exception as exc:  # onnxruntime failing on the graph is a refusal, not a crash
        return replace(built, reason=f"onnxruntime could not run the graph: {_first_line(exc)}")
    reason = numbers.pop("reason")
    return replace(built, ok=not reason, reason=reason, sample=rows.source, **numbers)


# ---------------------------------------------------------------------------------------
# Edge bundles


def triton_config(conversion: Conversion, name: str, *, max_batch_size: int = TRITON_MAX_BATCH_SIZE) -> str:
    """The Triton ``config.pbtxt`` for a conversion: onnxruntime platform, dynamic batching.

    No ``instance_group`` is set, so Triton places one instance on each GPU when there is
    one (a Jetson's included) and on the CPU otherwise.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    proto = onnx.load_from_string(conversion.onnx)
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    for value, target in ((proto.graph.input, config.input), (proto.graph.output, config.output)):
        for tensor in value:
            dims = [d.dim_value for d in tensor.type.tensor_type.shape.dim[1:]]
            data_type = mc.DataType.Value(_TRITON_TYPE[tensor.type.tensor_type.elem_type])
            target.add(name=tensor.name, data_type=data_type, dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = TRITON_MAX_QUEUE_DELAY_US
    text: str = text_format.MessageToString(config)
    return text


def _edge_signature(conversion: Conversion, bundle: artifacts.Bundle) -> dict[str, Any]:
    proto = onnx.load_from_string(conversion.onnx)
    outputs = [
        {
            "name": o.name,
            "dtype": np.dtype(_NP_OF[o.type.tensor_type.elem_type]).name,
            "shape": [-1, *[d.dim_value for d in o.type.tensor_type.shape.dim[1:]]],
        }
        for o in proto.graph.output
    ]
    return {
        "format": EDGE_FORMAT,
        "format_version": EDGE_FORMAT_VERSION,
        "task": conversion.task,
        "input": {
            "name": conversion.input_name,
            "dtype": conversion.input_dtype,
            "shape": list(conversion.input_shape),
            "columns": conversion.input_columns,
            "missing": "NaN",
        },
        "outputs": outputs,
        "classes": conversion.classes,
        "preprocessing_folded": conversion.folded_steps,
        "signature": asdict(bundle.signature),
    }


def export_edge_bundle(
    artifact: artifacts.Bundle | bytes,
    sample: pl.DataFrame | None = None,
    *,
    name: str = "",
    max_batch_size: int = TRITON_MAX_BATCH_SIZE,
) -> bytes:
    """A zip to run the model without Lepton: ONNX, signature, check numbers, runner, Triton repo.

    Contents: ``model.onnx`` (preprocessing folded in), ``signature.json`` (input
    columns in order, dtypes, outputs, classes, the original signature), ``check.json``
    (:meth:`Conversion.report`), ``runner.py`` (numpy and onnxruntime only:
    ``python runner.py <unzipped dir> input.csv`` prints one JSON object per row) and
    ``triton/<name>/config.pbtxt`` with ``triton/<name>/1/model.onnx``, a model
    repository Triton loads as is.

    Args:
        artifact: The bundle or its artifact bytes.
        sample: Rows to check on, as for :func:`convert`.
        name: The Triton model name; by default ``<algorithm>-<target>`` of the signature.
        max_batch_size: Triton's ``max_batch_size``.

    Returns:
        The zip's bytes (fixed timestamps: the same inputs give the same bytes).

    Raises:
        ConversionRefused: The conversion is not exact (a ValueError too); the message
            says why.
    """
    bundle = _as_bundle(artifact)
    conversion = convert(bundle, sample)
    if not conversion.ok:
        raise ConversionRefused(conversion)
    signature = bundle.signature
    model_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or f"{signature.algorithm}-{signature.target}").strip("-.")
    files = [
        ("model.onnx", conversion.onnx),
        ("signature.json", json.dumps(_edge_signature(conversion, bundle), indent=1, sort_keys=True).encode()),
        ("check.json", json.dumps(conversion.report(), indent=1, sort_keys=True).encode()),
        ("runner.py", RUNNER_SOURCE.encode()),
        (
            f"triton/{model_name}/config.pbtxt",
            triton_config(conversion, model_name, max_batch_size=max_batch_size).encode(),
        ),
        (f"triton/{model_name}/1/model.onnx", conversion.onnx),
    ]
    return artifacts._zip(files)


#: ``runner.py`` of an edge bundle: standalone, numpy and onnxruntime only.
RUNNER_SOURCE: Final = '''\
"""Predicts with a Lepton edge bundle, using only numpy and onnxruntime.

    python runner.py MODEL_DIR INPUT.csv    # one JSON object per input row on stdout

or from Python: ``EdgeModel(model_dir).predict([{"age": 52, "bmi": None}, ...])``.

MODEL_DIR is the unzipped bundle (``model.onnx`` and ``signature.json``). The input
columns, their order and the tensor dtype come from ``signature.json``; every row must
name every column (extra ones are ignored). A missing value is an empty cell, ``NA``,
``NaN``, ``null`` or ``None``: it is sent as NaN, which the model treats as missing.
``true`` and ``false`` are 1 and 0. Each output line is ``{"prediction": ...}``, with
``"probabilities"`` (in ``signature.json``'s ``classes`` order) for classifiers.
Runs on Python 3.8 and later (JetPack 5 ships 3.8).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MISSING = frozenset({"", "na", "nan", "null", "none"})
BATCH_ROWS = 4096


def _number(value: Any, column: str, row: int) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, (bool, int, float)):
        return float(value)
    text = str(value).strip()
    lowered = text.lower()
    if lowered in MISSING:
        return float("nan")
    if lowered in ("true", "false"):
        return 1.0 if lowered == "true" else 0.0
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"row {row}: column {column!r} is {value!r}; expected a number") from None


class EdgeModel:
    """An unzipped edge bundle, ready to predict."""

    def __init__(self, model_dir: str | Path) -> None:
        root = Path(model_dir)
        meta = json.loads((root / "signature.json").read_text(encoding="utf-8"))
        self.input_name: str = meta["input"]["name"]
        self.columns: list[str] = list(meta["input"]["columns"])
        self.dtype = np.dtype(meta["input"]["dtype"])
        self.outputs: list[str] = [o["name"] for o in meta["outputs"]]
        self.classes = meta.get("classes")
        self.session = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])

    def matrix(self, rows: list[Mapping[str, Any]], first_row: int = 0) -> np.ndarray[Any, Any]:
        """The input tensor for ``rows``."""
        values = []
        for i, row in enumerate(rows, start=first_row):
            absent = [c for c in self.columns if c not in row]
            if absent:
                raise ValueError(f"row {i} lacks columns {absent}")
            values.append([_number(row[c], c, i) for c in self.columns])
        return np.asarray(values, dtype=np.float64).reshape(len(rows), len(self.columns)).astype(self.dtype)

    def predict(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One ``{"prediction": ..., ["probabilities": [...]]}`` per row, in order."""
        rows = list(rows)
        results: list[dict[str, Any]] = []
        for start in range(0, len(rows), BATCH_ROWS):
            x = self.matrix(rows[start : start + BATCH_ROWS], start)
            outputs = self.session.run(self.outputs, {self.input_name: x})
            named = dict(zip(self.outputs, outputs))  # noqa: B905 - zip(strict=) needs Python 3.10
            for i in range(len(x)):
                item: dict[str, Any] = {"prediction": float(named["prediction"][i, 0])}
                if "probabilities" in named:
                    item["probabilities"] = [float(p) for p in named["probabilities"][i]]
                results.append(item)
        return results


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python runner.py MODEL_DIR INPUT.csv", file=sys.stderr)
        return 2
    model = EdgeModel(args[0])
    try:
        predictions = model.predict(read_csv(args[1]))
    except ValueError as exc:
        print(f"{args[1]}: {exc}", file=sys.stderr)
        return 1
    for item in predictions:
        sys.stdout.write(json.dumps(item) + "\\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


__all__ = [
    "DOUBLE_TOLERANCE",
    "FLOAT_TOLERANCE",
    "FOLDABLE_STEPS",
    "INPUT_NAME",
    "ML_OPSET",
    "OPSET",
    "PREDICTION",
    "PROBABILITIES",
    "RUNNER_SOURCE",
    "SAMPLE_ROWS",
    "Conversion",
    "ConversionRefused",
    "Tolerance",
    "check",
    "convert",
    "export_edge_bundle",
    "triton_config",
]
