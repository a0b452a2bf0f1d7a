"""Recipes: parsing, each step, fit/transform replay, and every way a recipe can be wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lepton_core.errors import InvalidArgument
from lepton_ml.recipes import (
    MAX_ONE_HOT_CATEGORIES,
    MAX_STEPS,
    STEP_MODELS,
    Recipe,
    fit_transform,
    parse_recipe,
    recipe_digest,
    transform,
)


def recipe(*steps: dict[str, Any]) -> Recipe:
    return parse_recipe(json.dumps({"steps": list(steps)}))


def run(df: pl.DataFrame, *steps: dict[str, Any]) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    return fit_transform(df, recipe(*steps))


@contextmanager
def refused(field: str, *words: str) -> Iterator[None]:
    """Expects an InvalidArgument at ``field`` whose message holds each of ``words``."""
    with pytest.raises(InvalidArgument) as info:
        yield
    assert info.value.field == field, f"field {info.value.field!r} != {field!r} ({info.value.message})"
    for word in words:
        assert word in info.value.message, f"{word!r} not in {info.value.message!r}"


@pytest.fixture
def df() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "age": [34, None, 51, 28, 51, 90],
            "income": [50_000.0, 62_000.0, None, 41_000.0, None, 120_000.0],
            "city": ["paris", "lyon", "paris", None, "paris", "nice"],
            "score": ["1", " 2", "3", "4", "5", "6"],
        }
    )


# -- parsing ---------------------------------------------------------------------------------------


def test_every_step_parses_and_round_trips() -> None:
    text = json.dumps(
        {
            "steps": [
                {"op": "drop_nulls", "columns": ["a"]},
                {"op": "fill_nulls", "column": "a", "strategy": "constant", "value": 0},
                {"op": "dedupe"},
                {"op": "cast", "column": "a", "dtype": "float"},
                {"op": "clip", "column": "a", "lower": 0, "upper_quantile": 0.99},
                {"op": "filter", "column": "a", "operator": "in", "value": [1, 2]},
                {"op": "select", "columns": ["a", "b"]},
                {"op": "rename", "mapping": {"b": "c"}},
                {"op": "derive", "name": "d", "left": "a", "operator": "/", "right": "c"},
                {"op": "standardize", "columns": ["a"]},
                {"op": "one_hot", "column": "c", "categories": ["x"]},
                {"op": "bucketize", "column": "a", "quantiles": 4},
            ]
        }
    )
    parsed = parse_recipe(text)
    assert [s.op for s in parsed.steps] == list(STEP_MODELS)
    assert parse_recipe(parsed.model_dump_json()) == parsed


def test_numbers_stay_numbers_and_strings_name_columns() -> None:
    parsed = recipe(
        {"op": "derive", "name": "x", "left": "a", "operator": "+", "right": 2},
        {"op": "derive", "name": "y", "left": "a", "operator": "+", "right": "2"},
    )
    assert parsed.steps[0].right == 2 and parsed.steps[1].right == "2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("{", "recipe", ["JSON", "line 1"]),
        ("[]", "recipe", ["steps"]),
        ('{"steps": 3}', "recipe.steps", ["list"]),
        ('{"steps": [{"op": "explode"}]}', "recipe.steps[0].op", ["'explode'", "drop_nulls", "bucketize"]),
        ('{"steps": [{"column": "a"}]}', "recipe.steps[0].op", ["missing", "one_hot"]),
        (
            '{"steps": [{"op": "dedupe"}, {"op": "select", "columns": ["a"], "colums": 1}]}',
            "recipe.steps[1].colums",
            ["columns"],
        ),
        (
            '{"steps": [{"op": "cast", "column": "a", "dtype": "int8"}]}',
            "recipe.steps[0].dtype",
            ["'int'", "'category'"],
        ),
        ('{"steps": [{"op": "cast", "dtype": "int"}]}', "recipe.steps[0].column", ["required"]),
        (
            '{"steps": [{"op": "fill_nulls", "column": "a", "strategy": "zero"}]}',
            "recipe.steps[0].strategy",
            ["'mean'"],
        ),
        (
            '{"steps": [{"op": "fill_nulls", "column": "a", "strategy": "constant"}]}',
            "recipe.steps[0].value",
            ["value"],
        ),
        (
            '{"steps": [{"op": "fill_nulls", "column": "a", "strategy": "mean", "value": 1}]}',
            "recipe.steps[0].value",
            [],
        ),
        ('{"steps": [{"op": "clip", "column": "a"}]}', "recipe.steps[0].lower", ["at least one"]),
        (
            '{"steps": [{"op": "clip", "column": "a", "lower": 1, "lower_quantile": 0.1}]}',
            "recipe.steps[0].lower_quantile",
            [],
        ),
        ('{"steps": [{"op": "clip", "column": "a", "lower": 5, "upper": 1}]}', "recipe.steps[0].upper", [">="]),
        ('{"steps": [{"op": "clip", "column": "a", "upper_quantile": 1.5}]}', "recipe.steps[0].upper_quantile", ["1"]),
        ('{"steps": [{"op": "clip", "column": "a", "lower": NaN}]}', "recipe.steps[0].lower", ["finite"]),
        (
            '{"steps": [{"op": "filter", "column": "a", "operator": "in", "value": 1}]}',
            "recipe.steps[0].value",
            ["list"],
        ),
        ('{"steps": [{"op": "filter", "column": "a", "operator": "~=", "value": 1}]}', "recipe.steps[0].operator", []),
        ('{"steps": [{"op": "filter", "column": "a", "operator": "<"}]}', "recipe.steps[0].value", ["single"]),
        ('{"steps": [{"op": "filter", "column": "a", "operator": "<", "value": true}]}', "recipe.steps[0].value", []),
        (
            '{"steps": [{"op": "filter", "column": "a", "operator": "not_null", "value": 1}]}',
            "recipe.steps[0].value",
            [],
        ),
        ('{"steps": [{"op": "select", "columns": []}]}', "recipe.steps[0].columns", []),
        (
            '{"steps": [{"op": "filter", "column": "a", "operator": "==", "value": {"x": 1}}]}',
            "recipe.steps[0].value",
            ["expected a boolean, a number, a string or a list"],
        ),
        (
            '{"steps": [{"op": "derive", "name": "x", "left": "a", "operator": "+", "right": [1]}]}',
            "recipe.steps[0].right",
            ["a string or a number"],
        ),
        ('{"steps": [3]}', "recipe.steps[0]", ["object", "'op'"]),
        ('{"steps": [{"op": "select", "columns": ["a", "a"]}]}', "recipe.steps[0].columns", ["twice"]),
        ('{"steps": [{"op": "rename", "mapping": {"a": "c", "b": "c"}}]}', "recipe.steps[0].mapping", ["twice"]),
        (
            '{"steps": [{"op": "derive", "name": "x", "left": "a", "operator": "log", "right": 2}]}',
            "recipe.steps[0].right",
            ["unary"],
        ),
        (
            '{"steps": [{"op": "derive", "name": "x", "left": "a", "operator": "*"}]}',
            "recipe.steps[0].right",
            ["right"],
        ),
        ('{"steps": [{"op": "derive", "name": "x", "left": "a", "operator": "eval"}]}', "recipe.steps[0].operator", []),
        (
            '{"steps": [{"op": "one_hot", "column": "a", "categories": ["x", "x"]}]}',
            "recipe.steps[0].categories",
            ["distinct"],
        ),
        ('{"steps": [{"op": "bucketize", "column": "a"}]}', "recipe.steps[0].boundaries", ["exactly one"]),
        (
            '{"steps": [{"op": "bucketize", "column": "a", "boundaries": [2, 1]}]}',
            "recipe.steps[0].boundaries",
            ["increasing"],
        ),
        ('{"steps": [{"op": "bucketize", "column": "a", "quantiles": 1}]}', "recipe.steps[0].quantiles", ["2"]),
    ],
)
def test_bad_recipes_are_refused_with_the_field_at_fault(text: str, field: str, words: list[str]) -> None:
    with refused(field, *words):
        parse_recipe(text)


def test_too_many_steps() -> None:
    with refused("recipe.steps", str(MAX_STEPS)):
        recipe(*[{"op": "dedupe"}] * (MAX_STEPS + 1))


def test_digest_is_canonical() -> None:
    a = parse_recipe('{"steps": [{"op": "dedupe"}, {"op": "clip", "column": "x", "lower": 0}]}')
    b = parse_recipe('{"steps": [{"op": "dedupe", "columns": null}, {"lower": 0.0, "column": "x", "op": "clip"}]}')
    c = parse_recipe('{"steps": [{"op": "clip", "column": "x", "lower": 0}, {"op": "dedupe"}]}')
    assert recipe_digest(a) == recipe_digest(b) != recipe_digest(c)
    assert recipe_digest(a).startswith("sha256:") and len(recipe_digest(a)) == len("sha256:") + 64
    assert recipe_digest(Recipe()) != recipe_digest(a)


# -- row steps -------------------------------------------------------------------------------------


def test_drop_nulls_on_some_or_all_columns(df: pl.DataFrame) -> None:
    out, fitted = run(df, {"op": "drop_nulls", "columns": ["age"]})
    assert out.height == 5 and fitted == [{}]
    out, _ = run(df, {"op": "drop_nulls"})
    assert out["age"].to_list() == [34, 90]


def test_dedupe_keeps_the_first_in_order() -> None:
    frame = pl.DataFrame({"k": [2, 1, 2, 1, 3], "v": [1, 2, 3, 4, 5]})
    out, _ = run(frame, {"op": "dedupe", "columns": ["k"]})
    assert out.rows() == [(2, 1), (1, 2), (3, 5)]
    out, _ = run(pl.concat([frame, frame]), {"op": "dedupe"})
    assert_frame_equal(out, frame)


@pytest.mark.parametrize(
    ("operator", "value", "ages"),
    [
        ("==", 51, [51, 51]),
        ("!=", 51, [34, 28, 90]),
        ("<", 34, [28]),
        ("<=", 34, [34, 28]),
        (">", 51, [90]),
        (">=", 51, [51, 51, 90]),
        ("in", [28, 90, 28.5], [28, 90]),
        ("not_null", None, [34, 51, 28, 51, 90]),
    ],
)
def test_filter_operators_and_nulls_never_pass(df: pl.DataFrame, operator: str, value: Any, ages: list[int]) -> None:
    out, _ = run(df, {"op": "filter", "column": "age", "operator": operator, "value": value})
    assert out["age"].to_list() == ages


def test_filter_on_text_bool_and_categorical() -> None:
    frame = pl.DataFrame({"s": ["a", "b", None, "c"], "b": [True, False, True, None]}).with_columns(
        c=pl.col("s").cast(pl.Categorical)
    )
    assert run(frame, {"op": "filter", "column": "s", "operator": "in", "value": ["a", "c"]})[0].height == 2
    assert run(frame, {"op": "filter", "column": "s", "operator": ">", "value": "a"})[0]["s"].to_list() == ["b", "c"]
    assert run(frame, {"op": "filter", "column": "c", "operator": "==", "value": "b"})[0].height == 1
    assert run(frame, {"op": "filter", "column": "b", "operator": "==", "value": True})[0].height == 2
    with refused("recipe.steps[0].value", "booleans"):
        run(frame, {"op": "filter", "column": "b", "operator": "==", "value": 1})
    with refused("recipe.steps[0].value", "strings"):
        run(frame, {"op": "filter", "column": "s", "operator": "==", "value": 1})
    with refused("recipe.steps[0].value", "numbers"):
        run(pl.DataFrame({"x": [1]}), {"op": "filter", "column": "x", "operator": "in", "value": ["1"]})


# -- fill_nulls ------------------------------------------------------------------------------------


def test_fill_nulls_strategies(df: pl.DataFrame) -> None:
    out, fitted = run(
        df,
        {"op": "fill_nulls", "column": "income", "strategy": "mean"},
        {"op": "fill_nulls", "column": "age", "strategy": "median"},
        {"op": "fill_nulls", "column": "city", "strategy": "mode"},
    )
    assert fitted == [{"fill": 68_250.0}, {"fill": 51.0}, {"fill": "paris"}]
    assert out["income"].null_count() == out["age"].null_count() == out["city"].null_count() == 0
    assert out["city"][3] == "paris"
    # A float fill makes an integer column float; the dtype depends only on the recipe.
    assert out.schema["age"] == pl.Float64

    out, fitted = run(df, {"op": "fill_nulls", "column": "city", "strategy": "constant", "value": "unknown"})
    assert out["city"][3] == "unknown" and fitted == [{}]
    out, _ = run(df, {"op": "fill_nulls", "column": "income", "strategy": "forward"})
    assert out["income"].to_list() == [50_000.0, 62_000.0, 62_000.0, 41_000.0, 41_000.0, 120_000.0]


def test_mode_ignores_nulls_and_breaks_ties_by_the_smallest_value() -> None:
    frame = pl.DataFrame({"x": [3, 1, None, None, None, 3, 1], "s": ["b", "a", None, None, "b", "a", None]})
    _, fitted = run(frame, {"op": "fill_nulls", "column": "x", "strategy": "mode"})
    assert fitted == [{"fill": 1}]
    out, fitted = run(frame, {"op": "fill_nulls", "column": "s", "strategy": "mode"})
    assert fitted == [{"fill": "a"}] and out.schema["s"] == pl.String
    out, _ = run(frame, {"op": "fill_nulls", "column": "x", "strategy": "mode"})
    assert out.schema["x"] == pl.Int64  # an integer mode keeps the integer dtype
    inf = float("inf")
    _, fitted = run(
        pl.DataFrame({"f": [inf, inf, float("nan"), 2.0]}), {"op": "fill_nulls", "column": "f", "strategy": "mode"}
    )
    assert fitted == [{"fill": 2.0}]


def test_fill_nulls_refusals() -> None:
    frame = pl.DataFrame({"x": [None, None], "s": ["a", None], "b": [True, None]}, schema_overrides={"x": pl.Float64})
    with refused("recipe.steps[0].column", "no non-null values", "constant"):
        run(frame, {"op": "fill_nulls", "column": "x", "strategy": "mean"})
    with refused("recipe.steps[0].column", "no non-null"):
        run(frame, {"op": "fill_nulls", "column": "x", "strategy": "mode"})
    with refused("recipe.steps[0].column", "numeric"):
        run(frame, {"op": "fill_nulls", "column": "s", "strategy": "median"})
    with refused("recipe.steps[0].column", "expected a string"):
        run(frame, {"op": "fill_nulls", "column": "s", "strategy": "constant", "value": 3})
    with refused("recipe.steps[0].column", "expected a number"):
        run(frame, {"op": "fill_nulls", "column": "x", "strategy": "constant", "value": "3"})
    with refused("recipe.steps[0].column", "expected a boolean"):
        run(frame, {"op": "fill_nulls", "column": "b", "strategy": "constant", "value": 1})
    enum = pl.DataFrame({"e": pl.Series(["a", None]).cast(pl.Enum(["a", "b"]))})
    with refused("recipe.steps[0].column", "Enum", "'z'"):
        run(enum, {"op": "fill_nulls", "column": "e", "strategy": "constant", "value": "z"})
    assert run(enum, {"op": "fill_nulls", "column": "e", "strategy": "constant", "value": "b"})[0]["e"].to_list() == [
        "a",
        "b",
    ]


# -- cast ------------------------------------------------------------------------------------------


def test_casts_that_succeed(df: pl.DataFrame) -> None:
    out, _ = run(df, {"op": "cast", "column": "score", "dtype": "int"})
    assert out["score"].to_list() == [1, 2, 3, 4, 5, 6] and out.schema["score"] == pl.Int64
    out, _ = run(df, {"op": "cast", "column": "score", "dtype": "float"})
    assert out.schema["score"] == pl.Float64
    out, _ = run(df, {"op": "cast", "column": "age", "dtype": "str"})
    assert out["age"].to_list()[:2] == ["34", None]
    out, _ = run(df, {"op": "cast", "column": "city", "dtype": "category"})
    assert isinstance(out.schema["city"], pl.Categorical)
    out, _ = run(pl.DataFrame({"x": [1.0, -2.0, None]}), {"op": "cast", "column": "x", "dtype": "int"})
    assert out["x"].to_list() == [1, -2, None]
    out, _ = run(pl.DataFrame({"b": ["True", " no", "1", None]}), {"op": "cast", "column": "b", "dtype": "bool"})
    assert out["b"].to_list() == [True, False, True, None]
    out, _ = run(pl.DataFrame({"b": [0, 1]}), {"op": "cast", "column": "b", "dtype": "bool"})
    assert out["b"].to_list() == [False, True]
    out, _ = run(pl.DataFrame({"b": [True, False]}), {"op": "cast", "column": "b", "dtype": "int"})
    assert out["b"].to_list() == [1, 0]


@pytest.mark.parametrize(
    ("values", "dtype", "example"),
    [
        (["1", "x", "y"], "int", "'x'"),
        (["1", "1.5"], "int", "'1.5'"),
        ([1.0, 2.5], "int", "2.5"),
        ([1.0, float("nan")], "int", "nan"),
        ([1e30], "int", "1e+30"),
        (["1.5", "abc"], "float", "'abc'"),
        (["yes", "maybe"], "bool", "'maybe'"),
        ([0, 2], "bool", "2"),
    ],
)
def test_strict_cast_names_the_column_and_a_bad_value(values: list[Any], dtype: str, example: str) -> None:
    with refused("recipe.steps[0].column", "'v'", dtype, example, "expected"):
        run(pl.DataFrame({"v": values}), {"op": "cast", "column": "v", "dtype": dtype})


# -- clip ------------------------------------------------------------------------------------------


def test_clip_with_fixed_and_fitted_bounds() -> None:
    frame = pl.DataFrame({"x": [float(v) for v in range(101)], "i": list(range(101))})
    out, fitted = run(frame, {"op": "clip", "column": "x", "lower": 10, "upper": 20})
    assert fitted == [{"lower": 10.0, "upper": 20.0}] and (out["x"].min(), out["x"].max()) == (10.0, 20.0)
    out, fitted = run(frame, {"op": "clip", "column": "x", "lower_quantile": 0.05, "upper_quantile": 0.9})
    assert fitted == [{"lower": pytest.approx(5.0), "upper": pytest.approx(90.0)}]
    assert out["x"].max() == pytest.approx(90.0)
    out, fitted = run(frame, {"op": "clip", "column": "x", "upper_quantile": 0.5})
    assert fitted[0]["lower"] is None and out["x"].min() == 0.0


def test_clip_keeps_integers_integers_and_exact() -> None:
    frame = pl.DataFrame({"i": [0, 1, 2, 3, 4]})
    out, _ = run(frame, {"op": "clip", "column": "i", "lower": 1.5, "upper": 3.2})
    # polars alone would clip to [1, 3]; 1 is below 1.5.
    assert out["i"].to_list() == [2, 2, 2, 3, 3] and out.schema["i"] == pl.Int64
    with refused("recipe.steps[0].column", "whole number"):
        run(frame, {"op": "clip", "column": "i", "lower": 1.2, "upper": 1.8})


def test_clip_refusals() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"], "n": [None, None, None]})
    with refused("recipe.steps[0].column", "numeric", "cast"):
        run(frame, {"op": "clip", "column": "s", "lower": 0})
    with refused("recipe.steps[0]", "cross"):
        run(frame, {"op": "clip", "column": "x", "lower": 10, "upper_quantile": 0.5})
    with refused("recipe.steps[0].upper_quantile", "no non-null"):
        run(frame.with_columns(pl.col("n").cast(pl.Float64)), {"op": "clip", "column": "n", "upper_quantile": 0.5})


# -- columns ---------------------------------------------------------------------------------------


def test_select_and_rename(df: pl.DataFrame) -> None:
    out, _ = run(df, {"op": "select", "columns": ["city", "age"]}, {"op": "rename", "mapping": {"city": "town"}})
    assert out.columns == ["town", "age"]
    out, _ = run(df, {"op": "rename", "mapping": {"age": "city", "city": "age"}})
    assert out.columns == ["city", "income", "age", "score"] and out["city"][0] == 34
    with refused("recipe.steps[0].mapping", "'age'", "already"):
        run(df, {"op": "rename", "mapping": {"city": "age"}})


def test_derive_operators() -> None:
    frame = pl.DataFrame({"a": [4, -8, 0, None], "b": [2, 0, 5, 1]})
    out, _ = run(
        frame,
        {"op": "derive", "name": "sum", "left": "a", "operator": "+", "right": "b"},
        {"op": "derive", "name": "diff", "left": "a", "operator": "-", "right": 1},
        {"op": "derive", "name": "prod", "left": "a", "operator": "*", "right": 0.5},
        {"op": "derive", "name": "ratio", "left": "a", "operator": "/", "right": "b"},
        {"op": "derive", "name": "by0", "left": "a", "operator": "/", "right": 0},
        {"op": "derive", "name": "log", "left": "a", "operator": "log"},
        {"op": "derive", "name": "abs", "left": "a", "operator": "abs"},
        {"op": "derive", "name": "sqrt", "left": "a", "operator": "pow", "right": 0.5},
        {"op": "derive", "name": "inv", "left": "a", "operator": "pow", "right": -1},
    )
    assert out["sum"].to_list() == [6, -8, 5, None] and out.schema["sum"] == pl.Int64
    assert out["diff"].to_list() == [3, -9, -1, None]
    assert out["prod"].to_list() == [2.0, -4.0, 0.0, None]
    # Division by zero, log of a non-positive number and non-finite powers are null, never inf or NaN.
    assert out["ratio"].to_list() == [2.0, None, 0.0, None]
    assert out["by0"].to_list() == [None] * 4
    assert out["log"].to_list() == [pytest.approx(math.log(4)), None, None, None]
    assert out["abs"].to_list() == [4, 8, 0, None]
    assert out["sqrt"].to_list() == [2.0, None, 0.0, None]
    assert out["inv"].to_list() == [0.25, -0.125, None, None]
    # Deriving onto an existing name replaces that column in place.
    out, _ = run(frame, {"op": "derive", "name": "a", "left": "a", "operator": "abs"})
    assert out.columns == ["a", "b"] and out["a"][1] == 8


def test_derive_never_evaluates_strings() -> None:
    frame = pl.DataFrame({"a": [1]})
    with refused("recipe.steps[0].right", "does not exist"):
        run(frame, {"op": "derive", "name": "x", "left": "a", "operator": "+", "right": "__import__('os')"})
    with refused("recipe.steps[0].left", "does not exist"):
        run(frame, {"op": "derive", "name": "x", "left": "a + 1", "operator": "abs"})


def test_derive_needs_numeric_columns(df: pl.DataFrame) -> None:
    with refused("recipe.steps[0].left", "numeric"):
        run(df, {"op": "derive", "name": "x", "left": "city", "operator": "abs"})
    with refused("recipe.steps[0].right", "numeric"):
        run(df, {"op": "derive", "name": "x", "left": "age", "operator": "+", "right": "city"})


# -- fitted transforms -----------------------------------------------------------------------------


def test_standardize() -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0, None], "c": [5, 5, 5, 5]})
    out, fitted = run(frame, {"op": "standardize", "columns": ["x", "c"]})
    std = math.sqrt(2 / 3)  # population std, as scikit-learn's StandardScaler
    assert fitted == [{"x": {"mean": 2.0, "std": pytest.approx(std)}, "c": {"mean": 5.0, "std": 1.0}}]
    assert out["x"].to_list()[:3] == pytest.approx([-1 / std, 0.0, 1 / std]) and out["x"][3] is None
    assert out["c"].to_list() == [0.0] * 4 and out.schema["c"] == pl.Float64
    with refused("recipe.steps[0].columns", "numeric"):
        run(pl.DataFrame({"s": ["a"]}), {"op": "standardize", "columns": ["s"]})


def test_standardize_ignores_nan_when_fitting() -> None:
    _, fitted = run(pl.DataFrame({"x": [1.0, float("nan"), 3.0]}), {"op": "standardize", "columns": ["x"]})
    assert fitted == [{"x": {"mean": 2.0, "std": 1.0}}]
    json.dumps(fitted, allow_nan=False)


def test_one_hot_fitted_and_given(df: pl.DataFrame) -> None:
    out, fitted = run(df, {"op": "one_hot", "column": "city"})
    assert fitted == [{"categories": ["lyon", "nice", "paris"]}]
    assert out.columns == ["age", "income", "city=lyon", "city=nice", "city=paris", "score"]
    assert out["city=paris"].to_list() == [1, 0, 1, 0, 1, 0] and out.schema["city=paris"] == pl.Int8
    assert out.row(3, named=True)["city=lyon"] == 0  # null: all zeros
    out, fitted = run(df, {"op": "one_hot", "column": "city", "categories": ["paris", "rome"]})
    assert fitted == [{"categories": ["paris", "rome"]}]
    assert out.select("city=paris", "city=rome").sum().row(0) == (3, 0)


def test_one_hot_unseen_categories_get_all_zeros(df: pl.DataFrame) -> None:
    r = recipe({"op": "one_hot", "column": "city"})
    _, fitted = fit_transform(df, r)
    new = transform(pl.DataFrame({"age": [1, 2], "city": ["berlin", "nice"]}), r, fitted)
    assert new.columns == ["age", "city=lyon", "city=nice", "city=paris"]
    assert new.rows() == [(1, 0, 0, 0), (2, 0, 1, 0)]


def test_one_hot_of_numbers_and_booleans_uses_their_text() -> None:
    out, fitted = run(pl.DataFrame({"b": [True, False, None], "n": [2, 10, 2]}), {"op": "one_hot", "column": "b"})
    assert fitted == [{"categories": ["false", "true"]}] and out.columns == ["b=false", "b=true", "n"]
    _, fitted = run(pl.DataFrame({"n": [2, 10, 2]}), {"op": "one_hot", "column": "n"})
    assert fitted == [{"categories": ["10", "2"]}]  # sorted as text


def test_one_hot_refusals() -> None:
    with refused("recipe.steps[0].column", str(MAX_ONE_HOT_CATEGORIES), "bucketize"):
        run(pl.DataFrame({"id": list(range(MAX_ONE_HOT_CATEGORIES + 1))}), {"op": "one_hot", "column": "id"})
    with refused("recipe.steps[0].column", "'c=x'", "already"):
        run(pl.DataFrame({"c": ["x"], "c=x": [1]}), {"op": "one_hot", "column": "c"})
    with refused("recipe.steps[0].column", "no non-null"):
        run(pl.DataFrame({"c": [None]}, schema={"c": pl.String}), {"op": "one_hot", "column": "c"})


def test_bucketize_with_boundaries_is_left_closed() -> None:
    frame = pl.DataFrame({"x": [-1.0, 0.0, 0.5, 1.0, 5.0, None, float("nan")]})
    out, fitted = run(frame, {"op": "bucketize", "column": "x", "boundaries": [0, 1]})
    assert fitted == [{"boundaries": [0.0, 1.0]}]
    assert out["x_bucket"].to_list() == [0, 1, 1, 2, 2, None, None] and out.schema["x_bucket"] == pl.Int32
    assert out.columns == ["x", "x_bucket"]


def test_bucketize_quantiles_are_fitted_and_ties_collapse() -> None:
    frame = pl.DataFrame({"x": list(range(1, 101))})
    out, fitted = run(frame, {"op": "bucketize", "column": "x", "quantiles": 4})
    assert fitted == [{"boundaries": [pytest.approx(25.75), pytest.approx(50.5), pytest.approx(75.25)]}]
    assert out.group_by("x_bucket").len().sort("x_bucket")["len"].to_list() == [25, 25, 25, 25]
    _, fitted = run(
        pl.DataFrame({"x": [1] * 90 + list(range(10))}), {"op": "bucketize", "column": "x", "quantiles": 10}
    )
    assert fitted[0]["boundaries"] == sorted(set(fitted[0]["boundaries"]))
    with refused("recipe.steps[0].column", "already exists"):
        run(pl.DataFrame({"x": [1], "x_bucket": [0]}), {"op": "bucketize", "column": "x", "boundaries": [1]})


# -- missing columns -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"op": "drop_nulls", "columns": ["age", "nope"]}, "recipe.steps[0].columns"),
        ({"op": "fill_nulls", "column": "nope", "strategy": "mean"}, "recipe.steps[0].column"),
        ({"op": "fill_nulls", "column": "nope", "strategy": "mode"}, "recipe.steps[0].column"),
        ({"op": "fill_nulls", "column": "nope", "strategy": "forward"}, "recipe.steps[0].column"),
        ({"op": "dedupe", "columns": ["nope"]}, "recipe.steps[0].columns"),
        ({"op": "cast", "column": "nope", "dtype": "int"}, "recipe.steps[0].column"),
        ({"op": "clip", "column": "nope", "lower": 0}, "recipe.steps[0].column"),
        ({"op": "filter", "column": "nope", "operator": "not_null"}, "recipe.steps[0].column"),
        ({"op": "select", "columns": ["nope"]}, "recipe.steps[0].columns"),
        ({"op": "rename", "mapping": {"nope": "x"}}, "recipe.steps[0].mapping"),
        ({"op": "derive", "name": "x", "left": "nope", "operator": "abs"}, "recipe.steps[0].left"),
        ({"op": "derive", "name": "x", "left": "age", "operator": "+", "right": "nope"}, "recipe.steps[0].right"),
        ({"op": "standardize", "columns": ["age", "nope"]}, "recipe.steps[0].columns"),
        ({"op": "one_hot", "column": "nope"}, "recipe.steps[0].column"),
        ({"op": "one_hot", "column": "nope", "categories": ["a"]}, "recipe.steps[0].column"),
        ({"op": "bucketize", "column": "nope", "quantiles": 3}, "recipe.steps[0].column"),
    ],
)
def test_a_missing_column_is_named_with_the_columns_that_exist(
    df: pl.DataFrame, step: dict[str, Any], field: str
) -> None:
    with refused(field, "'nope'", "does not exist", "'age'", "'score'"):
        run(df, step)


def test_a_column_dropped_by_an_earlier_step_is_missing_at_the_later_step(df: pl.DataFrame) -> None:
    with refused("recipe.steps[1].column", "'city'", "'city=paris'"):
        run(df, {"op": "one_hot", "column": "city"}, {"op": "cast", "column": "city", "dtype": "str"})


# -- replay ----------------------------------------------------------------------------------------

REPLAYABLE: list[dict[str, Any]] = [
    {"op": "cast", "column": "score", "dtype": "int"},
    {"op": "fill_nulls", "column": "income", "strategy": "median"},
    {"op": "fill_nulls", "column": "age", "strategy": "mode"},
    {"op": "fill_nulls", "column": "city", "strategy": "constant", "value": "none"},
    {"op": "clip", "column": "income", "lower_quantile": 0.1, "upper_quantile": 0.9},
    {"op": "derive", "name": "per_year", "left": "income", "operator": "/", "right": "age"},
    {"op": "derive", "name": "log_income", "left": "income", "operator": "log"},
    {"op": "bucketize", "column": "age", "quantiles": 3},
    {"op": "standardize", "columns": ["income", "per_year"]},
    {"op": "one_hot", "column": "city"},
    {"op": "rename", "mapping": {"score": "rating"}},
    {"op": "select", "columns": ["rating", "income", "per_year", "age_bucket", "city=paris", "city=none"]},
]


def test_transform_on_the_training_frame_reproduces_fit_transform(df: pl.DataFrame) -> None:
    r = recipe(*REPLAYABLE)
    out, fitted = fit_transform(df, r)
    stored = json.loads(json.dumps(fitted, allow_nan=False))
    assert stored == fitted
    assert_frame_equal(transform(df, r, stored), out)
    assert_frame_equal(transform(df, r, stored, serving=False), out)


def test_every_prefix_of_the_recipe_replays_identically(df: pl.DataFrame) -> None:
    for k in range(1, len(REPLAYABLE) + 1):
        r = recipe(*REPLAYABLE[:k])
        out, fitted = fit_transform(df, r)
        assert_frame_equal(transform(df, r, json.loads(json.dumps(fitted))), out)


def test_transform_uses_the_fitted_parameters_not_the_new_data(df: pl.DataFrame) -> None:
    r = recipe(
        {"op": "standardize", "columns": ["income"]},
        {"op": "fill_nulls", "column": "age", "strategy": "mean"},
        {"op": "bucketize", "column": "age", "quantiles": 2},
    )
    _, fitted = fit_transform(df, r)
    new = transform(pl.DataFrame({"age": [None, 1000], "income": [fitted[0]["income"]["mean"], None]}), r, fitted)
    assert new["income"].to_list() == [0.0, None]
    assert new["age"].to_list() == [fitted[1]["fill"], 1000.0]
    (boundary,) = fitted[2]["boundaries"]
    assert new["age_bucket"].to_list() == [int(fitted[1]["fill"] >= boundary), 1]


def test_serving_keeps_every_row_and_batch_mode_drops(df: pl.DataFrame) -> None:
    r = recipe(
        {"op": "drop_nulls", "columns": ["age"]},
        {"op": "dedupe", "columns": ["age"]},
        {"op": "filter", "column": "age", "operator": "<", "value": 60},
        {"op": "fill_nulls", "column": "age", "strategy": "mean"},
    )
    out, fitted = fit_transform(df, r)
    assert out["age"].to_list() == [34, 51, 28] and fitted[3] == {"fill": pytest.approx(113 / 3)}
    served = transform(df, r, fitted)
    assert served.height == df.height and served["age"][1] == pytest.approx(113 / 3)
    assert_frame_equal(transform(df, r, fitted, serving=False), out.with_columns(pl.col("age").cast(pl.Float64)))


def test_fitted_parameters_must_match_the_recipe(df: pl.DataFrame) -> None:
    r = recipe({"op": "standardize", "columns": ["age"]}, {"op": "one_hot", "column": "city"})
    _, fitted = fit_transform(df, r)
    with refused("fitted", "one per step"):
        transform(df, r, fitted[:1])
    with refused("fitted[0]", "'age'"):
        transform(df, r, [{}, fitted[1]])
    with refused("fitted[0].mean", "finite number"):
        transform(df, r, [{"age": {"mean": "x", "std": 1}}, fitted[1]])
    with refused("fitted[1].categories", "strings"):
        transform(df, r, [fitted[0], {"categories": [1, 2]}])
    with refused("fitted[1]", "dict"):
        transform(df, r, [fitted[0], []])  # type: ignore[list-item]


def test_new_data_with_a_bad_value_is_refused_at_transform() -> None:
    r = recipe({"op": "cast", "column": "x", "dtype": "int"})
    _, fitted = fit_transform(pl.DataFrame({"x": ["1", "2"]}), r)
    with refused("recipe.steps[0].column", "'oops'"):
        transform(pl.DataFrame({"x": ["3", "oops"]}), r, fitted)


def test_an_empty_recipe_is_the_identity(df: pl.DataFrame) -> None:
    out, fitted = fit_transform(df, Recipe())
    assert_frame_equal(out, df)
    assert fitted == []
    assert_frame_equal(transform(df, Recipe(), []), df)
