"""The fit itself (what the fit process runs): device setting, user errors, artifacts."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from lepton_core.bus import ObjectRefRecord
from lepton_core.errors import FailedPrecondition, InvalidArgument
from lepton_core.wire import now
from lepton_ml import artifacts
from lepton_ml.signing import Signer
from lepton_trainer.core import JobRecord, JobState, fit

SIGNER = Signer.generate()  # the trainer service signs; fit() returns the bundle zip


def job(**changes: object) -> JobRecord:
    frame = load_breast_cancer(as_frame=True).frame
    base = JobRecord(
        tenant="t",
        job_id="job_1",
        state=JobState.RUNNING,
        algorithm="mlp_classifier",
        params={"epochs": "3"},
        target="target",
        features=[c for c in frame.columns if c != "target"],
        model_name="m",
        dataset_id="ds",
        dataset_version_id="dv",
        dataset_object=ObjectRefRecord(bucket="datasets", name="x", digest="sha256:0", size=0),
        split_seed=1,
        test_fraction=0.2,
        task="classification",
        created_at=now(),
    )
    return base.model_copy(update=changes)


def frame() -> pl.DataFrame:
    return pl.from_pandas(load_breast_cancer(as_frame=True).frame)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_the_trainer_device_setting_reaches_the_mlp() -> None:
    seen: list[str] = []
    artifact = fit(job(device="cpu"), frame(), lambda stage, p, m: seen.append(stage))
    assert (
        "epoch 1/3" in seen
        and artifacts.load_bundle(SIGNER.sign(artifact), SIGNER.trusted()).signature.algorithm == "mlp_classifier"
    )
    with pytest.raises(FailedPrecondition, match="CUDA was requested but is not available"):
        fit(job(device="cuda"), frame())
    # A job's own device parameter wins over the worker's setting.
    fit(job(device="cuda", params={"epochs": "2", "device": "cpu"}), frame())


def test_missing_values_are_a_user_error() -> None:
    broken = frame().with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("mean radius")).alias("mean radius")
    )
    with pytest.raises(InvalidArgument, match="missing values"):
        fit(job(algorithm="logistic_regression", params={}), broken)
