"""The tensors a deployed Lepton model takes, built from rows (shared by the SDK and tools).

A deployment lists its ``feature_columns`` (one FP64 matrix named ``features``, NaN
for missing) and, for models trained on recipes over text, its ``text_columns`` (one
BYTES matrix named ``text_features``); it answers one FP64 ``prediction`` per row.

:data:`INPUT`, :data:`TEXT_INPUT` and :data:`OUTPUT` are the one definition of those
names: the deployer writes them into each model's Triton configuration (which the
Python-backend model reads them from), the MLP and :mod:`lepton_ml.onnx_export` name
their ONNX tensors with them, and the edge runner reads them from its bundle.

polars is imported only by the functions that build frames, so that importing the
names costs nothing (the MLP imports them; a Triton stub serving one need not load polars).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import polars as pl

#: The numeric input: FP64 ``[batch, n]``, NaN for a missing value.
INPUT: Final = "features"
#: The text input of models trained on recipes over text columns: BYTES ``[batch, m]``.
TEXT_INPUT: Final = "text_features"
#: The output: FP64 ``[batch, 1]``, a value, class label or cluster id per row.
OUTPUT: Final = "prediction"


def as_frame(rows: Any, columns: Sequence[str]) -> pl.DataFrame:
    """Rows as a polars frame: a polars/pandas DataFrame, a dict of columns, or a 2-D array
    (or list of rows) in the order of ``columns``."""
    import polars as pl

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
    import polars as pl

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
