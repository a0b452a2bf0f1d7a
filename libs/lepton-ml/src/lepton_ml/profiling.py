"""Per-column statistics: the data service computes them at ingest, the monitor (its drift reference) from the
training data, with this one implementation.

A profile is two passes over the frame. The first is one polars ``select`` whose expressions
polars runs in parallel: counts, moments, quantiles and top values for every column. The second
counts the histograms, whose bin edges need the first pass's min and max: numpy's equal-width
``histogram``, a numeric column a thread.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

QUANTILES: dict[str, float] = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
HISTOGRAM_BINS = 20
TOP_VALUES = 10
# A text or boolean column is categorical when it has at most this many distinct values,
# and no more than CATEGORICAL_MAX_SHARE of the row count.
CATEGORICAL_MAX_DISTINCT = 50
CATEGORICAL_MAX_SHARE = 0.5


class Histogram(BaseModel):
    """Equal-width bins between min and max: bin k is [edges[k], edges[k+1]), the last one closed.

    These are numpy.histogram's conventions, so ``numpy.histogram(x, bins=edges)`` bins new data
    the same way. A column whose values are all equal has one bin, with edges [v, v].
    """

    edges: list[float]
    counts: list[int]


class TopValue(BaseModel):
    """One of the most frequent values of a non-numeric column, as text."""

    value: str
    count: int


class ColumnProfile(BaseModel):
    """Statistics of one column.

    Attributes:
        name: The column name.
        dtype: The polars dtype, as text (``Int64``, ``String``).
        count: Non-null values.
        nulls: Null values.
        distinct: Distinct non-null values.
        categorical: A Categorical/Enum column, or a text/boolean one with few distinct values.
        non_finite: NaN and infinite values of a float column; they count as values but are
            left out of every numeric statistic below, so those stay JSON numbers.
        min: Numeric columns: the least finite value (``None`` when there is none).
        max: Numeric columns: the greatest finite value.
        mean: Numeric columns: the mean of the finite values.
        std: Numeric columns: the sample standard deviation (ddof=1); ``None`` under two values.
        quantiles: Numeric columns: p01 to p99, linearly interpolated.
        histogram: Numeric columns: 20 equal-width bins (one when all values are equal).
        top_values: Non-numeric columns: the 10 most frequent values, by count then value.
    """

    name: str
    dtype: str
    count: int
    nulls: int
    distinct: int
    categorical: bool
    non_finite: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] | None = None
    histogram: Histogram | None = None
    top_values: list[TopValue] | None = None


class DatasetProfile(BaseModel):
    """Statistics of a whole frame: its row count and one profile per column, in column order."""

    rows: int
    columns: list[ColumnProfile]


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _as_list(value: Any) -> list[Any]:
    # A list-valued cell comes back as a Series from some polars calls and a list from others.
    if value is None:
        return []
    return value.to_list() if isinstance(value, pl.Series) else list(value)


def _numeric_values(name: str, dtype: pl.DataType) -> pl.Expr:
    values = pl.col(name).cast(pl.Float64)
    return pl.when(values.is_finite()).then(values) if dtype.is_float() else values


def _top_values(name: str) -> pl.Expr:
    # Aliased first: value_counts names its fields after the column, which may itself be "count".
    counted = pl.col(name).drop_nulls().cast(pl.String).alias("value").value_counts(name="count")
    ranked = counted.sort_by([counted.struct.field("count"), counted.struct.field("value")], descending=[True, False])
    return ranked.head(TOP_VALUES).implode()


#: Rows above which distinct counts of numbers are estimated and quantiles sampled.
LARGE = 100_000


def profile(df: pl.DataFrame) -> DatasetProfile:
    """Profiles every column of ``df``.

    Args:
        df: The frame.

    Returns:
        The profile, JSON-serializable with ``model_dump_json``.
    """
    schema = list(df.schema.items())
    numeric = {j for j, (_, dtype) in enumerate(schema) if dtype.is_numeric()}
    # Columns are referred to by position in the aliases, so any column name is safe.
    exprs: list[pl.Expr] = []
    quantile_exprs: list[pl.Expr] = []
    large = df.height > LARGE
    for j, (name, dtype) in enumerate(schema):
        col = pl.col(name)
        # Above LARGE rows, exact distinct counts and quantiles (a hash set and a sort per
        # column) were most of an ingest's time: distinct is then a HyperLogLog estimate of
        # numbers, and quantiles come from a fixed uniform sample of LARGE rows.
        unique = col.approx_n_unique() if large and j in numeric else col.n_unique()
        exprs += [col.null_count().alias(f"{j}.nulls"), unique.alias(f"{j}.unique")]
        if j in numeric:
            values = _numeric_values(name, dtype)
            exprs += [
                values.min().alias(f"{j}.min"),
                values.max().alias(f"{j}.max"),
                values.mean().alias(f"{j}.mean"),
                values.std().alias(f"{j}.std"),
            ]
            quantile_exprs.append(values.quantile(list(QUANTILES.values()), interpolation="linear").alias(f"{j}.q"))
            if dtype.is_float():
                exprs.append((col.is_not_null() & ~col.is_finite()).sum().alias(f"{j}.nonfinite"))
        elif not dtype.is_nested() and dtype != pl.Object:
            exprs.append(_top_values(name).alias(f"{j}.top"))
    first = df.select(exprs).row(0, named=True) if exprs else {}
    if quantile_exprs:
        source = df.sample(n=LARGE, seed=0) if large else df
        first.update(source.select(quantile_exprs).row(0, named=True))

    # Second pass: histogram bin counts, for numeric columns with a finite range: numpy's own
    # equal-width binning (what the monitor bins live data with), a column a thread.
    ranges: dict[int, tuple[float, float]] = {}
    for j in sorted(numeric):
        lo, hi = _finite(first[f"{j}.min"]), _finite(first[f"{j}.max"])
        if lo is not None and hi is not None:
            ranges[j] = (lo, hi)
    binned = [j for j, (lo, hi) in ranges.items() if hi > lo]
    second: dict[int, list[int]] = {}
    if binned:
        with ThreadPoolExecutor(min(len(binned), os.cpu_count() or 1)) as pool:
            counted = pool.map(lambda j: _bin_counts(df.get_column(schema[j][0]), *ranges[j]), binned)
            second = dict(zip(binned, counted, strict=True))

    columns: list[ColumnProfile] = []
    for j, (name, dtype) in enumerate(schema):
        nulls = int(first[f"{j}.nulls"])
        count = df.height - nulls
        # n_unique counts null as a value of its own.
        distinct = int(first[f"{j}.unique"]) - (1 if nulls else 0)
        is_text_or_bool = dtype in (pl.String, pl.Boolean)
        categorical = isinstance(dtype, pl.Categorical | pl.Enum) or (
            is_text_or_bool
            and count > 0
            and distinct <= CATEGORICAL_MAX_DISTINCT
            and distinct <= CATEGORICAL_MAX_SHARE * df.height
        )
        prof = ColumnProfile(
            name=name, dtype=str(dtype), count=count, nulls=nulls, distinct=distinct, categorical=categorical
        )
        if j in numeric:
            prof.non_finite = int(first.get(f"{j}.nonfinite") or 0)
            prof.min, prof.max = _finite(first[f"{j}.min"]), _finite(first[f"{j}.max"])
            prof.mean, prof.std = _finite(first[f"{j}.mean"]), _finite(first[f"{j}.std"])
            points = [_finite(q) for q in _as_list(first[f"{j}.q"])]
            if points and all(p is not None for p in points):
                prof.quantiles = {key: float(p) for key, p in zip(QUANTILES, points, strict=True) if p is not None}
            if j in ranges:
                lo, hi = ranges[j]
                counts = second.get(j, [count - prof.non_finite])
                prof.histogram = Histogram(edges=histogram_edges(lo, hi) if hi > lo else [lo, hi], counts=counts)
        elif f"{j}.top" in first:
            prof.top_values = [TopValue(value=t["value"], count=int(t["count"])) for t in _as_list(first[f"{j}.top"])]
        columns.append(prof)
    return DatasetProfile(rows=df.height, columns=columns)


def histogram_edges(lo: float, hi: float) -> list[float]:
    """The :data:`HISTOGRAM_BINS` + 1 equal-width edges from ``lo`` to ``hi`` (``hi > lo``).

    ``lo + k * width`` as ``numpy.linspace`` computes them, with the last edge exactly ``hi``.
    """
    width = (hi - lo) / HISTOGRAM_BINS
    return [lo + k * width for k in range(HISTOGRAM_BINS)] + [hi]


def _bin_counts(column: pl.Series, lo: float, hi: float) -> list[int]:
    """How many of ``column``'s values fall in each bin of :func:`histogram_edges`, as
    ``numpy.histogram(values, bins=histogram_edges(lo, hi))`` counts them.

    numpy's equal-width path (``bins`` a number, ``range`` given) computes the same edges (``lo + k *
    width``, the last ``hi``), corrects each value's bin against them (a value exactly on an edge
    goes right), closes the last bin, and leaves out what is outside ``[lo, hi]``: NaN and infinities.
    """
    values = column.drop_nulls().cast(pl.Float64).to_numpy()
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(lo, hi))
    return [int(c) for c in counts]


__all__ = [
    "HISTOGRAM_BINS",
    "QUANTILES",
    "ColumnProfile",
    "DatasetProfile",
    "Histogram",
    "TopValue",
    "histogram_edges",
    "profile",
]
