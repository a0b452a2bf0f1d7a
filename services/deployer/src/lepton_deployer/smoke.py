"""The smoke test of a rollout: recorded rows through the staged model must give the model's own predictions.

Every deployment records up to ``SMOKE_ROWS`` held-out rows of its first version's
training data, in their raw input columns. Each new version must answer them, through
Triton, as its in-process model does: to ``SMOKE_TOLERANCE``, plus ``FLOAT32_RTOL`` of each
value for models that compute in float32 (:func:`smoke_tolerance`).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import polars as pl

from lepton_core.telemetry import inject_context
from lepton_deployer.errors import HostError, MalformedAnswer, RolloutFailed
from lepton_deployer.hosts import TritonHost
from lepton_deployer.records import OUTPUT_NAME, VersionInfo
from lepton_ml import artifacts, splits

#: Recorded rows each rollout smoke-tests with.
SMOKE_ROWS = 16
SMOKE_TOLERANCE = 1e-6
#: Relative tolerance added for models that compute in float32 (``compute_dtype``, the
#: torch MLP): a GPU, or another host's CPU, sums in another order. Measured on an H200:
#: 1.8e-05 absolute (about 1e-7 relative) for an MLP on diabetes (docs/serving.md).
FLOAT32_RTOL = 1e-5


def smoke_tolerance(model: Any) -> tuple[float, float]:
    """``(atol, rtol)`` within which a served answer must equal the in-process prediction.

    Float64 models must agree to ``SMOKE_TOLERANCE``; models that compute in float32 also
    get ``FLOAT32_RTOL`` of each value, since the host serving them may sum in another
    order than the deployer does. A wrong model is off by far more than either.
    """
    return SMOKE_TOLERANCE, FLOAT32_RTOL if getattr(model, "compute_dtype", "float64") == "float32" else 0.0


def recorded_rows(info: VersionInfo, dataset: bytes, signature: artifacts.Signature) -> dict[str, list[Any]]:
    """Up to SMOKE_ROWS held-out rows of the training data, in the model's raw input columns."""
    frame = pl.read_parquet(io.BytesIO(dataset))
    columns = signature.numeric_inputs() + signature.text_inputs()
    if not all(c in frame.columns for c in columns):
        return {}
    _, held = splits.holdout_split(frame.height, info.split_seed, info.test_fraction)
    rows = frame[held[:SMOKE_ROWS].tolist()].select(columns)
    return {c: rows[c].to_list() for c in columns}


async def smoke_test(
    host: TritonHost,
    triton_model: str,
    version: int,
    inputs: dict[str, list[Any]],
    signature: artifacts.Signature,
    bundle: artifacts.Bundle,
    batch: int,
    name: str | None = None,
) -> None:
    """The recorded rows through ``host`` (``batch`` rows a request) must give the in-process predictions.

    ``name``: how messages name the host (its pool name; default: its address).

    Raises:
        RolloutFailed: saying why, and on which host.
    """
    where = repr(name) if name is not None else host.url
    frame = pl.DataFrame(inputs)
    needed = signature.numeric_inputs() + signature.text_inputs()
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise RolloutFailed(
            f"smoke test: version {version} takes columns {missing} that the deployment's recorded inputs "
            f"({sorted(frame.columns)}) lack: it would not understand today's requests"
        )
    parts = []
    try:
        for start in range(0, frame.height, batch):
            carrier: dict[str, str] = {"lepton_check": "smoke"}  # served, never logged as traffic
            inject_context(carrier)
            parts.append(
                await host.infer(
                    triton_model,
                    str(version),
                    frame.slice(start, batch),
                    signature.numeric_inputs(),
                    signature.text_inputs(),
                    carrier,
                )
            )
    except HostError as exc:
        raise RolloutFailed(f"smoke test on {where}: version {version} failed: {exc.detail}") from exc
    except MalformedAnswer as exc:
        raise RolloutFailed(
            f"smoke test on {where}: version {version} answered a malformed {OUTPUT_NAME!r} tensor ({exc}); "
            "an empty one comes from a Python backend built for another numpy than its stub's (docs/serving.md)"
        ) from exc
    got = np.concatenate(parts) if parts else np.empty(0)
    want = np.asarray(bundle.predict(frame), dtype=np.float64).reshape(-1)
    atol, rtol = smoke_tolerance(bundle.model)
    if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        diff = float(np.nanmax(np.abs(got - want))) if got.shape == want.shape else float("inf")
        allowed = f"{atol:g}" + (f" + {rtol:g} x |prediction|" if rtol else "")
        raise RolloutFailed(
            f"smoke test on {where}: version {version} answers differ from the model's own predictions "
            f"(max abs difference {diff:.3g} over {len(want)} rows; allowed {allowed})"
        )
