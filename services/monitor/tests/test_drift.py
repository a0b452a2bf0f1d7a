"""Drift against the data service's real profile: statistics equal direct numpy/scipy computations, verdicts
flag exactly the shifted features, and bad inputs name the field at fault."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from scipy import stats
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LinearRegression

from lepton_ml.profiling import profile
from lepton_monitor.drift import (
    OTHER,
    DriftInputError,
    DriftThresholds,
    FeatureDrift,
    chi_square,
    column_drift,
    drift_report,
    ks_from_histogram,
    ks_two_sample,
    parse_reference,
    psi,
)

EPS = 1e-4
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def diabetes() -> pl.DataFrame:
    return pl.from_pandas(load_diabetes(as_frame=True).frame)


@pytest.fixture(scope="module")
def reference(diabetes: pl.DataFrame) -> dict[str, Any]:
    # Through JSON text, as the monitor receives it.
    loaded: dict[str, Any] = json.loads(profile(diabetes).model_dump_json())
    return loaded


def column_of(reference: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in reference["columns"] if c["name"] == name)
    return found


def bootstrap(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    return frame.select(pl.all().gather(np.random.default_rng(seed).integers(0, frame.height, n)))


def direct_psi(edges: list[float], ref_counts: list[int], x: npt.NDArray[np.float64]) -> float:
    live_counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)
    e = np.maximum(np.asarray(ref_counts) / np.sum(ref_counts), EPS)
    a = np.maximum(live_counts / live_counts.sum(), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def direct_ks_piecewise_linear(
    edges: list[float], ref_counts: list[int], x: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """sup |F - G| over the live points, from both sides of each ECDF jump, and ks_2samp's asymptotic p."""
    m, n = int(np.sum(ref_counts)), x.size
    cdf = np.concatenate([[0.0], np.cumsum(ref_counts) / m])
    f = np.interp(x, edges, cdf)
    xs = np.sort(x)
    g_at = np.searchsorted(xs, x, side="right") / n
    g_before = np.searchsorted(xs, x, side="left") / n
    d = float(max(np.abs(f - g_at).max(), np.abs(f - g_before).max()))
    return d, float(stats.kstwo.sf(d, np.round(n * m / (n + m))))


# ---------------------------------------------------------------------------------- numeric statistics


def test_psi_and_ks_equal_direct_computation(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    column = column_of(reference, "bmi")
    edges, counts = column["histogram"]["edges"], column["histogram"]["counts"]
    rng = np.random.default_rng(7)
    # Shifted and wider, so some values fall outside the reference range on both sides.
    x = rng.choice(diabetes["bmi"].to_numpy(), 800) * 1.6 + 0.02

    result = column_drift(column, x)
    assert result.kind == "numeric" and result.ks_method == "histogram"
    assert result.psi == pytest.approx(direct_psi(edges, counts, x), rel=1e-12)
    d, p = direct_ks_piecewise_linear(edges, counts, x)
    assert result.ks_stat == pytest.approx(d, rel=1e-12, abs=1e-15)
    assert result.ks_p == pytest.approx(p, rel=1e-9, abs=1e-300)
    # Live counts are numpy.histogram on the reference edges, out-of-range values in the end bins.
    assert result.live_counts == np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)[0].tolist()
    assert result.live_counts[0] > 0 and result.live_counts[-1] > 0 and sum(result.live_counts) == x.size
    assert psi(counts, result.live_counts) == result.psi


def test_binned_ks_equals_fractions_below_the_edges(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    column = column_of(reference, "s4")  # 66 distinct values, two equal quantiles: discrete
    edges, counts = column["histogram"]["edges"], column["histogram"]["counts"]
    x = np.random.default_rng(8).choice(diabetes["s4"].to_numpy(), 600) + 0.01
    result = column_drift(column, x)
    assert result.ks_method == "histogram_binned"
    ref_below = np.cumsum(counts)[:-1] / np.sum(counts)
    live_below = np.array([np.mean(x < e) for e in edges[1:-1]])
    d = float(np.abs(ref_below - live_below).max())
    assert result.ks_stat == pytest.approx(d, rel=1e-12)
    n, m = x.size, int(np.sum(counts))
    assert result.ks_p == pytest.approx(float(stats.kstwo.sf(d, np.round(n * m / (n + m)))), rel=1e-9)


def test_ks_against_a_constant_reference_equals_ks_2samp() -> None:
    # A one-bin [v, v] histogram is exactly its sample, so the statistic is ks_2samp's.
    reference_rows = np.full(500, 3.0)
    live = np.concatenate([np.full(150, 3.0), np.full(100, 2.0), np.full(50, 4.0)])
    result = ks_from_histogram([3.0, 3.0], [500], live)
    assert result.statistic == pytest.approx(float(stats.ks_2samp(reference_rows, live).statistic), abs=1e-12)
    assert ks_from_histogram([3.0, 3.0], [500], np.full(200, 3.0)).statistic == 0.0


def test_ks_two_sample_is_scipy_ks_2samp() -> None:
    rng = np.random.default_rng(1)
    for n, m, shift in [(300, 200, 0.0), (1000, 900, 0.2), (40, 5000, 1.0)]:
        ref, live = rng.normal(0, 1, m), rng.normal(shift, 1, n)
        expected = stats.ks_2samp(ref, live)
        got = ks_two_sample(ref, live)
        assert (got.statistic, got.pvalue) == (float(expected.statistic), float(expected.pvalue))


def test_histogram_ks_is_close_to_ks_on_the_reference_rows(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 1000, seed=11)
    for name in ["bmi", "bp", "s1", "s2", "s5"]:
        column = column_of(reference, name)
        hist = column["histogram"]
        from_rows = stats.ks_2samp(diabetes[name].to_numpy(), live[name].to_numpy()).statistic
        assert abs(ks_from_histogram(hist["edges"], hist["counts"], live[name]).statistic - from_rows) < 0.05


def test_reference_rows_switch_to_the_two_sample_test(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 500, seed=2)
    report = drift_report(reference, live, ["bmi"], reference_samples={"bmi": diabetes["bmi"].to_numpy()})
    expected = stats.ks_2samp(diabetes["bmi"].to_numpy(), live["bmi"].to_numpy())
    (result,) = report.features
    assert result.ks_method == "two_sample"
    assert (result.ks_stat, result.ks_p) == (float(expected.statistic), float(expected.pvalue))


# ---------------------------------------------------------------------------------------------- verdicts


def prediction_reference(diabetes: pl.DataFrame) -> tuple[LinearRegression, dict[str, Any]]:
    x = diabetes.select(FEATURES).to_numpy()
    model = LinearRegression().fit(x, diabetes["target"].to_numpy())
    predictions = pl.DataFrame({"prediction": model.predict(x)})
    return model, json.loads(profile(predictions).model_dump_json())["columns"][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sample_of_the_reference_distribution_has_no_drift(
    reference: dict[str, Any], diabetes: pl.DataFrame, seed: int
) -> None:
    model, prediction_profile = prediction_reference(diabetes)
    live = bootstrap(diabetes, 1000, seed)
    live = live.with_columns(prediction=model.predict(live.select(FEATURES).to_numpy()))
    report = drift_report(reference, live, FEATURES, prediction_reference=prediction_profile)
    assert report.drifted == []
    assert [r.verdict for r in report.features] == ["no_drift"] * len(FEATURES)
    assert report.prediction is not None and report.prediction.verdict == "no_drift"
    assert all(r.psi is not None and r.psi < 0.1 for r in report.features)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shifted_features_and_only_they_drift(reference: dict[str, Any], diabetes: pl.DataFrame, seed: int) -> None:
    model, prediction_profile = prediction_reference(diabetes)
    live = bootstrap(diabetes, 1000, seed)
    live = live.with_columns(
        pl.col("bmi") + diabetes["bmi"].std(),  # continuous: histogram KS
        pl.col("s3") * 1.8,  # discrete: binned KS
    )
    live = live.with_columns(prediction=model.predict(live.select(FEATURES).to_numpy()))
    report = drift_report(reference, live, FEATURES, prediction_reference=prediction_profile)
    assert report.drifted == ["bmi", "s3", "prediction"]
    verdicts = {r.name: r.verdict for r in report.features}
    assert {n for n, v in verdicts.items() if v == "drift"} == {"bmi", "s3"}
    bmi = report.features[FEATURES.index("bmi")]
    assert bmi.psi is not None and bmi.psi >= 0.2 and bmi.ks_p is not None and bmi.ks_p < 0.01


def test_live_as_frame_mapping_or_pandas_give_the_same_report(
    reference: dict[str, Any], diabetes: pl.DataFrame
) -> None:
    live = bootstrap(diabetes, 300, seed=5)
    as_polars = drift_report(reference, live, ["bmi", "sex"])
    as_mapping = drift_report(reference, {c: live[c].to_list() for c in live.columns}, ["bmi", "sex"])
    as_pandas = drift_report(profile(diabetes).columns, live.to_pandas(), ["bmi", "sex"])
    assert as_polars == as_mapping == as_pandas


def test_features_default_to_every_reference_column_in_live(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 200, seed=3).select(["bmi", "age"])
    assert [r.name for r in drift_report(reference, live).features] == ["age", "bmi"]


def test_too_few_samples_are_insufficient_data(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 99, seed=4).with_columns(pl.col("bmi") + 1.0)  # shifted, but too few rows
    report = drift_report(reference, live, ["bmi"])
    (result,) = report.features
    assert (result.verdict, result.n_live, result.psi, result.ks_stat) == ("insufficient_data", 99, None, None)
    assert "min_samples=100" in result.reason and sum(result.live_counts) == 99
    assert report.drifted == []
    # The threshold is a parameter; the reference side is held to it too.
    assert drift_report(reference, live, ["bmi"], thresholds=DriftThresholds(min_samples=50)).drifted == ["bmi"]
    big = drift_report(reference, bootstrap(diabetes, 600, 4), ["bmi"], thresholds=DriftThresholds(min_samples=500))
    assert big.features[0].verdict == "insufficient_data" and "reference" in big.features[0].reason
    # ... unless it has its own threshold (the monitor asks less of a training set than of live traffic).
    own = DriftThresholds(min_samples=500, min_reference_samples=400)
    assert (
        drift_report(reference, bootstrap(diabetes, 600, 4), ["bmi"], thresholds=own).features[0].verdict == "no_drift"
    )


def test_nan_and_missing_live_values_are_dropped_and_counted(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    x = bootstrap(diabetes, 300, seed=6)["bmi"].to_numpy()
    dirty: list[float | None] = [*x.tolist(), float("nan"), None, float("inf"), float("-inf"), float("nan")]
    with_dirt = column_drift(column_of(reference, "bmi"), dirty)
    clean = column_drift(column_of(reference, "bmi"), x)
    assert (with_dirt.n_live, with_dirt.n_dropped) == (300, 5)
    assert with_dirt.model_dump(exclude={"n_dropped"}) == clean.model_dump(exclude={"n_dropped"})


# ------------------------------------------------------------------------------------------- categorical


@pytest.fixture(scope="module")
def colors() -> tuple[list[str], npt.NDArray[np.float64]]:
    names = [f"c{k:02d}" for k in range(12)]  # 12 categories: the profile keeps 10, two go to "other"
    shares = np.linspace(2.0, 1.0, 12)
    return names, shares / shares.sum()


def colour_frame(colors: tuple[list[str], npt.NDArray[np.float64]]) -> pl.DataFrame:
    names, shares = colors
    values = np.random.default_rng(0).choice(names, 4000, p=shares)
    return pl.DataFrame({"color": values.tolist(), "flag": (np.arange(4000) % 3 == 0).tolist()})


def colour_profile(colors: tuple[list[str], npt.NDArray[np.float64]]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(profile(colour_frame(colors)).model_dump_json())
    return loaded


def test_categorical_chi_square_and_psi_equal_scipy(colors: tuple[list[str], npt.NDArray[np.float64]]) -> None:
    reference = colour_profile(colors)
    column = column_of(reference, "color")
    assert column["categorical"] and len(column["top_values"]) == 10
    names, shares = colors
    live = np.random.default_rng(1).choice(names, 700, p=shares[::-1]).tolist()

    result = column_drift(column, live)
    top = [t["value"] for t in column["top_values"]]
    ref_counts = [t["count"] for t in column["top_values"]] + [
        column["count"] - sum(t["count"] for t in column["top_values"])
    ]
    seen = Counter(live)
    live_counts = [seen[v] for v in top] + [sum(c for v, c in seen.items() if v not in top)]
    assert result.categories == [*top, OTHER]
    assert (result.reference_counts, result.live_counts) == (ref_counts, live_counts)
    expected = stats.chisquare(live_counts, f_exp=np.asarray(ref_counts) / sum(ref_counts) * len(live))
    assert result.chi2 == pytest.approx(float(expected.statistic), rel=1e-12)
    assert result.chi2_p == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-300)
    e = np.maximum(np.asarray(ref_counts) / sum(ref_counts), EPS)
    a = np.maximum(np.asarray(live_counts) / len(live), EPS)
    assert result.psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)
    assert result.verdict == "drift"


def test_categorical_same_distribution_no_drift(colors: tuple[list[str], npt.NDArray[np.float64]]) -> None:
    reference = colour_profile(colors)
    # Drawn from the reference distribution: the chi-square's expected shares are then the true ones.
    live = bootstrap(colour_frame(colors), 1000, seed=2).to_dict(as_series=False)
    assert isinstance(live["flag"][0], bool)  # booleans match the profile's "true"/"false"
    report = drift_report(reference, live, ["color", "flag"])
    assert [(r.kind, r.verdict) for r in report.features] == [("categorical", "no_drift")] * 2
    flag = report.features[1]
    assert flag.categories is not None and set(flag.categories) == {"true", "false"}


def test_unseen_category_gives_finite_drift() -> None:
    column = {"name": "g", "count": 300, "top_values": [{"value": "a", "count": 200}, {"value": "b", "count": 100}]}
    live = ["a"] * 100 + ["b"] * 50 + ["z"] * 30 + [None] * 4
    result = column_drift(column, live)
    assert result.categories == ["a", "b", OTHER] and result.live_counts == [100, 50, 30]
    assert result.n_dropped == 4 and result.verdict == "drift"
    assert result.chi2 is not None and np.isfinite(result.chi2) and result.psi is not None and np.isfinite(result.psi)
    # With no "other" in the reference its expected share is floored at epsilon, then renormalised.
    f_exp = np.array([2 / 3, 1 / 3, EPS])
    assert result.chi2 == pytest.approx(float(stats.chisquare([100, 50, 30], f_exp / f_exp.sum() * 180).statistic))
    assert chi_square([200, 100], [100, 50]).statistic == 0.0


# -------------------------------------------------------------------------------------- output and errors


def assert_plain_json(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)


def test_report_is_plain_json(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 400, seed=9)
    report = drift_report(reference, live.to_pandas(), FEATURES)
    dumped = report.model_dump()
    assert_plain_json(dumped)
    assert json.loads(json.dumps(dumped)) == dumped
    assert FeatureDrift.model_validate(dumped["features"][0]) == report.features[0]


def test_reference_shapes(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    by_name = parse_reference(reference)
    assert list(by_name) == [*FEATURES, "target"]
    assert parse_reference(json.dumps(reference)) == by_name
    assert parse_reference(reference["columns"]) == by_name
    assert parse_reference(profile(diabetes)) == by_name
    assert parse_reference(column_of(reference, "bmi")) == {"bmi": by_name["bmi"]}


def test_unknown_feature_names_the_field(reference: dict[str, Any], diabetes: pl.DataFrame) -> None:
    live = bootstrap(diabetes, 200, seed=1)
    with pytest.raises(ValueError, match=r"unknown feature.*'height'") as caught:
        drift_report(reference, live, ["bmi", "height"])
    assert isinstance(caught.value, DriftInputError) and caught.value.field == "features"
    with pytest.raises(DriftInputError, match="live data has no column 'bmi'") as missing:
        drift_report(reference, live.drop("bmi"), ["bmi"])
    assert missing.value.field == "live.bmi"
    with pytest.raises(DriftInputError, match="live data has no column 'prediction'"):
        drift_report(reference, live, ["bmi"], prediction_reference=column_of(reference, "target"))


@pytest.mark.parametrize(
    ("histogram", "message"),
    [
        ({"edges": [0.0, 1.0, 2.0], "counts": [0, 0]}, "is empty"),
        ({"edges": [], "counts": []}, "has no bins"),
        ({"edges": [0.0, 1.0], "counts": [3, 4]}, "expected 3"),
        ({"edges": [0.0, 2.0, 1.0], "counts": [3, 4]}, "increase"),
    ],
)
def test_bad_reference_histogram_names_the_field(histogram: dict[str, Any], message: str) -> None:
    column = {"name": "x", "count": 7, "histogram": histogram}
    with pytest.raises(ValueError, match=message) as caught:
        column_drift(column, np.arange(200.0))
    assert isinstance(caught.value, DriftInputError) and caught.value.field == "reference.x.histogram"
    assert "reference.x.histogram" in str(caught.value)


def test_other_bad_inputs() -> None:
    with pytest.raises(DriftInputError, match="neither a histogram") as caught:
        column_drift({"name": "x", "count": 0}, [1.0])
    assert caught.value.field == "reference.x"
    with pytest.raises(DriftInputError, match="'abc', which is not a number") as not_number:
        column_drift({"name": "x", "count": 2, "histogram": {"edges": [0, 1], "counts": [2]}}, [1.0, "abc"])
    assert not_number.value.field == "live.x"
    with pytest.raises(DriftInputError, match="not a column profile") as malformed:
        parse_reference([{"name": "x", "histogram": {"edges": "nope"}}])
    assert malformed.value.field == "reference.columns[0]"
    with pytest.raises(DriftInputError, match="not valid JSON"):
        parse_reference("{")
    with pytest.raises(DriftInputError, match="no finite value"):
        ks_two_sample([1.0, 2.0], [float("nan")])
