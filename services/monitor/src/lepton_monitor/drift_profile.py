"""The reference side of drift: the data service's column profile, as the monitor reads it.

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

The public names are re-exported by :mod:`lepton_monitor.drift`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from lepton_core.errors import InvalidArgument
from lepton_core.names import shown
from lepton_core.validation import invalid_argument_from

#: A numeric reference column with at most this many distinct values per histogram bin, or with two equal
#: quantiles (one value holding at least the mass between them), is treated as discrete by
#: :func:`~lepton_monitor.drift.column_drift`: its KS statistic compares fractions below the bin edges only
#: (``continuous=False`` in :func:`~lepton_monitor.drift_stats.ks_from_histogram`), since a piecewise-linear
#: CDF misrepresents a column whose mass sits on a few values (a 0/1 flag shows a KS distance of about 0.5
#: against itself, the diabetes data's ``s4``, with 66 distinct values, about 0.25).
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
        except (ValueError, RecursionError) as e:
            raise DriftInputError(f"is not valid JSON: {shown(str(e), 200)}", field="reference") from None
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


def checked_histogram(column: ReferenceColumn) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """A numeric reference column's histogram as arrays (see :func:`validate_histogram`)."""
    field = f"reference.{column.name}.histogram"
    hist = column.histogram
    if hist is None:
        raise DriftInputError("is missing: a numeric column needs a histogram", field=field)
    return validate_histogram(hist.edges, hist.counts, field)


def validate_histogram(
    edges: Sequence[float] | npt.ArrayLike, counts: Sequence[int] | npt.ArrayLike, field: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Histogram edges and counts as arrays; DriftInputError naming ``field`` when they are no histogram."""
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


__all__ = [
    "DISCRETE_VALUES_PER_BIN",
    "DriftInputError",
    "ReferenceColumn",
    "ReferenceHistogram",
    "ReferenceTopValue",
    "checked_histogram",
    "looks_discrete",
    "parse_reference",
    "parse_reference_column",
    "validate_histogram",
]
