"""Recipe folding: a bundle's preprocessing chain replayed as ONNX nodes in front of the estimator.

The graph then takes the raw numeric columns the platform's Triton model takes
(``features``, FP64, the signature's numeric inputs in their raw order, NaN meaning
missing). Only steps with an exact ONNX form are folded (:data:`FOLDABLE_STEPS`); a
feature that depends on any other step (one-hot of text, forward fill, arithmetic on
narrow dtypes) makes the conversion refuse and say which step on which column. A step no
feature depends on does not refuse. The folded features are bit for bit those polars
computes (nulls are tracked apart from NaN, scalar division is a product with the
reciprocal as in polars, clip keeps NaN), except ``log`` and ``pow``, whose libm may
differ by an ulp. Rows the original refuses (a strict cast that does not convert) are
outside the contract: polars raises on them, the graph returns a value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from onnx import TensorProto, numpy_helper

from lepton_ml import artifacts, recipes
from lepton_ml.onnx_export._graph import INPUT_NAME, Graph, Refused

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
#: Column dtypes whose polars arithmetic a float64 graph reproduces exactly.
_EXACT_DTYPES: Final = frozenset({"Float64", "Int64", "Boolean"})
_NARROW_DTYPES: Final = frozenset({"Float32", "Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32", "UInt64"})


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

    def __init__(self, graph: Graph, raw: list[tuple[str, str]], numeric: list[str]) -> None:
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
            raise Refused(f"step '{op}' names column '{name}', which the chain does not have at that point")
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
            raise Refused(f"step '{op}' needs a numeric column but '{name}' is {col.dtype}; the chain cannot run")

    # ------------------------------------------------------------------ steps

    def step(self, step: Any, params: dict[str, Any]) -> None:
        op: str = step.op
        if op in recipes.ROW_DROPPING_OPS:
            return  # serving skips row-dropping steps; so does the graph
        handler = getattr(self, f"_step_{op}", None)
        if handler is None:
            raise Refused(f"step '{op}' has no ONNX form")
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
                raise Refused(f"step 'fill_nulls' fills Boolean column '{name}' with {fill!r}; the chain cannot run")
            value, dtype = float(fill), "Boolean"
        else:
            narrow = self._narrow(col, step.op, name)
            if narrow is not None:
                self.env[name] = narrow
                return
            if isinstance(fill, bool) or not isinstance(fill, int | float):
                raise Refused(f"step 'fill_nulls' fills numeric column '{name}' with {fill!r}; the chain cannot run")
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
            raise Refused(f"step 'rename' renames onto an existing column {sorted(set(moved) & set(kept))}")
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
            raise Refused(f"step 'bucketize' writes '{out}', which already exists; the chain cannot run")
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
                raise Refused(f"feature '{name}' is not a column the chain produces")
            col = self.env[name]
            if col.opaque:
                raise Refused(col.opaque)
            parts.append(g.op("Where", col.mask, g.const(math.nan), col.values) if col.mask else col.values)
        g.op("Concat", *parts, output=output, axis=1)


def fold(bundle: artifacts.Bundle, graph: Graph, output: str) -> tuple[list[str], list[str]]:
    """Writes the chain into ``graph``; returns the input columns and the folded steps."""
    assert bundle.preprocess is not None
    signature = bundle.signature
    raw = raw_columns(signature)
    numeric = signature.numeric_inputs()
    if not numeric:
        raise Refused("the bundle has no numeric input columns to feed an ONNX graph")
    folder = _Folder(graph, raw, numeric)
    folder.add_null_column(bundle.preprocess.target, bundle.preprocess.target_dtype)
    for entry in bundle.preprocess.recipes:
        try:
            recipe = recipes.Recipe.model_validate(entry["recipe"])
            fitted = list(entry["fitted"])
        except Exception as exc:  # pydantic or a malformed entry: the bundle cannot be replayed either
            raise Refused(f"the preprocessing chain does not parse: {exc}") from exc
        if len(fitted) != len(recipe.steps):
            raise Refused(f"{len(fitted)} fitted entries for {len(recipe.steps)} steps in the preprocessing chain")
        for step, params in zip(recipe.steps, fitted, strict=True):
            folder.step(step, dict(params))
    folder.features(signature.features, output)
    return numeric, folder.folded


def raw_columns(signature: artifacts.Signature) -> list[tuple[str, str]]:
    """``(name, dtype)`` of each raw input column, in upload order (the features when none are recorded)."""
    if signature.inputs:
        return [(c["name"], c["dtype"]) for c in signature.inputs]
    return [(name, "Float64") for name in signature.features]
