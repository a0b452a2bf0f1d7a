"""Deterministic train/validation/test splits: the same rows for the same version and seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from lepton_core.bounds import check_seed
from lepton_core.errors import InvalidArgument
from lepton_core.names import shown

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
#: Longest stratify column name a request may give.
MAX_COLUMN_NAME = 1024


@dataclass(frozen=True)
class SplitSpec:
    seed: int = 0
    train: float = 0.8
    validation: float = 0.0
    test: float = 0.2
    stratify_column: str = ""

    @classmethod
    def of(cls, seed: int, train: float, validation: float, test: float, stratify: str) -> SplitSpec:
        """A spec from request fields; all three fractions zero means the defaults."""
        check_seed(seed, "spec.seed")
        if len(stratify) > MAX_COLUMN_NAME:
            raise InvalidArgument(
                f"a column name is at most {MAX_COLUMN_NAME} characters; got {shown(stratify)}",
                field="spec.stratify_column",
            )
        for name, value in (("train", train), ("validation", validation), ("test", test)):
            if not math.isfinite(value):
                raise InvalidArgument(f"must be a finite number between 0 and 1, got {value}", field=f"spec.{name}")
        if train == validation == test == 0.0:
            return cls(seed=seed, stratify_column=stratify)
        spec = cls(seed, train, validation, test, stratify)
        for name in ("train", "validation", "test"):
            value = getattr(spec, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"must be between 0 and 1, got {value}", field=f"spec.{name}")
        if abs(train + validation + test - 1.0) > 1e-9:
            raise InvalidArgument(
                f"train + validation + test must be 1, got {train + validation + test:g}", field="spec"
            )
        return spec


def _assign(
    n: int, rng: np.random.Generator, spec: SplitSpec, out: npt.NDArray[np.int8], rows: npt.NDArray[np.int64]
) -> None:
    order = rows[rng.permutation(n)]
    n_test = round(n * spec.test)
    n_val = round(n * spec.validation)
    out[order[:n_test]] = TEST
    out[order[n_test : n_test + n_val]] = VALIDATION


def assign_splits(df: pl.DataFrame, spec: SplitSpec) -> npt.NDArray[np.int8]:
    """A split label (TRAIN, VALIDATION, TEST) for every row of ``df``.

    Stratified: each distinct value of the stratify column is split on its own, in
    sorted value order, so every split keeps the column's proportions.
    """
    labels = np.full(df.height, TRAIN, dtype=np.int8)
    rng = np.random.default_rng(spec.seed)
    if not spec.stratify_column:
        _assign(df.height, rng, spec, labels, np.arange(df.height, dtype=np.int64))
        return labels
    if spec.stratify_column not in df.columns:
        raise InvalidArgument(
            f"no column {spec.stratify_column!r}; columns: {df.columns}", field="spec.stratify_column"
        )
    groups = (
        df.select(pl.col(spec.stratify_column).cast(pl.String).fill_null("\x00null").alias("k"))
        .with_row_index("i")
        .group_by("k")
        .agg(pl.col("i"))
        .sort("k")
    )
    for rows in groups["i"].to_list():
        idx = np.asarray(rows, dtype=np.int64)
        _assign(len(idx), rng, spec, labels, idx)
    return labels


def split_index(name: str) -> int:
    try:
        return SPLIT_NAMES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown split {name!r}; use train, validation or test (or empty for all rows)", field="split"
        ) from None
