"""The drift reference of a model version: the profile of its training data, and of its predictions on it.

Feature columns are profiled with :func:`lepton_ml.profiling.profile`, the data service's own
implementation, over every row of the dataset version the model was trained on, so the reference is exactly
the profile the data service shows for that version. A model trained on a recipe-made version takes raw
rows (its signature lists ``inputs``), and those raw columns are what the prediction logs carry: its
reference is then the profile of the raw upload the recipe chain starts from, when the monitor knows it.

The prediction reference is the profile of the model's own predictions on the training rows (a fixed sample
of ``max_rows`` of them on a large dataset): prediction drift compares like with like, which the target's
distribution would not (a regression model's predictions spread less than its target). The artifact is
loaded with :func:`lepton_ml.artifacts.load_bundle`, which refuses an artifact whose signature does not
check against the platform's public key before reading it, and any type outside the allow-list; a
model the monitor cannot load or run leaves the reference without predictions, with a note saying why.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from lepton_ml import artifacts
from lepton_ml.profiling import profile
from lepton_ml.signing import TrustedKeys

log = logging.getLogger(__name__)

PREDICTION = "prediction"


class ReferenceRecord(BaseModel):
    """A model version's drift reference, cached in KV ``monitor`` under ``<tenant>.ref.<model>.<version>``.

    Attributes:
        tenant: The tenant.
        model_name: The model.
        version: The model version.
        dataset_version_id: The dataset version whose rows were profiled for the features.
        features: The logged input columns (the model's raw numeric inputs), in order.
        columns: One data-service ``ColumnProfile`` dump per profiled feature.
        prediction: The ``ColumnProfile`` dump of the model's predictions on its training rows, or None.
        task: ``regression``, ``classification`` or ``clustering`` (from the model's signature).
        note: Why something is missing, when it is.
        built_at: When it was computed, seconds since the epoch.
    """

    tenant: str
    model_name: str
    version: int
    dataset_version_id: str
    features: list[str]
    columns: list[dict[str, Any]]
    prediction: dict[str, Any] | None = None
    task: str = ""
    note: str = ""
    built_at: float = 0.0


def build_reference(
    *,
    tenant: str,
    model_name: str,
    version: int,
    features: list[str],
    training: bytes,
    training_version_id: str,
    artifact: bytes | None,
    trusted: TrustedKeys,
    raw: bytes | None = None,
    raw_version_id: str = "",
    max_rows: int = 100_000,
    built_at: float = 0.0,
) -> ReferenceRecord:
    """Profiles a model version's training data (or its raw upload) and its predictions on it.

    Blocking and CPU-bound: call it in a thread.

    Args:
        tenant: The tenant.
        model_name: The model.
        version: The model version.
        features: The model's features, from the registry (used when the artifact cannot be read).
        training: The Parquet bytes of the dataset version the model was trained on.
        training_version_id: Its version id.
        artifact: The model artifact's bytes, or None.
        trusted: The public keys its signature must check against (verified before it is read).
        raw: The Parquet bytes of the raw upload a recipe chain starts from, when the model has one.
        raw_version_id: Its version id.
        max_rows: Training rows the model predicts, at most (a fixed sample beyond).
        built_at: The time to record.

    Returns:
        The reference.
    """
    frame = pl.read_parquet(io.BytesIO(training))
    notes: list[str] = []
    bundle: artifacts.Bundle | None = None
    if artifact is not None:
        try:
            bundle = artifacts.load_bundle(artifact, trusted)
        except Exception as exc:
            notes.append(f"the model could not be loaded here ({type(exc).__name__}: {exc}); no prediction reference")
            log.warning("reference of %s v%d: artifact not loadable: %s", model_name, version, exc)
    inputs = bundle.signature.numeric_inputs() if bundle is not None else list(features)
    source, source_id = frame, training_version_id
    if bundle is not None and bundle.signature.inputs:
        if raw is not None:
            source, source_id = pl.read_parquet(io.BytesIO(raw)), raw_version_id
        else:
            notes.append("the model takes raw rows but the raw upload is unknown: profiled the training version")
    profiled = profile(source)
    wanted = set(inputs)
    columns = [c.model_dump() for c in profiled.columns if c.name in wanted]
    missing = [n for n in inputs if n not in {c["name"] for c in columns}]
    if missing:
        notes.append(f"columns {missing} are not in dataset version {source_id}: no reference for them")
    prediction = None
    if bundle is not None:
        try:
            rows = frame.sample(n=max_rows, seed=0) if frame.height > max_rows else frame
            x = rows.select(bundle.signature.features).to_numpy().astype(np.float64)
            predicted = np.asarray(bundle.model.predict(x), dtype=np.float64).reshape(len(x), -1)[:, 0]
            prediction = profile(pl.DataFrame({PREDICTION: predicted})).columns[0].model_dump()
        except Exception as exc:
            notes.append(f"the model could not predict its training rows here ({type(exc).__name__}: {exc})")
            log.warning("reference of %s v%d: predictions failed: %s", model_name, version, exc)
    return ReferenceRecord(
        tenant=tenant,
        model_name=model_name,
        version=version,
        dataset_version_id=source_id,
        features=inputs,
        columns=columns,
        prediction=prediction,
        task=bundle.signature.task if bundle is not None else "",
        note="; ".join(notes),
        built_at=built_at,
    )


__all__ = ["PREDICTION", "ReferenceRecord", "build_reference"]
