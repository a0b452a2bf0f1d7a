"""Conversion: a bundle's model (and its preprocessing chain) to one checked ONNX graph.

:func:`convert` folds the chain (:mod:`._folding`), converts the estimator
(:mod:`._estimators`) and runs the exactness check (:mod:`._exactness`); :func:`check`
runs the check alone on a graph made earlier. Either answers a :class:`Conversion`:
a conversion that is not exact within the tolerance, or that skl2onnx cannot do at all,
comes back with ``ok=False`` and the reason, never as an exception and never as a
silently different model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto

from lepton_core.errors import FailedPrecondition
from lepton_ml import artifacts
from lepton_ml.onnx_export._estimators import assemble, mlp_graph, sklearn_graph
from lepton_ml.onnx_export._exactness import (
    DOUBLE_TOLERANCE,
    FLOAT_TOLERANCE,
    Tolerance,
    compare,
    draw_sample,
    input_columns,
)
from lepton_ml.onnx_export._folding import fold
from lepton_ml.onnx_export._graph import FRONT_OUT, INPUT_NAME, NP_OF, PREFIX, Graph, Refused, first_line


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


def as_bundle(bundle: artifacts.Bundle) -> artifacts.Bundle:
    """The bundle as given; artifact bytes are refused (load them, verified, with
    :func:`lepton_ml.artifacts.load_bundle` first)."""
    if not isinstance(bundle, artifacts.Bundle):
        raise TypeError(f"a loaded artifacts.Bundle is required, not {type(bundle).__name__}")
    return bundle


def convert(
    bundle_or_artifact: artifacts.Bundle,
    sample: pl.DataFrame | None = None,
    *,
    tolerance: Tolerance | None = None,
) -> Conversion:
    """Converts a bundle's model (and its preprocessing chain) to ONNX and checks it is exact.

    Args:
        bundle_or_artifact: A loaded :class:`~lepton_ml.artifacts.Bundle` (from a verified artifact).
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
    """
    bundle = as_bundle(bundle_or_artifact)
    signature = bundle.signature
    columns = input_columns(bundle)
    base = Conversion(ok=False, input_shape=(-1, len(columns)), input_columns=columns, task=signature.task)
    try:
        front: Graph | None = None
        folded: list[str] = []
        if bundle.preprocess is not None:
            front = Graph(f"{PREFIX}pp_")
            columns, folded = fold(bundle, front, FRONT_OUT)
        if hasattr(bundle.model, "to_onnx") and hasattr(bundle.model, "task"):
            model = mlp_graph(bundle.model)
            model_dtype = "float32"
        else:
            model = sklearn_graph(bundle.model, len(signature.features))
            model_dtype = "float64" if model.dtype == TensorProto.DOUBLE else "float32"
        proto = assemble(model, front, len(columns))
    except Refused as exc:
        return replace(base, reason=str(exc))
    except Exception as exc:  # a graph the checker or onnx refuses is a refusal too
        return replace(base, reason=f"the ONNX graph could not be built: {first_line(exc)}")
    input_elem = proto.graph.input[0].type.tensor_type.elem_type
    chosen = tolerance or (DOUBLE_TOLERANCE if model_dtype == "float64" else FLOAT_TOLERANCE)
    built = replace(
        base,
        onnx=proto.SerializeToString(),
        input_dtype=np.dtype(NP_OF[input_elem]).name,
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
    bundle_or_artifact: artifacts.Bundle,
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
    bundle = as_bundle(bundle_or_artifact)
    columns = input_columns(bundle)
    base = Conversion(ok=False, input_shape=(-1, len(columns)), input_columns=columns, task=bundle.signature.task)
    try:
        proto = onnx.load_from_string(onnx_model)
        elem = proto.graph.input[0].type.tensor_type.elem_type
        dtype = np.dtype(NP_OF[elem]).name
    except Exception as exc:  # not a model, or an input type no Lepton graph has
        return replace(base, reason=f"not an ONNX model with a float input: {first_line(exc)}")
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
        rows = draw_sample(bundle, sample)
        numbers = compare(built.onnx, bundle, rows, np.dtype(built.input_dtype), built.tolerance)
    except Refused as exc:
        return replace(built, reason=str(exc))
    except Exception as exc:  # onnxruntime failing on the graph is a refusal, not a crash
        return replace(built, reason=f"onnxruntime could not run the graph: {first_line(exc)}")
    reason = numbers.pop("reason")
    return replace(built, ok=not reason, reason=reason, sample=rows.source, **numbers)
