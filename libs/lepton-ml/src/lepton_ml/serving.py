"""The tensors a deployed Lepton model takes, built from rows (shared by the SDK and tools).

A deployment lists its ``feature_columns`` (one FP64 matrix named ``features``, NaN
for missing) and, for models trained on recipes over text, its ``text_columns`` (one
BYTES matrix named ``text_features``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

INPUT = "features"
TEXT_INPUT = "text_features"
OUTPUT = "prediction"


def as_frame(rows: Any, columns: Sequence[str]) -> pl.DataFrame:
    """Rows as a polars frame: a polars/pandas DataFrame, a dict of columns, or a 2-D array
    (or list of rows) in the order of ``columns``."""
    if isinstance(rows, pl.DataFrame):
        return rows
    if isinstance(rows, dict):
        return pl.DataFrame(rows)
    try:
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            return pl.from_pandas(rows)
    except ImportError:  # pragma: no cover - pandas is pinned
        pass
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != len(columns):
        raise ValueError(f"expected rows of {len(columns)} values ({', '.join(columns)}), got shape {matrix.shape}")
    return pl.DataFrame({name: matrix[:, i] for i, name in enumerate(columns)})


def arrays(
    frame: pl.DataFrame, feature_columns: Sequence[str], text_columns: Sequence[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.object_] | None]:
    """The ``features`` matrix and, when the model takes text, the ``text_features`` matrix."""
    missing = [c for c in (*feature_columns, *text_columns) if c not in frame.columns]
    if missing:
        raise ValueError(f"the rows lack column(s) {', '.join(missing)}")
    numeric = frame.select([pl.col(c).cast(pl.Float64) for c in feature_columns]).to_numpy().astype(np.float64)
    if not text_columns:
        return numeric, None
    text = np.array(
        [[("" if v is None else str(v)).encode() for v in row] for row in frame.select(list(text_columns)).rows()],
        dtype=np.object_,
    )
    return numeric, text


def input_tensors(frame: pl.DataFrame, feature_columns: Sequence[str], text_columns: Sequence[str]) -> list[Any]:
    """tritonclient ``InferInput``s for raw rows (the sync and asyncio clients share the class)."""
    from tritonclient.grpc import InferInput

    numeric, text = arrays(frame, feature_columns, text_columns)
    tensors = [InferInput(INPUT, list(numeric.shape), "FP64")]
    tensors[0].set_data_from_numpy(numeric)
    if text is not None:
        tensors.append(InferInput(TEXT_INPUT, list(text.shape), "BYTES"))
        tensors[1].set_data_from_numpy(text)
    return tensors
