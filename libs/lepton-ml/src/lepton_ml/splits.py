"""The train/test split every service agrees on: the trainer holds rows out, the evaluator scores them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def holdout_split(n_rows: int, seed: int, test_fraction: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Deterministic train/test row indices: the same n, seed and fraction give the same rows.

    Trainer and evaluator both call this, so the evaluator scores exactly the rows
    the trainer held out.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_test = max(1, round(n_rows * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
