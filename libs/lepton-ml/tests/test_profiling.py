"""Profiles: numeric statistics against numpy, text columns, odd columns, and speed."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from lepton_ml.profiling import QUANTILES, ColumnProfile, DatasetProfile, histogram_edges, profile


def column(df: pl.DataFrame, name: str) -> ColumnProfile:
    return next(c for c in profile(df).columns if c.name == name)


def test_numeric_statistics_match_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(10, 3, 5000)
    p = column(pl.DataFrame({"x": x}), "x")
    assert (p.dtype, p.count, p.nulls, p.distinct, p.categorical) == ("Float64", 5000, 0, 5000, False)
    assert (p.min, p.max) == (x.min(), x.max())
    assert p.mean == pytest.approx(x.mean()) and p.std == pytest.approx(x.std(ddof=1))
    assert p.quantiles is not None and list(p.quantiles) == ["p01", "p05", "p25", "p50", "p75", "p95", "p99"]
    assert [p.quantiles[k] for k in QUANTILES] == pytest.approx(np.quantile(x, list(QUANTILES.values())))
    assert p.histogram is not None and len(p.histogram.edges) == 21 and len(p.histogram.counts) == 20
    assert p.histogram.edges == pytest.approx(np.linspace(x.min(), x.max(), 21).tolist())
    # The same bins as numpy.histogram, so the monitor can bin live data with numpy.
    assert p.histogram.counts == np.histogram(x, bins=p.histogram.edges)[0].tolist()
    assert p.top_values is None


def test_integers_and_nulls() -> None:
    p = column(pl.DataFrame({"n": [1, 2, 3, None, 3]}), "n")
    assert (p.count, p.nulls, p.distinct) == (4, 1, 3)
    assert (p.min, p.max, p.mean) == (1.0, 3.0, 2.25)
    assert p.histogram is not None and sum(p.histogram.counts) == 4
    assert p.histogram.counts[0] == 1 and p.histogram.counts[-1] == 2  # the max falls in the last, closed bin
    assert p.quantiles is not None and p.quantiles["p50"] == 2.5


def test_an_all_equal_column_has_one_bin() -> None:
    p = column(pl.DataFrame({"e": [5, 5, 5, None]}), "e")
    assert p.histogram is not None and p.histogram.edges == [5.0, 5.0] and p.histogram.counts == [3]
    assert (p.min, p.max, p.std, p.distinct) == (5.0, 5.0, 0.0, 1)


def test_a_single_value_has_no_std() -> None:
    p = column(pl.DataFrame({"x": [2.0]}), "x")
    assert p.std is None and p.mean == 2.0 and p.histogram is not None and p.histogram.counts == [1]


@pytest.mark.parametrize("dtype", [pl.Null, pl.Float64, pl.Int32, pl.String, pl.Boolean])
def test_all_null_columns(dtype: pl.DataType) -> None:
    p = column(pl.DataFrame({"z": [None, None, None]}, schema={"z": dtype}), "z")
    assert (p.count, p.nulls, p.distinct, p.categorical) == (0, 3, 0, False)
    assert (p.min, p.max, p.mean, p.std, p.quantiles, p.histogram) == (None,) * 6
    if not dtype.is_numeric():
        assert p.top_values == []


def test_text_columns_and_empty_strings() -> None:
    frame = pl.DataFrame({"s": ["", "", "a", None, "b", "a", ""], "e": [""] * 7})
    p = column(frame, "s")
    assert (p.dtype, p.count, p.nulls, p.distinct, p.categorical) == ("String", 6, 1, 3, True)
    assert p.top_values is not None and [(t.value, t.count) for t in p.top_values] == [("", 3), ("a", 2), ("b", 1)]
    assert (p.min, p.mean, p.histogram, p.quantiles) == (None,) * 4
    p = column(frame, "e")
    assert p.top_values is not None and [(t.value, t.count) for t in p.top_values] == [("", 7)]
    assert p.distinct == 1 and p.categorical


def test_top_values_are_the_ten_most_frequent_then_by_value() -> None:
    values = [f"v{k:02d}" for k in range(15) for _ in range(15 - k)] + ["tie-b", "tie-a"] * 5
    p = column(pl.DataFrame({"s": values}), "s")
    assert p.top_values is not None and len(p.top_values) == 10
    ranked = [(t.value, t.count) for t in p.top_values]
    assert ranked[:5] == [("v00", 15), ("v01", 14), ("v02", 13), ("v03", 12), ("v04", 11)]
    assert ranked[5:8] == [("v05", 10), ("v06", 9), ("v07", 8)]
    assert ranked[8:] == [("v08", 7), ("v09", 6)]
    p = column(pl.DataFrame({"s": ["b", "a", "c", "b", "a", "c"]}), "s")
    assert p.top_values is not None and [t.value for t in p.top_values] == ["a", "b", "c"]


def test_boolean_columns() -> None:
    p = column(pl.DataFrame({"b": [True, False, True, None, True, False]}), "b")
    assert (p.dtype, p.count, p.nulls, p.distinct, p.categorical) == ("Boolean", 5, 1, 2, True)
    assert p.top_values is not None and [(t.value, t.count) for t in p.top_values] == [("true", 3), ("false", 2)]
    assert p.mean is None and p.histogram is None


def test_categorical_threshold() -> None:
    n = 200
    few = [f"c{k % 50}" for k in range(n)]
    many = [f"c{k % 51}" for k in range(n)]
    frame = pl.DataFrame({"few": few, "many": many, "cat": pl.Series(many).cast(pl.Categorical)})
    prof = {c.name: c for c in profile(frame).columns}
    assert prof["few"].categorical and not prof["many"].categorical
    # A polars Categorical (or Enum) is categorical whatever its cardinality.
    assert prof["cat"].categorical and prof["cat"].top_values is not None
    # Distinct values must also be at most half the rows: three rows of three values is not categorical.
    assert not column(pl.DataFrame({"s": ["a", "b", "c"]}), "s").categorical
    assert column(pl.DataFrame({"s": ["a", "b", "a", "b"]}), "s").categorical
    assert not column(pl.DataFrame({"n": [1, 1, 2, 2]}), "n").categorical  # numbers never are


def test_nan_and_infinity_are_counted_but_left_out_of_the_statistics() -> None:
    p = column(pl.DataFrame({"f": [1.0, float("nan"), float("inf"), 3.0, None, -float("inf")]}), "f")
    assert (p.count, p.nulls, p.non_finite) == (5, 1, 3)
    assert (p.min, p.max, p.mean) == (1.0, 3.0, 2.0)
    assert p.histogram is not None and sum(p.histogram.counts) == 2
    dumped = p.model_dump_json()
    assert "NaN" not in dumped and "Infinity" not in dumped
    p = column(pl.DataFrame({"f": [float("nan"), float("nan")]}), "f")
    assert (p.count, p.non_finite, p.min, p.histogram, p.quantiles) == (2, 2, None, None, None)


def test_other_dtypes_get_top_values() -> None:
    frame = pl.DataFrame(
        {
            "d": [pl.date(2024, 1, 1)] * 2,
            "dec": pl.Series(["1.50", "2.25"]).cast(pl.Decimal(10, 2)),
            "l": [[1], [2]],
        }
    )
    frame = frame.with_columns(pl.Series("d", ["2024-01-01", "2024-01-02"]).str.to_date())
    prof = {c.name: c for c in profile(frame).columns}
    assert prof["d"].top_values is not None and prof["d"].top_values[0].value == "2024-01-01"
    assert prof["dec"].mean == pytest.approx(1.875) and prof["dec"].histogram is not None
    assert prof["l"].count == 2 and prof["l"].top_values is None


def test_frames_with_no_rows_or_no_columns() -> None:
    empty = profile(pl.DataFrame({"x": [], "s": []}, schema={"x": pl.Float64, "s": pl.String}))
    assert empty.rows == 0 and [(c.count, c.nulls, c.distinct) for c in empty.columns] == [(0, 0, 0), (0, 0, 0)]
    assert empty.columns[0].histogram is None and empty.columns[1].top_values == []
    assert profile(pl.DataFrame()) == DatasetProfile(rows=0, columns=[])


def test_columns_keep_their_order_and_odd_names() -> None:
    frame = pl.DataFrame({"n": [1, 2], "1.nulls": ["a", "b"], "": [0.5, 0.5], "count": [True, False]})
    prof = profile(frame)
    assert [c.name for c in prof.columns] == frame.columns
    assert [c.count for c in prof.columns] == [2, 2, 2, 2]


def test_the_profile_round_trips_through_json() -> None:
    frame = pl.DataFrame({"x": [1.5, 2.5, None], "s": ["a", None, "a"], "b": [True, True, False]})
    prof = profile(frame)
    text = prof.model_dump_json()
    json.loads(text)
    assert DatasetProfile.model_validate_json(text) == prof


def test_a_million_rows_by_twenty_columns() -> None:
    """Right at scale; how fast is bench/data_bench.py's business, not a timed assertion's."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    data: dict[str, object] = {f"f{k}": rng.normal(size=n) for k in range(8)}
    data |= {f"i{k}": rng.integers(0, 1000, n) for k in range(5)}
    data |= {f"s{k}": rng.choice([f"v{v}" for v in range(30 if k < 2 else 5000)], n) for k in range(4)}
    data |= {"b": rng.random(n) > 0.5, "id": rng.permutation(n).astype(str)}
    data["g"] = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    frame = pl.DataFrame(data).with_columns(pl.col("g").fill_nan(None))
    assert frame.shape == (n, 20)
    prof = profile(frame)
    cols = {c.name: c for c in prof.columns}
    assert cols["g"].nulls == pytest.approx(n * 0.1, rel=0.05)
    assert cols["s0"].categorical and not cols["s3"].categorical and not cols["id"].categorical
    assert cols["id"].distinct == n


@pytest.mark.parametrize(
    ("lo", "hi", "on_edge"),
    [(-10.0, 6.0, -8.4), (-4.6, 2.7, -3.505), (2.133, 8.255, 2.4391), (0.87, 8.7, 1.2614999999999998)],
)
def test_values_exactly_on_an_edge_fall_in_the_bin_numpy_gives_them(lo: float, hi: float, on_edge: float) -> None:
    # floor((v - lo) / width) put each of these one bin too low: the division rounds below the edge's index.
    edges = histogram_edges(lo, hi)
    assert on_edge in edges
    x = np.array([lo, on_edge, hi, *edges, *np.random.default_rng(0).uniform(lo, hi, 500)])
    p = column(pl.DataFrame({"x": x}), "x")
    assert p.histogram is not None and p.histogram.edges == edges
    assert p.histogram.counts == np.histogram(x, bins=p.histogram.edges)[0].tolist()
    # numpy's own equal-width binning (bins=20) agrees too: the same edges, the same counts.
    counts, numpy_edges = np.histogram(x, bins=20)
    assert numpy_edges.tolist() == edges and p.histogram.counts == counts.tolist()


def test_every_edge_of_many_ranges_bins_like_numpy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        lo, hi = sorted(rng.uniform(-1000, 1000, 2).round(int(rng.integers(0, 5))))
        if hi <= lo:
            continue
        x = np.array(histogram_edges(lo, hi))
        p = column(pl.DataFrame({"x": x}), "x")
        assert p.histogram is not None
        assert p.histogram.counts == np.histogram(x, bins=p.histogram.edges)[0].tolist(), (lo, hi)
