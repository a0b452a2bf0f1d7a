"""The statistics of drift, and the verdict they give.

* **PSI** (population stability index), over the reference's bins or categories, with the natural log:
  ``sum((live_share - ref_share) * ln(live_share / ref_share))``. A share below ``epsilon`` (default
  ``1e-4``) is raised to ``epsilon`` on either side before the sum, so an empty bin adds a large but finite
  term; the shares are not renormalised afterwards.
* **Kolmogorov-Smirnov** for numeric columns: :func:`ks_two_sample` when reference rows are at hand (equal
  to ``scipy.stats.ks_2samp``), else :func:`ks_from_histogram` against the reference histogram.
* **Chi-square** goodness of fit for categorical columns (``scipy.stats.chisquare`` of the live counts
  against the counts the reference shares predict).

Live values that are missing or not finite (None, NaN, ±inf) are dropped before any statistic
(:func:`finite_values`, :func:`category_values`); the reference histogram likewise holds only finite values.

The verdict of one feature with enough data is described in :func:`verdict`. The public names are
re-exported by :mod:`lepton_monitor.drift`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from lepton_monitor.drift_profile import DriftInputError, ReferenceColumn, validate_histogram

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


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN
    except (TypeError, ValueError):
        return True  # pandas.NA and the like: their truth value is undefined, which means missing


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
    e, c = validate_histogram(edges, counts, "histogram")
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


__all__ = [
    "CATEGORICAL",
    "DRIFT",
    "INSUFFICIENT_DATA",
    "NO_DRIFT",
    "NUMERIC",
    "OTHER",
    "ChiSquareResult",
    "DriftThresholds",
    "KSMethod",
    "KSResult",
    "Kind",
    "Verdict",
    "bin_live",
    "category_counts",
    "category_values",
    "chi_square",
    "finite_values",
    "ks_from_histogram",
    "ks_two_sample",
    "psi",
    "verdict",
]
