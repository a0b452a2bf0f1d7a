"""Feature and prediction drift of live data against the data service's reference profile.

The reference is the per-column profile the data service computes at ingest
(``lepton_data.profiling.ColumnProfile``). Services never import each other, so the monitor receives
that profile as JSON (the pydantic model's ``model_dump``) and parses it with its own, smaller models
below (:class:`ReferenceColumn`, :class:`ReferenceHistogram`, :class:`ReferenceTopValue`): only the fields
drift needs, every other field ignored. They follow the profile's conventions:

* A numeric column has a ``histogram``: equal-width bins where bin ``k`` is ``[edges[k], edges[k+1])`` and
  the last one is closed (``numpy.histogram``'s conventions). A column whose values were all equal has one
  zero-width bin, ``edges == [v, v]``.
* A text, boolean or categorical column has ``top_values``: its most frequent values (at most ten), as
  text, with their counts; ``count`` is the number of non-null values, so
  ``count - sum(top counts)`` values were something else (the ``other`` bucket).

Statistics:

* **PSI** (population stability index), over the reference's bins or categories, with the natural log:
  ``sum((live_share - ref_share) * ln(live_share / ref_share))``. A share below ``epsilon`` (default
  ``1e-4``) is raised to ``epsilon`` on either side before the sum, so an empty bin adds a large but finite
  term; the shares are not renormalised afterwards.
* **Kolmogorov-Smirnov** for numeric columns: :func:`ks_two_sample` when reference rows are at hand (equal
  to ``scipy.stats.ks_2samp``), else :func:`ks_from_histogram` against the reference histogram.
* **Chi-square** goodness of fit for categorical columns (``scipy.stats.chisquare`` of the live counts
  against the counts the reference shares predict).

Live values that are missing or not finite (None, NaN, ±inf) are dropped before any statistic and counted
in :attr:`FeatureDrift.n_dropped`; the reference histogram likewise holds only finite values.

The verdict of one feature (``drift``, ``no_drift`` or ``insufficient_data``) is described in
:func:`verdict`. Every result is a pydantic model of plain ``float``/``int``/``str`` values, so
``model_dump()`` is JSON-serialisable as is.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats

from lepton_core.errors import InvalidArgument
from lepton_core.validation import invalid_argument_from

NUMERIC: Final = "numeric"
CATEGORICAL: Final = "categorical"
DRIFT: Final = "drift"
NO_DRIFT: Final = "no_drift"
INSUFFICIENT_DATA: Final = "insufficient_data"
OTHER = "__other__"
"""Label of the bucket that holds every category outside the reference's top values."""

Kind = Literal["numeric", "categorical"]
Verdict = Literal["drift", "no_drift", "insufficient_data"]
KSMethod = Literal["two_sample", "histogram", "histogram_binned"]

#: A numeric reference column with at most this many distinct values per histogram bin, or with two equal
#: quantiles (one value holding at least the mass between them), is treated as discrete by
#: :func:`column_drift`: its KS statistic compares fractions below the bin edges only (``continuous=False``
#: in :func:`ks_from_histogram`), since a piecewise-linear CDF misrepresents a column whose mass sits on a
#: few values (a 0/1 flag shows a KS distance of about 0.5 against itself, the diabetes data's ``s4``, with
#: 66 distinct values, about 0.25).
DISCRETE_VALUES_PER_BIN = 4


class DriftInputError(InvalidArgument, ValueError):
    """A reference profile or live input that drift cannot use; ``field`` names the culprit.

    It is an :class:`~lepton_core.errors.InvalidArgument` (gRPC ``INVALID_ARGUMENT``) and a ``ValueError``.
    """


class ReferenceHistogram(BaseModel):
    """The ``histogram`` of a data-service column profile (the fields drift reads).

    Attributes:
        edges: Bin edges, ``len(counts) + 1`` of them, increasing; ``[v, v]`` for a constant column.
        counts: Reference values per bin.
    """

    model_config = ConfigDict(extra="ignore")

    edges: list[float]
    counts: list[int]


class ReferenceTopValue(BaseModel):
    """One entry of a profile's ``top_values``: a category as text and its reference count."""

    model_config = ConfigDict(extra="ignore")

    value: str
    count: int


class ReferenceColumn(BaseModel):
    """The fields of a data-service ``ColumnProfile`` that drift reads; any other field is ignored.

    Attributes:
        name: The column name.
        count: Non-null reference values.
        distinct: Distinct non-null reference values, when known.
        quantiles: Numeric columns: reference quantiles by name (``p01`` … ``p99``), when known.
        histogram: Numeric columns with a finite range: the reference histogram.
        top_values: Non-numeric columns: the most frequent reference values.
    """

    model_config = ConfigDict(extra="ignore")

    name: str
    count: int = 0
    distinct: int | None = None
    quantiles: dict[str, float] | None = None
    histogram: ReferenceHistogram | None = None
    top_values: list[ReferenceTopValue] | None = None


class KSResult(BaseModel):
    """A two-sided Kolmogorov-Smirnov statistic and its p-value."""

    statistic: float
    pvalue: float


class ChiSquareResult(BaseModel):
    """A chi-square goodness-of-fit statistic and its p-value."""

    statistic: float
    pvalue: float


class DriftThresholds(BaseModel):
    """Where :func:`verdict` draws its lines. The defaults are the conventional ones.

    Attributes:
        psi: PSI at or above this is drift (0.1-0.2 is usually read as a moderate shift, 0.2+ as large).
        ks_alpha: A KS p-value below this is significant.
        ks_min_statistic: ...but KS claims drift only when the statistic is also at least this, so that a
            tiny, practically irrelevant difference on a large sample raises nothing.
        chi2_alpha: A chi-square p-value below this is drift.
        min_samples: Fewer usable live values than this (or fewer reference values) gives
            ``insufficient_data`` and claims nothing.
        min_reference_samples: When set, the reference side is held to this instead of ``min_samples``: a
            training set is as large as it is, while live values keep arriving, so the monitor asks more
            of the live side than of the reference.
        epsilon: Floor of a bin's share in PSI (and of an expected share in chi-square).
    """

    model_config = ConfigDict(frozen=True)

    psi: float = Field(default=0.2, gt=0)
    ks_alpha: float = Field(default=0.01, gt=0, lt=1)
    ks_min_statistic: float = Field(default=0.1, ge=0, le=1)
    chi2_alpha: float = Field(default=0.01, gt=0, lt=1)
    min_samples: int = Field(default=100, ge=1)
    min_reference_samples: int | None = Field(default=None, ge=1)
    epsilon: float = Field(default=1e-4, gt=0, lt=1)


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


# --------------------------------------------------------------------------------------------- parsing


def parse_reference(profile: Any) -> dict[str, ReferenceColumn]:
    """Reads reference columns from a data-service profile as JSON.

    Args:
        profile: A ``DatasetProfile`` dump (a mapping with ``columns``), a list of ``ColumnProfile`` dumps,
            a mapping of column name to ``ColumnProfile`` dump, a single ``ColumnProfile`` dump, the JSON
            text or bytes of any of these, the pydantic models themselves, or parsed :class:`ReferenceColumn`
            objects.

    Returns:
        Reference columns by name.

    Raises:
        DriftInputError: When the profile has none of these shapes or a column is malformed.
    """
    if isinstance(profile, str | bytes | bytearray):
        try:
            profile = json.loads(profile)
        except ValueError as e:
            raise DriftInputError(f"is not valid JSON: {e}", field="reference") from None
    if isinstance(profile, BaseModel) and not isinstance(profile, ReferenceColumn):
        profile = profile.model_dump()
    if isinstance(profile, Mapping) and "columns" in profile:
        profile = profile["columns"]
    elif isinstance(profile, Mapping) and isinstance(profile.get("name"), str):
        profile = [profile]  # a single column profile
    if isinstance(profile, Mapping):
        items: Iterable[Any] = profile.values()
    elif isinstance(profile, Sequence):
        items = profile
    else:
        raise DriftInputError(
            f"expected a profile with 'columns' or a list of column profiles, got {type(profile).__name__}",
            field="reference",
        )
    columns: dict[str, ReferenceColumn] = {}
    for i, item in enumerate(items):
        column = parse_reference_column(item, field=f"reference.columns[{i}]")
        columns[column.name] = column
    return columns


def parse_reference_column(column: Any, *, field: str = "reference") -> ReferenceColumn:
    """Reads one reference column (a ``ColumnProfile`` dump, its JSON, or a :class:`ReferenceColumn`).

    Args:
        column: The column profile.
        field: The name to blame in errors.

    Returns:
        The parsed column.

    Raises:
        DriftInputError: When ``column`` is not a column profile.
    """
    if isinstance(column, ReferenceColumn):
        return column
    try:
        if isinstance(column, str | bytes | bytearray):
            return ReferenceColumn.model_validate_json(column)
        if isinstance(column, BaseModel):
            column = column.model_dump()
        return ReferenceColumn.model_validate(column)
    except ValidationError as e:
        problem = invalid_argument_from(e, "profile")
        raise DriftInputError(f"is not a column profile ({problem.field}: {problem.message})", field=field) from None


def _checked_histogram(column: ReferenceColumn) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    field = f"reference.{column.name}.histogram"
    hist = column.histogram
    if hist is None:
        raise DriftInputError("is missing: a numeric column needs a histogram", field=field)
    return _validate_histogram(hist.edges, hist.counts, field)


def _validate_histogram(
    edges: Sequence[float] | npt.ArrayLike, counts: Sequence[int] | npt.ArrayLike, field: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    e = np.asarray(edges, dtype=np.float64).ravel()
    c = np.asarray(counts, dtype=np.float64).ravel()
    if c.size == 0:
        raise DriftInputError("has no bins", field=field)
    if e.size != c.size + 1:
        raise DriftInputError(f"has {e.size} edges for {c.size} bins; expected {c.size + 1}", field=field)
    if not np.all(np.isfinite(e)):
        raise DriftInputError("has a non-finite edge", field=field)
    if np.any(c < 0) or np.any(c != np.round(c)):
        raise DriftInputError("has a negative or fractional count", field=field)
    if c.size == 1:
        if e[1] < e[0]:
            raise DriftInputError("edges must not decrease", field=field)
    elif np.any(np.diff(e) <= 0):
        raise DriftInputError("edges must increase strictly", field=field)
    if c.sum() == 0:
        raise DriftInputError("is empty: every bin count is 0", field=field)
    return e, c.astype(np.int64)


# ------------------------------------------------------------------------------------------ live values


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return True  # pandas.NA and the like: their truth value is undefined, which means missing


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


def finite_values(values: Any, *, field: str = "live") -> tuple[npt.NDArray[np.float64], int]:
    """Numeric values with the missing and non-finite ones dropped.

    Args:
        values: A sequence, numpy array, or polars/pandas series of numbers (None allowed).
        field: The name to blame in errors.

    Returns:
        The finite values as float64, and how many values were dropped.

    Raises:
        DriftInputError: When a value is not a number.
    """
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        items = values.to_list() if hasattr(values, "to_list") else list(values)
        converted: list[float] = []
        for item in items:
            if _is_missing(item):
                converted.append(math.nan)
                continue
            try:
                converted.append(float(item))
            except (TypeError, ValueError):
                raise DriftInputError(f"holds {item!r}, which is not a number", field=field) from None
        array = np.asarray(converted, dtype=np.float64)
    keep = np.isfinite(array)
    return array[keep], int(array.size - keep.sum())


def _category_text(value: Any) -> str:
    # The data service profiles categories as polars casts them to text, where booleans are lowercase.
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def category_values(values: Any) -> tuple[list[str], int]:
    """Categorical values as text, with the missing ones dropped.

    Booleans become ``"true"``/``"false"`` and everything else ``str(value)``, which is how the data
    service's profile writes categories.

    Args:
        values: A sequence, numpy array, or polars/pandas series.

    Returns:
        The values as text, and how many were dropped as missing (None, NaN).
    """
    items = values.to_list() if hasattr(values, "to_list") else list(np.asarray(values, dtype=object).ravel())
    kept = [_category_text(v) for v in items if not _is_missing(v)]
    return kept, len(items) - len(kept)


# ------------------------------------------------------------------------------------------- statistics


def psi(reference_counts: npt.ArrayLike, live_counts: npt.ArrayLike, *, epsilon: float = 1e-4) -> float:
    """Population stability index between two count vectors over the same bins.

    ``sum((a - e) * ln(a / e))`` with ``e`` the reference shares and ``a`` the live shares, each share first
    raised to at least ``epsilon`` (no renormalisation), so an empty bin gives a finite term.

    Args:
        reference_counts: Reference counts per bin.
        live_counts: Live counts per bin, same length.
        epsilon: Floor of a share.

    Returns:
        The PSI, 0 for identical shares.

    Raises:
        ValueError: When the lengths differ or a side has no counts.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(live_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"reference_counts has {ref.size} bins but live_counts has {cur.size}")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("PSI needs at least one count on each side")
    e = np.maximum(ref / ref.sum(), epsilon)
    a = np.maximum(cur / cur.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def bin_live(edges: npt.ArrayLike, values: npt.ArrayLike) -> list[int]:
    """Counts of ``values`` in the reference bins.

    ``numpy.histogram`` on the reference edges, after clipping to ``[edges[0], edges[-1]]``: values below the
    reference range count in the first bin and values above it in the last, so every value is counted.

    Args:
        edges: Reference bin edges.
        values: Finite live values.

    Returns:
        One count per bin.
    """
    e = np.asarray(edges, dtype=np.float64)
    x = np.clip(np.asarray(values, dtype=np.float64), e[0], e[-1])
    if e.size == 2 and e[0] == e[1]:
        return [int(x.size)]
    counts, _ = np.histogram(x, bins=e)
    return [int(c) for c in counts]


def _ks_pvalue(statistic: float, n_live: int, n_reference: int) -> float:
    # ks_2samp's asymptotic two-sided p-value: the exact one-sample distribution at the effective size.
    big, small = sorted([float(n_live), float(n_reference)], reverse=True)
    effective = big * small / (big + small)
    return float(np.clip(stats.kstwo.sf(statistic, np.round(effective)), 0.0, 1.0))


def ks_from_histogram(
    edges: npt.ArrayLike, counts: npt.ArrayLike, live: npt.ArrayLike, *, continuous: bool = True
) -> KSResult:
    """Two-sided KS statistic of live values against a reference histogram.

    With ``continuous=True`` the reference CDF is the histogram's piecewise-linear CDF (uniform within each
    bin; 0 below ``edges[0]`` and 1 above ``edges[-1]``; a step at ``v`` for a one-bin ``[v, v]``
    histogram), and the statistic is its exact supremum distance to the live empirical CDF.

    With ``continuous=False`` both CDFs are compared only at the interior bin edges, where the reference's
    share of values below the edge is known exactly: the KS statistic between the two binned samples. Use it
    for discrete columns, whose reference mass the linear interpolation would smear across a bin.

    The p-value stands for a two-sample test against the ``m`` reference rows the histogram summarises: it
    is ``scipy.stats.ks_2samp``'s asymptotic two-sided one, ``kstwo.sf(D, round(n * m / (n + m)))``, so a
    small reference is not mistaken for the exact population. It assumes continuous data and is
    conservative for discrete data.

    Args:
        edges: Reference bin edges.
        counts: Reference counts per bin.
        live: Live values (missing and non-finite ones are dropped).
        continuous: Interpolate the reference CDF within bins (see above).

    Returns:
        The statistic and p-value.

    Raises:
        DriftInputError: For an empty or malformed histogram or no finite live value.
    """
    e, c = _validate_histogram(edges, counts, "histogram")
    x = np.sort(finite_values(live)[0])
    n, m = x.size, int(c.sum())
    if n == 0:
        raise DriftInputError("has no finite value", field="live")
    cum = np.concatenate([[0.0], np.cumsum(c) / m])
    if continuous or c.size == 1:
        if e[0] == e[-1]:
            below_or_at = (x >= e[0]).astype(np.float64)  # F(x)
            below = (x > e[0]).astype(np.float64)  # F(x-), the step's left limit
        else:
            below_or_at = below = np.interp(x, e, cum)
        # Between two live values the ECDF is flat and F rises, so the supremum sits next to a live value:
        # G(x_i) - F(x_i) with G(x_i) = i/n, and F(x_i-) - G(x_i-) with G(x_i-) = (i-1)/n (ties included).
        i = np.arange(1, n + 1, dtype=np.float64)
        d = max(float(np.max(i / n - below_or_at)), float(np.max(below - (i - 1) / n)), 0.0)
    else:
        inner = e[1:-1]
        live_below = np.searchsorted(x, inner, side="left") / n
        d = float(np.max(np.abs(cum[1:-1] - live_below)))
    return KSResult(statistic=d, pvalue=_ks_pvalue(d, n, m))


def ks_two_sample(reference_sample: npt.ArrayLike, live_sample: npt.ArrayLike) -> KSResult:
    """Two-sided two-sample KS test, exactly ``scipy.stats.ks_2samp(reference, live)``.

    Missing and non-finite values are dropped from both samples first.

    Args:
        reference_sample: Reference rows of the column.
        live_sample: Live values of the column.

    Returns:
        The statistic and p-value.

    Raises:
        DriftInputError: When either sample has no finite value.
    """
    ref, _ = finite_values(reference_sample, field="reference_sample")
    cur, _ = finite_values(live_sample, field="live_sample")
    if ref.size == 0:
        raise DriftInputError("has no finite value", field="reference_sample")
    if cur.size == 0:
        raise DriftInputError("has no finite value", field="live_sample")
    result = stats.ks_2samp(ref, cur)
    return KSResult(statistic=float(result.statistic), pvalue=float(result.pvalue))


def category_counts(column: ReferenceColumn, live: Sequence[str]) -> tuple[list[str], list[int], list[int]]:
    """Reference and live counts per category: the reference's top values, then :data:`OTHER`.

    The ``other`` bucket holds the reference's values outside its top values (``count`` minus their sum)
    and every live value outside them; it is left out when it is empty on both sides.

    Args:
        column: The reference column, with ``top_values``.
        live: Live values as text.

    Returns:
        Bucket labels, reference counts and live counts.

    Raises:
        DriftInputError: When the column has no top values or they count more than ``count``.
    """
    field = f"reference.{column.name}.top_values"
    if not column.top_values:
        raise DriftInputError("is missing or empty: a categorical column needs top values", field=field)
    labels = [t.value for t in column.top_values]
    ref = [t.count for t in column.top_values]
    if len(set(labels)) != len(labels):
        raise DriftInputError("lists a value twice", field=field)
    if any(c < 0 for c in ref) or sum(ref) > column.count:
        raise DriftInputError(f"counts {sum(ref)} values, more than the column's count {column.count}", field=field)
    index = {label: k for k, label in enumerate(labels)}
    cur = [0] * len(labels)
    other_live = 0
    for value in live:
        k = index.get(value)
        if k is None:
            other_live += 1
        else:
            cur[k] += 1
    other_ref = column.count - sum(ref)
    if other_ref > 0 or other_live > 0:
        labels.append(OTHER)
        ref.append(other_ref)
        cur.append(other_live)
    if sum(ref) == 0:
        raise DriftInputError("is empty: every count is 0", field=field)
    return labels, ref, cur


def chi_square(
    reference_counts: npt.ArrayLike, live_counts: npt.ArrayLike, *, epsilon: float = 1e-4
) -> ChiSquareResult:
    """Chi-square goodness of fit of live counts to the reference's shares.

    ``scipy.stats.chisquare(live, f_exp)`` with ``f_exp = n_live * reference share``. A reference share below
    ``epsilon`` (a category the reference never showed) is raised to ``epsilon`` and the shares renormalised,
    so an unseen category gives a large but finite statistic; with every share above ``epsilon`` this is the
    plain test.

    Args:
        reference_counts: Reference counts per category.
        live_counts: Live counts per category, same length, at least two categories.
        epsilon: Floor of an expected share.

    Returns:
        The statistic and p-value.

    Raises:
        ValueError: When the lengths differ, there are fewer than two categories, or a side is empty.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(live_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"reference_counts has {ref.size} categories but live_counts has {cur.size}")
    if ref.size < 2:
        raise ValueError("chi-square needs at least two categories")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise ValueError("chi-square needs at least one count on each side")
    shares = ref / ref.sum()
    if np.any(shares < epsilon):
        shares = np.maximum(shares, epsilon)
        shares = shares / shares.sum()
    result = stats.chisquare(cur, f_exp=shares * cur.sum())
    return ChiSquareResult(statistic=float(result.statistic), pvalue=float(result.pvalue))


def verdict(
    kind: Kind,
    *,
    psi_value: float,
    ks: KSResult | None = None,
    chi2: ChiSquareResult | None = None,
    thresholds: DriftThresholds | None = None,
) -> tuple[Verdict, str]:
    """The verdict of a feature that has enough data (``insufficient_data`` is decided before this).

    * numeric: ``drift`` when ``psi >= thresholds.psi``, or when ``ks.pvalue < thresholds.ks_alpha`` and
      ``ks.statistic >= thresholds.ks_min_statistic``; else ``no_drift``.
    * categorical: ``drift`` when ``psi >= thresholds.psi`` or ``chi2.pvalue < thresholds.chi2_alpha``
      (no chi-square with a single category); else ``no_drift``.

    Args:
        kind: ``numeric`` or ``categorical``.
        psi_value: The PSI.
        ks: Numeric columns: the KS result.
        chi2: Categorical columns: the chi-square result, or None with a single category.
        thresholds: The thresholds (defaults when None).

    Returns:
        The verdict and the reason in words.
    """
    t = thresholds or DriftThresholds()
    reasons: list[str] = []
    if psi_value >= t.psi:
        reasons.append(f"PSI {psi_value:.4g} >= {t.psi:g}")
    if kind == NUMERIC and ks is not None and ks.pvalue < t.ks_alpha and ks.statistic >= t.ks_min_statistic:
        reasons.append(f"KS p {ks.pvalue:.3g} < {t.ks_alpha:g} with statistic {ks.statistic:.3g}")
    if kind == CATEGORICAL and chi2 is not None and chi2.pvalue < t.chi2_alpha:
        reasons.append(f"chi-square p {chi2.pvalue:.3g} < {t.chi2_alpha:g}")
    if reasons:
        return DRIFT, "; ".join(reasons)
    return NO_DRIFT, "no statistic crossed its threshold"


# ---------------------------------------------------------------------------------------------- reports


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
        edges, ref_counts = _checked_histogram(ref_column)
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


def looks_discrete(column: ReferenceColumn) -> bool:
    """Whether a numeric reference column's mass sits on a few values (see :data:`DISCRETE_VALUES_PER_BIN`).

    Args:
        column: The reference column, with a histogram.

    Returns:
        True when it has at most :data:`DISCRETE_VALUES_PER_BIN` distinct values per bin, or two equal
        quantiles.
    """
    bins = len(column.histogram.counts) if column.histogram is not None else 1
    if column.distinct is not None and column.distinct <= DISCRETE_VALUES_PER_BIN * bins:
        return True
    points = sorted((column.quantiles or {}).values())
    return any(a == b for a, b in itertools.pairwise(points))


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
