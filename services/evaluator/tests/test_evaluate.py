"""evaluate_artifact on real bundles: held-out or all rows, cross-validation, and refusals."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from sklearn import datasets
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

from lepton_core.errors import FailedPrecondition
from lepton_evaluator.core import ALL_ROWS, HOLDOUT, evaluate_artifact
from lepton_ml import artifacts, splits
from lepton_ml.signing import Signer

SEED, FRACTION = 7, 0.25


def _parquet(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


SIGNER = Signer.generate()
TRUSTED = SIGNER.trusted()


@pytest.fixture(scope="module")
def diabetes() -> tuple[pl.DataFrame, bytes, Ridge]:
    frame = pl.from_pandas(datasets.load_diabetes(as_frame=True).frame)
    features = [c for c in frame.columns if c != "target"]
    train, _ = splits.holdout_split(frame.height, SEED, FRACTION)
    x, y = frame.select(features).to_numpy(), frame["target"].to_numpy()
    model = Ridge(alpha=0.5).fit(x[train], y[train])
    bundle = SIGNER.sign(artifacts.pack(model, artifacts.Signature(features, "target", "regression", "ridge")))
    return frame, bundle, model


def test_holdout_rows_are_the_split_training_held_out(diabetes: tuple[pl.DataFrame, bytes, Ridge]) -> None:
    frame, bundle, model = diabetes
    out = evaluate_artifact(bundle, _parquet(frame), SEED, FRACTION, HOLDOUT, trusted=TRUSTED)
    _, test = splits.holdout_split(frame.height, SEED, FRACTION)
    x, y = frame.drop("target").to_numpy(), frame["target"].to_numpy()
    assert out.test_rows == len(test)
    assert out.metrics["r2"] == pytest.approx(skm.r2_score(y[test], model.predict(x[test])), abs=1e-12)


def test_all_rows_and_cross_validation_equal_sklearn(diabetes: tuple[pl.DataFrame, bytes, Ridge]) -> None:
    frame, bundle, model = diabetes
    out = evaluate_artifact(bundle, _parquet(frame), SEED, FRACTION, ALL_ROWS, cv_folds=4, trusted=TRUSTED)
    x, y = frame.drop("target").to_numpy(), frame["target"].to_numpy()
    assert out.test_rows == frame.height
    assert out.metrics["mae"] == pytest.approx(skm.mean_absolute_error(y, model.predict(x)), abs=1e-9)
    folds = [
        skm.r2_score(y[te], Ridge(alpha=0.5).fit(x[tr], y[tr]).predict(x[te]))
        for tr, te in KFold(4, shuffle=True, random_state=SEED).split(x)
    ]
    mean, std = out.cv["r2"]
    assert (mean, std) == pytest.approx((np.mean(folds), np.std(folds)), abs=1e-12)
    assert set(out.cv) == {"r2", "rmse"}


def test_a_dataset_without_the_models_columns_is_refused(diabetes: tuple[pl.DataFrame, bytes, Ridge]) -> None:
    frame, bundle, _ = diabetes
    with pytest.raises(FailedPrecondition, match="bmi") as err:
        evaluate_artifact(bundle, _parquet(frame.drop("bmi")), SEED, FRACTION, ALL_ROWS, trusted=TRUSTED)
    assert err.value.field == "dataset_version_id"
    with pytest.raises(FailedPrecondition, match="target column"):
        evaluate_artifact(bundle, _parquet(frame.drop("target")), SEED, FRACTION, ALL_ROWS, trusted=TRUSTED)


def test_cross_validation_needs_enough_of_every_class() -> None:
    frame = pl.from_pandas(datasets.load_iris(as_frame=True).frame)
    features = [c for c in frame.columns if c != "target"]
    model = LogisticRegression(max_iter=2000).fit(frame.select(features).to_numpy(), frame["target"].to_numpy())
    bundle = SIGNER.sign(
        artifacts.pack(model, artifacts.Signature(features, "target", "classification", "logistic_regression"))
    )
    few = frame.head(60)  # classes 0 (50 rows) and 1 (10 rows)
    out = evaluate_artifact(bundle, _parquet(few), SEED, FRACTION, ALL_ROWS, cv_folds=10, trusted=TRUSTED)
    assert out.cv["accuracy"][0] > 0.9
    with pytest.raises(FailedPrecondition, match="rarest has 10") as err:
        evaluate_artifact(bundle, _parquet(few), SEED, FRACTION, ALL_ROWS, cv_folds=12, trusted=TRUSTED)
    assert err.value.field == "cv_folds"
