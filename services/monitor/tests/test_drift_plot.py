"""The drift PNG: a real PNG of the documented size, every kind of panel, and no figure left open."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest
from PIL import Image
from sklearn.datasets import load_diabetes

from lepton_ml.profiling import profile
from lepton_monitor.drift import column_drift, drift_report
from lepton_monitor.drift_plot import drift_png, figure_pixels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_figures_left() -> Iterator[None]:
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before == []


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


def test_report_with_prediction_and_every_kind_of_panel() -> None:
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame)
    reference: dict[str, Any] = json.loads(profile(frame).model_dump_json())
    prediction_ref = reference["columns"][-1]  # "target" stands in for the reference predictions
    live = frame[np.random.default_rng(0).integers(0, frame.height, 500).tolist()]
    live = live.with_columns(pl.col("bmi") + 0.05, prediction=pl.col("target"))
    features = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    report = drift_report(reference, live, features, prediction_reference=prediction_ref)
    data = drift_png(report)
    assert figure_pixels(11) == (640, 220 * 4 + 60)
    assert png_size(data) == (640, 940)


def test_categorical_constant_and_insufficient_panels() -> None:
    categorical = column_drift(
        {"name": "a rather long category column", "count": 300, "top_values": [{"value": "x" * 30, "count": 300}]},
        ["x" * 30] * 150 + ["y"] * 50,
    )
    constant = column_drift(
        {"name": "k", "count": 200, "histogram": {"edges": [2.0, 2.0], "counts": [200]}}, [2.0] * 120
    )
    few = column_drift(
        {"name": "few", "count": 200, "histogram": {"edges": [0, 1, 2], "counts": [100, 100]}}, [0.5] * 3
    )
    assert (categorical.verdict, constant.verdict, few.verdict) == ("drift", "no_drift", "insufficient_data")
    assert png_size(drift_png([categorical, constant, few], title="Drift")) == (640, 280)
    assert png_size(drift_png([few])) == figure_pixels(1) == (640, 280)


def test_nothing_to_draw() -> None:
    with pytest.raises(ValueError, match="no feature"):
        drift_png([])
