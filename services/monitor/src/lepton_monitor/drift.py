"""Feature and prediction drift of live data against the data service's reference profile.

The reference is the per-column profile the data service computes at ingest; how the monitor reads it is
described in :mod:`lepton_monitor.drift_profile`. The statistics (PSI, Kolmogorov-Smirnov, chi-square) and
the verdict they give are described in :mod:`lepton_monitor.drift_stats`. This module puts them together:
:func:`column_drift` for one column, :func:`drift_report` for the features and the predictions of a model.

Live values that are missing or not finite (None, NaN, ±inf) are dropped before any statistic and counted
in :attr:`FeatureDrift.n_dropped`; the reference histogram likewise holds only finite values.

The verdict of one feature (``drift``, ``no_drift`` or ``insufficient_data``) is described in
:func:`verdict`. Every result is a pydantic model of plain ``float``/``int``/``str`` values, so
``model_dump()`` is JSON-serialisable as is.

Every public name of the drift modules is importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt
from pydantic import BaseModel

from lepton_monitor.drift_profile import (
    DISCRETE_VALUES_PER_BIN,
    DriftInputError,
    ReferenceColumn,
    ReferenceHistogram,
    ReferenceTopValue,
    checked_histogram,
    looks_discrete,
    parse_reference,
    parse_reference_column,
)
from lepton_monitor.drift_stats import (
    CATEGORICAL,
    DRIFT,
    INSUFFICIENT_DATA,
    NO_DRIFT,
    NUMERIC,
    OTHER,
    ChiSquareResult,
    DriftThresholds,
    Kind,
    KSMethod,
    KSResult,
    Verdict,
    bin_live,
    category_counts,
    category_values,
    chi_square,
    finite_values,
    ks_from_histogram,
    ks_two_sample,
    psi,
    verdict,
)


class FeatureDrift(BaseModel):
    """Drift of one column.

    Attributes:
        name: The column.
        kind: ``numeric`` (histogram bins) or ``categorical`` (top values plus ``other``).
        verdict: ``drift``, ``no_drift`` or ``insufficient_data`` (see :func:`verdict`).
        reason: Why the verdict, in words.
        n_live: Live values used (after dropping missing and non-finite ones).
        n_dropped: Live values dropped as missing or not finite.
        n_reference: Reference values (the histogram's total, or the categorical column's count).
        psi: Population stability index; None when data is insufficient.
        ks_stat: Numeric columns: KS statistic; None when data is insufficient.
        ks_p: Numeric columns: KS p-value.
        ks_method: ``two_sample`` (reference rows), ``histogram`` (piecewise-linear reference CDF) or
            ``histogram_binned`` (fractions below the bin edges only, for discrete columns).
        chi2: Categorical columns: chi-square statistic; None when data is insufficient or there is one
            bucket only.
        chi2_p: Categorical columns: chi-square p-value.
        edges: Numeric columns: the reference bin edges.
        categories: Categorical columns: bucket labels, the reference's top values then :data:`OTHER`.
        reference_counts: Reference values per bin or category.
        live_counts: Live values per bin or category, binned the reference's way (for plotting).
    """

    name: str
    kind: Kind
    verdict: Verdict
    reason: str
    n_live: int
    n_dropped: int
    n_reference: int
    psi: float | None = None
    ks_stat: float | None = None
    ks_p: float | None = None
    ks_method: KSMethod | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    edges: list[float] | None = None
    categories: list[str] | None = None
    reference_counts: list[int]
    live_counts: list[int]


class DriftReport(BaseModel):
    """Drift of the requested features, and of the predictions when a prediction reference was given.

    Attributes:
        features: One result per requested feature, in the requested order.
        prediction: The prediction column's result, or None.
        drifted: Names of the features (and the prediction column) whose verdict is ``drift``.
        thresholds: The thresholds the verdicts used.
    """

    features: list[FeatureDrift]
    prediction: FeatureDrift | None = None
    drifted: list[str]
    thresholds: DriftThresholds


def column_drift(
    column: Any,
    live_values: Any,
    *,
    name: str | None = None,
    reference_sample: npt.ArrayLike | None = None,
    thresholds: DriftThresholds | None = None,
) -> FeatureDrift:
    """Drift of one column's live values against its reference profile.

    A column with a ``histogram`` is numeric, one with ``top_values`` categorical. For a numeric column the
    KS test is :func:`ks_two_sample` when ``reference_sample`` is given, else :func:`ks_from_histogram`, with
    ``continuous=False`` when the reference :func:`looks_discrete`.

    Args:
        column: The reference column profile (see :func:`parse_reference_column`).
        live_values: The live values of the column.
        name: The result's name; the reference column's name when None.
        reference_sample: Reference rows of a numeric column, when available.
        thresholds: The thresholds (defaults when None).

    Returns:
        The result; ``insufficient_data`` when either side has fewer than ``thresholds.min_samples`` values.

    Raises:
        DriftInputError: For a malformed reference or non-numeric values in a numeric column.
    """
    t = thresholds or DriftThresholds()
    ref_column = parse_reference_column(column)
    label = name or ref_column.name
    if ref_column.histogram is not None:
        edges, ref_counts = checked_histogram(ref_column)
        values, dropped = finite_values(live_values, field=f"live.{label}")
        live_counts = bin_live(edges, values)
        base: dict[str, Any] = {
            "name": label,
            "kind": NUMERIC,
            "n_live": int(values.size),
            "n_dropped": dropped,
            "n_reference": int(ref_counts.sum()),
            "edges": [float(v) for v in edges],
            "reference_counts": [int(v) for v in ref_counts],
            "live_counts": live_counts,
        }
        short = _insufficient(base["n_live"], base["n_reference"], t)
        if short:
            return FeatureDrift(verdict=INSUFFICIENT_DATA, reason=short, **base)
        psi_value = psi(ref_counts, live_counts, epsilon=t.epsilon)
        method: KSMethod
        if reference_sample is not None:
            ks, method = ks_two_sample(reference_sample, values), "two_sample"
        else:
            continuous = not looks_discrete(ref_column)
            ks = ks_from_histogram(edges, ref_counts, values, continuous=continuous)
            method = "histogram" if continuous else "histogram_binned"
        decided, reason = verdict(NUMERIC, psi_value=psi_value, ks=ks, thresholds=t)
        return FeatureDrift(
            verdict=decided,
            reason=reason,
            psi=psi_value,
            ks_stat=ks.statistic,
            ks_p=ks.pvalue,
            ks_method=method,
            **base,
        )
    if ref_column.top_values is not None:
        texts, dropped = category_values(live_values)
        labels, ref_list, live_list = category_counts(ref_column, texts)
        base = {
            "name": label,
            "kind": CATEGORICAL,
            "n_live": len(texts),
            "n_dropped": dropped,
            "n_reference": ref_column.count,
            "categories": labels,
            "reference_counts": ref_list,
            "live_counts": live_list,
        }
        short = _insufficient(base["n_live"], base["n_reference"], t)
        if short:
            return FeatureDrift(verdict=INSUFFICIENT_DATA, reason=short, **base)
        psi_value = psi(ref_list, live_list, epsilon=t.epsilon)
        chi2 = chi_square(ref_list, live_list, epsilon=t.epsilon) if len(labels) >= 2 else None
        decided, reason = verdict(CATEGORICAL, psi_value=psi_value, chi2=chi2, thresholds=t)
        return FeatureDrift(
            verdict=decided,
            reason=reason,
            psi=psi_value,
            chi2=None if chi2 is None else chi2.statistic,
            chi2_p=None if chi2 is None else chi2.pvalue,
            **base,
        )
    raise DriftInputError(
        "has neither a histogram (numeric) nor top_values (categorical); a numeric column without a finite "
        "reference value has no histogram",
        field=f"reference.{ref_column.name}",
    )


def _insufficient(n_live: int, n_reference: int, t: DriftThresholds) -> str:
    if n_live < t.min_samples:
        return f"{n_live} live values, fewer than min_samples={t.min_samples}"
    if t.min_reference_samples is not None:
        if n_reference < t.min_reference_samples:
            return f"{n_reference} reference values, fewer than min_reference_samples={t.min_reference_samples}"
    elif n_reference < t.min_samples:
        return f"{n_reference} reference values, fewer than min_samples={t.min_samples}"
    return ""


def drift_report(
    reference: Any,
    live: Any,
    features: Sequence[str] | None = None,
    *,
    prediction_reference: Any = None,
    prediction_column: str = "prediction",
    reference_samples: Mapping[str, npt.ArrayLike] | None = None,
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Drift of live features (and predictions) against the reference profile.

    Args:
        reference: The reference profile's columns, in any shape :func:`parse_reference` reads.
        live: Live values: a mapping of column name to values, or a polars/pandas data frame.
        features: The columns to check, in order; when None, every reference column that ``live`` holds
            (other than ``prediction_column``).
        prediction_reference: The column profile of the reference predictions (same JSON shape as a
            feature's), or None to skip prediction drift.
        prediction_column: The live column holding the predictions.
        reference_samples: Reference rows per numeric column, for :func:`ks_two_sample` instead of the
            histogram KS.
        thresholds: The thresholds (defaults when None).

    Returns:
        The report.

    Raises:
        DriftInputError: For an unknown feature (``field="features"``), a feature missing from ``live``
            (``field="live.<name>"``), or a malformed reference (``field="reference..."``).
    """
    t = thresholds or DriftThresholds()
    columns = reference if _is_parsed(reference) else parse_reference(reference)
    samples = reference_samples or {}
    if features is None:
        names = [n for n in columns if n != prediction_column and _has_column(live, n)]
    else:
        if isinstance(features, str):
            raise DriftInputError("must be a list of column names, not one string", field="features")
        names = list(features)
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise DriftInputError(
                f"unknown feature(s) {unknown}; the reference profile has {sorted(columns)}", field="features"
            )
        if len(set(names)) != len(names):
            raise DriftInputError("lists a feature twice", field="features")
    results = [
        column_drift(columns[n], _live_column(live, n), reference_sample=samples.get(n), thresholds=t) for n in names
    ]
    prediction = None
    if prediction_reference is not None:
        prediction = column_drift(
            parse_reference_column(prediction_reference, field="prediction_reference"),
            _live_column(live, prediction_column),
            name=prediction_column,
            reference_sample=samples.get(prediction_column),
            thresholds=t,
        )
    drifted = [r.name for r in [*results, *([prediction] if prediction else [])] if r.verdict == DRIFT]
    return DriftReport(features=results, prediction=prediction, drifted=drifted, thresholds=t)


def _live_column(live: Any, name: str) -> Any:
    if isinstance(live, Mapping):
        if name not in live:
            raise DriftInputError(f"live data has no column {name!r}", field=f"live.{name}")
        return live[name]
    columns = getattr(live, "columns", None)
    if columns is None:
        raise DriftInputError(
            f"expected a mapping of column to values or a data frame, got {type(live).__name__}", field="live"
        )
    if name not in list(columns):
        raise DriftInputError(f"live data has no column {name!r}", field=f"live.{name}")
    return live[name]


def _is_parsed(reference: Any) -> bool:
    return isinstance(reference, Mapping) and all(isinstance(v, ReferenceColumn) for v in reference.values())


def _has_column(live: Any, name: str) -> bool:
    if isinstance(live, Mapping):
        return name in live
    return name in list(getattr(live, "columns", []))


__all__ = [
    "CATEGORICAL",
    "DISCRETE_VALUES_PER_BIN",
    "DRIFT",
    "INSUFFICIENT_DATA",
    "NO_DRIFT",
    "NUMERIC",
    "OTHER",
    "ChiSquareResult",
    "DriftInputError",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "KSResult",
    "ReferenceColumn",
    "ReferenceHistogram",
    "ReferenceTopValue",
    "bin_live",
    "category_counts",
    "category_values",
    "chi_square",
    "column_drift",
    "drift_report",
    "finite_values",
    "ks_from_histogram",
    "ks_two_sample",
    "looks_discrete",
    "parse_reference",
    "parse_reference_column",
    "psi",
    "verdict",
]
