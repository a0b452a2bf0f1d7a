"""Which runtime serves a version inside the Python backend: an exact ONNX conversion, or the bundle as trained."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from lepton_deployer.errors import RolloutFailed
from lepton_deployer.smoke import SMOKE_TOLERANCE
from lepton_ml import artifacts

ONNX_FILE = "lepton.onnx"
#: Beside it: what the serving model needs of the estimator it no longer loads.
ONNX_INFO_FILE = "lepton-onnx.json"


def onnx_info(model: Any) -> bytes:
    """``lepton-onnx.json`` for ``model``: its class name and whether it takes NaN (scikit-learn's tags)."""
    try:
        from sklearn.utils import get_tags

        allow_nan = bool(get_tags(model).input_tags.allow_nan)
    except Exception:
        allow_nan = False
    return json.dumps({"estimator": type(model).__name__, "allow_nan": allow_nan}).encode()


def choose_backend(
    asked: str, files: dict[str, bytes], inputs: dict[str, list[Any]]
) -> tuple[str, str, dict[str, bytes]]:
    """The backend for a version, why, and the files to add to the bundle's.

    ``auto`` and ``onnx`` try an ONNX conversion, checked on the recorded inputs against
    the model itself. An exact (float64, within 1e-6) conversion of a model without a
    preprocessing chain is run by onnxruntime inside the Python backend; anything else
    serves the bundle as trained. ``onnx`` refuses the rollout when it cannot be ONNX.
    """
    from lepton_ml import onnx_export

    if asked == "python":
        return "python", "asked for: the Python backend runs the skops/safetensors bundle as trained", {}
    bundle = artifacts.bundle_from_files(files)
    why = ""
    if bundle.preprocess is not None:
        why = "the model has a preprocessing chain, which the Python backend replays with polars"
    else:
        sample = pl.DataFrame(inputs) if inputs else None
        conversion = onnx_export.convert(bundle, sample)
        if not conversion.ok:
            why = f"no exact ONNX conversion: {conversion.reason}"
        elif conversion.model_dtype != "float64" or (conversion.max_abs_diff or 0.0) > SMOKE_TOLERANCE:
            why = (
                f"the ONNX graph runs in {conversion.model_dtype} (max |diff| {conversion.max_abs_diff:.2g}), "
                f"less exact than the {SMOKE_TOLERANCE:g} a rollout requires"
            )
        else:
            reason = (
                f"exact ONNX conversion (max |diff| {conversion.max_abs_diff:.2g} over {conversion.rows_checked} "
                "rows), run by onnxruntime inside the Python backend, which also logs the predictions "
                "(Triton's own onnxruntime backend is not used yet, on any host)"
            )
            return "onnxruntime", reason, {ONNX_FILE: conversion.onnx, ONNX_INFO_FILE: onnx_info(bundle.model)}
    if asked == "onnx":
        raise RolloutFailed(f"config.backend is onnx, but {why}")
    return "python", f"the Python backend runs the bundle as trained: {why}", {}
