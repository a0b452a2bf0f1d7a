"""The exactness check: the ONNX graph and the original bundle run on the same rows, compared.

The rows are a sample the caller gives or :data:`SAMPLE_ROWS` rows synthesized from the
signature (seeded, so repeatable). FP32 models are checked with :data:`FLOAT_TOLERANCE`,
FP64 ones with :data:`DOUBLE_TOLERANCE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from lepton_ml import artifacts
from lepton_ml.onnx_export._folding import raw_columns
from lepton_ml.onnx_export._graph import INPUT_NAME, PREDICTION, PROBABILITIES, Refused, first_line, session_options

#: Rows synthesized from the signature when no sample is given.
SAMPLE_ROWS: Final = 200
SAMPLE_SEED: Final = 0


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
class Sample:
    """Rows to check on, as the graph takes them and as the original does."""

    tensor: npt.NDArray[np.float64]  # the input columns, NaN for missing
    frame: pl.DataFrame  # the same rows as the platform's Triton model builds them
    source: str


def input_columns(bundle: artifacts.Bundle) -> list[str]:
    """The graph's input columns: the raw numeric inputs when a chain is folded, else the features."""
    return bundle.signature.numeric_inputs() if bundle.preprocess is not None else list(bundle.signature.features)


def _frame_from_tensor(
    bundle: artifacts.Bundle, x: npt.NDArray[np.float64], text: dict[str, list[str | None]]
) -> pl.DataFrame:
    """The raw frame the platform's Triton model builds from a ``features`` tensor.

    Mirrors ``triton_model.model.raw_frame``: NaN means missing, each column goes back
    to the dtype it had at upload; text columns (not in the graph) come from the sample.
    """
    dtypes = dict(raw_columns(bundle.signature))
    columns: dict[str, pl.Series] = {}
    for j, name in enumerate(input_columns(bundle)):
        series = pl.Series(name, x[:, j], dtype=pl.Float64).fill_nan(None)
        dtype = getattr(pl, dtypes.get(name, "Float64"), pl.Float64)
        columns[name] = series.cast(dtype) if dtype != pl.Float64 else series
    for name, values in text.items():
        columns[name] = pl.Series(name, values, dtype=pl.String)
    return pl.DataFrame(columns)


def _given_sample(bundle: artifacts.Bundle, sample: pl.DataFrame) -> Sample:
    names = input_columns(bundle)
    missing = [n for n in [*names, *bundle.signature.text_inputs()] if n not in sample.columns]
    if missing:
        raise Refused(f"the sample lacks input columns {missing}")
    if sample.height == 0:
        raise Refused("the sample has no rows")
    try:
        x = sample.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy().astype(np.float64)
    except pl.exceptions.PolarsError as exc:
        raise Refused(f"the sample's input columns are not all numeric: {first_line(exc)}") from exc
    text = {n: sample.get_column(n).cast(pl.String).to_list() for n in bundle.signature.text_inputs()}
    return Sample(x, _frame_from_tensor(bundle, x, text), "given")


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


def _synthesized_sample(bundle: artifacts.Bundle) -> Sample:
    """Up to ``SAMPLE_ROWS`` seeded rows drawn per input column from its dtype and :func:`_value_ranges`.

    Float columns are uniform over the column's range; without one, half the candidate
    rows are standard normal and half log-normal (positive, for logs and ratios). Int
    columns are those values rounded, Boolean columns 0/1, text columns ``"0"``. Rows
    whose features come out NaN or infinite (the log of a negative number, say) are
    dropped: the estimator was trained on finite features and is not asked about others.
    About one row in ten is then null in each column the chain fills, so the comparison
    covers the folded imputation; a column whose null would reach the estimator gets none.
    """
    names = input_columns(bundle)
    dtypes = dict(raw_columns(bundle.signature))
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
        raise Refused(
            f"rows synthesized from the signature do not pass the chain ({first_line(exc)}); give a sample"
        ) from exc
    keep = np.flatnonzero(np.isfinite(features).all(axis=1))[:SAMPLE_ROWS]
    if len(keep) == 0:
        raise Refused("no row synthesized from the signature gives finite features; give a sample")
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
    return Sample(x, _frame_from_tensor(bundle, x, text), "synthesized")


def compare(
    onnx_bytes: bytes, bundle: artifacts.Bundle, sample: Sample, input_dtype: Any, tolerance: Tolerance
) -> dict[str, Any]:
    """Runs the graph and the original on the sample; the numbers and, on failure, the reason."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {INPUT_NAME: sample.tensor.astype(input_dtype)}), strict=True))
    try:
        features = bundle.features(sample.frame)
        expected = np.asarray(bundle.model.predict(features))
    except Exception as exc:  # the original itself fails on these rows: nothing to compare with
        raise Refused(f"the original bundle cannot predict on the sample: {first_line(exc)}") from exc
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


def draw_sample(bundle: artifacts.Bundle, sample: pl.DataFrame | None) -> Sample:
    """The caller's rows when given, else rows synthesized from the signature."""
    return _given_sample(bundle, sample) if sample is not None else _synthesized_sample(bundle)
