"""Validation rules: parsing, each kind of rule, and the violation report."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl
import pytest

from lepton_core.errors import InvalidArgument
from lepton_data.validation import (
    MAX_PATTERN_LENGTH,
    RULE_MODELS,
    Violation,
    parse_rules,
    validate,
)


@contextmanager
def refused(field: str, *words: str) -> Iterator[None]:
    """Expects an InvalidArgument at ``field`` whose message holds each of ``words``."""
    with pytest.raises(InvalidArgument) as info:
        yield
    assert info.value.field == field, f"field {info.value.field!r} != {field!r} ({info.value.message})"
    for word in words:
        assert word in info.value.message, f"{word!r} not in {info.value.message!r}"


def check(df: pl.DataFrame, *rules: dict[str, Any], max_examples: int = 5) -> list[Violation]:
    return validate(df, parse_rules(json.dumps(list(rules))), max_examples=max_examples)


def one(df: pl.DataFrame, rule: dict[str, Any], max_examples: int = 5) -> Violation:
    (violation,) = check(df, rule, max_examples=max_examples)
    return violation


@pytest.fixture
def people() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3, 3, 5, 6],
            "age": [34, -2, 150, 34, None, 200],
            "email": ["a@x.org", "b@x.org", "not-an-email", "a@x.org", None, "c@y.com"],
            "color": ["red", "blue", "green", "red", "pink", None],
            "ratio": [0.5, float("nan"), 0.1, 0.9, 1.0, None],
        }
    )


# -- parsing ---------------------------------------------------------------------------------------


def test_every_kind_parses_and_its_canonical_form_parses_again() -> None:
    text = json.dumps(
        [
            {"kind": "type", "column": "a", "dtype": "numeric"},
            {"kind": "not_null", "column": "a"},
            {"kind": "range", "column": "a", "min": 0},
            {"kind": "allowed_values", "column": "a", "values": ["x", 1, 2.5, True]},
            {"kind": "unique", "columns": ["a", "b"]},
            {"kind": "regex", "column": "a", "pattern": r"\d+"},
            {"kind": "row_count", "max": 10},
        ]
    )
    rules = parse_rules(text)
    assert [r.kind for r in rules] == list(RULE_MODELS)
    assert rules[3].values == ["x", 1, 2.5, True]  # type: ignore[union-attr]
    # The data service stores rules as their model_dump; that form must parse back to the same rules.
    assert parse_rules(json.dumps([r.model_dump() for r in rules])) == rules
    assert parse_rules("[]") == []


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[", "rules", ["JSON", "line 1"]),
        ('{"kind": "not_null"}', "rules", ["list"]),
        ('[{"kind": "vibes"}]', "rules[0].kind", ["'vibes'", "not_null", "row_count"]),
        ('[{"column": "a"}]', "rules[0].kind", ["missing", "regex"]),
        ('[{"kind": "not_null", "column": "a"}, {"kind": "not_null"}]', "rules[1].column", ["required"]),
        ('[{"kind": "not_null", "column": "a", "colour": 1}]', "rules[0].colour", ["column"]),
        ('[{"kind": "type", "column": "a", "dtype": "date"}]', "rules[0].dtype", ["'numeric'"]),
        ('[{"kind": "range", "column": "a"}]', "rules[0].min", ["at least one"]),
        ('[{"kind": "range", "column": "a", "min": 5, "max": 1}]', "rules[0].max", [">="]),
        ('[{"kind": "range", "column": "a", "min": Infinity}]', "rules[0].min", ["finite"]),
        ('[{"kind": "allowed_values", "column": "a", "values": []}]', "rules[0].values", ["at least 1"]),
        ('[{"kind": "unique"}]', "rules[0].column", ["exactly one"]),
        (
            '[{"kind": "allowed_values", "column": "a", "values": [[1]]}]',
            "rules[0].values[0]",
            ["a boolean, a number or a string"],
        ),
        ("[3]", "rules[0]", ["object", "'kind'"]),
        ('[{"kind": "unique", "column": "a", "columns": ["b"]}]', "rules[0].column", ["exactly one"]),
        ('[{"kind": "regex", "column": "a", "pattern": "("}]', "rules[0].pattern", ["regular expression", "'('"]),
        ('[{"kind": "regex", "column": "a", "pattern": "[z-a]"}]', "rules[0].pattern", ["regular expression"]),
        ('[{"kind": "regex", "column": "a", "pattern": "(?<=x)y"}]', "rules[0].pattern", ["regular expression"]),
        ('[{"kind": "regex", "column": "a", "pattern": "a{99999999}"}]', "rules[0].pattern", ["regular expression"]),
        ('[{"kind": "regex", "column": "a", "pattern": ""}]', "rules[0].pattern", []),
        ('[{"kind": "row_count", "min": -1}]', "rules[0].min", ["0"]),
        ('[{"kind": "row_count"}]', "rules[0].min", ["at least one"]),
        ('[{"kind": "row_count", "min": 1.5}]', "rules[0].min", []),
    ],
)
def test_bad_rules_are_refused_with_the_field_at_fault(text: str, field: str, words: list[str]) -> None:
    with refused(field, *words):
        parse_rules(text)


def test_patterns_are_capped() -> None:
    with refused("rules[0].pattern", str(MAX_PATTERN_LENGTH)):
        parse_rules(json.dumps([{"kind": "regex", "column": "a", "pattern": "a" * (MAX_PATTERN_LENGTH + 1)}]))
    parse_rules(json.dumps([{"kind": "regex", "column": "a", "pattern": "a" * MAX_PATTERN_LENGTH}]))


# -- each kind -------------------------------------------------------------------------------------


def test_a_valid_frame_has_no_violations(people: pl.DataFrame) -> None:
    assert (
        check(
            people,
            {"kind": "type", "column": "age", "dtype": "int"},
            {"kind": "not_null", "column": "id"},
            {"kind": "range", "column": "id", "min": 1, "max": 6},
            {"kind": "allowed_values", "column": "color", "values": ["red", "blue", "green", "pink"]},
            {"kind": "unique", "columns": ["id", "age"]},
            {"kind": "regex", "column": "email", "pattern": r"[^@]+@[^@]+|not-an-email"},
            {"kind": "row_count", "min": 6, "max": 6},
        )
        == []
    )


def test_range_reports_count_description_and_examples(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "range", "column": "age", "min": 0, "max": 120})
    assert (v.rule_index, v.kind, v.column, v.count) == (0, "range", "age", 3)
    assert v.description == "age: 3 values outside [0, 120]"
    assert [e["_row"] for e in v.examples] == [1, 2, 5]
    assert v.examples[0] == {
        "id": 2,
        "age": -2,
        "email": "b@x.org",
        "color": "blue",
        "ratio": v.examples[0]["ratio"],
        "_row": 1,
    }
    assert one(people, {"kind": "range", "column": "age", "min": 0}).description == "age: 1 value below 0"
    assert one(people, {"kind": "range", "column": "age", "max": 100.5}).description == "age: 2 values above 100.5"


def test_range_counts_nan_and_ignores_null(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "range", "column": "ratio", "min": 0.2})
    assert v.count == 2 and [e["_row"] for e in v.examples] == [1, 2]


def test_range_on_a_text_column_is_a_violation_not_a_crash(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "range", "column": "color", "min": 0})
    assert v.count == 1 and "numeric" in v.description and "String" in v.description and v.examples == []


def test_not_null(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "not_null", "column": "email"})
    assert (v.count, v.description, [e["_row"] for e in v.examples]) == (1, "email: 1 null value", [4])


def test_allowed_values_compares_like_with_like(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "allowed_values", "column": "color", "values": ["red", "blue", "green"]})
    assert v.count == 1 and v.examples[0]["color"] == "pink" and "{red, blue, green}" in v.description
    # Numbers: 34.0 equals 34, the text "1" does not, and a fraction never matches an integer.
    v = one(people, {"kind": "allowed_values", "column": "id", "values": [1, 2.0, 3, "5", 5.5]})
    assert [e["id"] for e in v.examples] == [5, 6]
    frame = pl.DataFrame({"f": [0.5, 1.0], "b": [True, False], "s": ["1", "2"]})
    assert check(frame, {"kind": "allowed_values", "column": "f", "values": [0.5, 1]}) == []
    assert one(frame, {"kind": "allowed_values", "column": "b", "values": [True]}).count == 1
    assert one(frame, {"kind": "allowed_values", "column": "s", "values": [1]}).examples[0]["s"] == "2"


def test_allowed_values_on_categorical_and_small_integers() -> None:
    frame = pl.DataFrame(
        {"c": pl.Series(["a", "b", "a"]).cast(pl.Categorical), "u": pl.Series([1, 2, 3], dtype=pl.UInt8)}
    )
    assert one(frame, {"kind": "allowed_values", "column": "c", "values": ["a"]}).count == 1
    # 300 does not fit in a UInt8: it can match nothing, and must not break the check.
    assert one(frame, {"kind": "allowed_values", "column": "u", "values": [1, 300]}).count == 2


def test_unique_on_one_or_several_columns(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "unique", "column": "id"})
    assert (v.count, [e["_row"] for e in v.examples]) == (2, [2, 3])
    assert v.description == "id: 2 rows share a value with another row"
    v = one(people, {"kind": "unique", "columns": ["age", "email"]})
    assert v.column == "age,email" and [e["_row"] for e in v.examples] == [0, 3]
    assert check(people, {"kind": "unique", "columns": ["id", "email"]}) == []
    # Nulls are equal to each other here: two rows with no key are duplicates.
    assert one(pl.DataFrame({"k": [None, None, 1]}), {"kind": "unique", "column": "k"}).count == 2


def test_regex_matches_whole_values(people: pl.DataFrame) -> None:
    v = one(people, {"kind": "regex", "column": "email", "pattern": r"[^@]+@[^@]+\.[a-z]+"})
    assert v.count == 1 and v.examples[0]["email"] == "not-an-email" and "/[^@]+@[^@]+\\.[a-z]+/" in v.description
    # "x" alone would be found inside every value; a whole-value match finds none of them.
    assert one(people, {"kind": "regex", "column": "email", "pattern": "x"}).count == 5
    # Numbers are matched by their text; nulls are not the regex rule's business.
    assert one(people, {"kind": "regex", "column": "age", "pattern": r"\d{2}"}).count == 3


def test_type_rules() -> None:
    frame = pl.DataFrame(
        {
            "i": [1],
            "u": pl.Series([1], dtype=pl.UInt16),
            "f": [1.0],
            "s": ["a"],
            "c": pl.Series(["a"]).cast(pl.Categorical),
            "b": [True],
            "n": [None],
        }
    )
    passes = {
        "int": ["i", "u", "n"],
        "float": ["f", "n"],
        "numeric": ["i", "u", "f", "n"],
        "str": ["s", "c", "n"],
        "bool": ["b", "n"],
    }
    for dtype, ok in passes.items():
        rules = [{"kind": "type", "column": c, "dtype": dtype} for c in frame.columns]
        failed = [frame.columns[v.rule_index] for v in check(frame, *rules)]
        assert failed == [c for c in frame.columns if c not in ok], dtype
    v = one(frame, {"kind": "type", "column": "s", "dtype": "int"})
    assert (v.count, v.description) == (1, "s: expected type int, found String")


def test_row_count() -> None:
    frame = pl.DataFrame({"a": [1, 2, 3]})
    assert one(frame, {"kind": "row_count", "min": 5}).description == "dataset: 3 rows, expected at least 5"
    assert one(frame, {"kind": "row_count", "max": 2}).description == "dataset: 3 rows, expected at most 2"
    v = one(frame, {"kind": "row_count", "min": 4, "max": 9})
    assert (v.column, v.count, v.description) == ("", 1, "dataset: 3 rows, expected between 4 and 9")
    assert check(frame, {"kind": "row_count", "min": 3, "max": 3}) == []


# -- the report ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "type", "column": "nope", "dtype": "int"},
        {"kind": "not_null", "column": "nope"},
        {"kind": "range", "column": "nope", "min": 0},
        {"kind": "allowed_values", "column": "nope", "values": [1]},
        {"kind": "unique", "columns": ["id", "nope"]},
        {"kind": "regex", "column": "nope", "pattern": "a"},
    ],
)
def test_a_missing_column_is_a_violation(people: pl.DataFrame, rule: dict[str, Any]) -> None:
    v = one(people, rule)
    assert v.count == 1 and v.examples == []
    assert v.description.startswith("nope: column missing") and "id, age, email" in v.description


def test_every_violated_rule_is_reported_in_rule_order(people: pl.DataFrame) -> None:
    violations = check(
        people,
        {"kind": "row_count", "min": 100},
        {"kind": "not_null", "column": "id"},
        {"kind": "not_null", "column": "gone"},
        {"kind": "unique", "column": "id"},
        {"kind": "range", "column": "age", "max": 120},
        {"kind": "type", "column": "id", "dtype": "str"},
    )
    assert [(v.rule_index, v.kind) for v in violations] == [
        (0, "row_count"),
        (2, "not_null"),
        (3, "unique"),
        (4, "range"),
        (5, "type"),
    ]


def test_examples_are_capped_and_json_serializable() -> None:
    frame = pl.DataFrame(
        {"x": list(range(100)), "d": pl.date_range(pl.date(2024, 1, 1), pl.date(2024, 4, 9), eager=True)}
    )
    v = one(frame, {"kind": "range", "column": "x", "max": 10})
    assert v.count == 89 and [e["_row"] for e in v.examples] == [11, 12, 13, 14, 15]
    assert len(one(frame, {"kind": "range", "column": "x", "max": 10}, max_examples=2).examples) == 2
    v = one(frame, {"kind": "range", "column": "x", "max": 10}, max_examples=0)
    assert v.count == 89 and v.examples == []
    json.loads(v.model_dump_json())
    json.dumps(one(frame, {"kind": "range", "column": "x", "max": 10}).examples, default=str)


def test_the_row_index_wins_over_a_column_named_row() -> None:
    v = one(pl.DataFrame({"_row": [7, 8], "a": [None, 1]}), {"kind": "not_null", "column": "a"})
    assert v.examples == [{"_row": 0, "a": None}]


def test_negative_max_examples_is_refused(people: pl.DataFrame) -> None:
    with refused("max_examples", ">= 0"):
        validate(people, [], max_examples=-1)


def test_an_empty_frame() -> None:
    frame = pl.DataFrame({"a": []}, schema={"a": pl.Int64})
    assert check(frame, {"kind": "not_null", "column": "a"}, {"kind": "unique", "column": "a"}) == []
    assert one(frame, {"kind": "row_count", "min": 1}).count == 1


def test_a_large_frame_is_checked_quickly() -> None:
    rng = np.random.default_rng(1)
    n = 1_000_000
    frame = pl.DataFrame({"a": rng.integers(0, 1000, n), "s": rng.choice(["x", "y", "z"], n), "f": rng.normal(size=n)})
    rules: list[dict[str, Any]] = [
        {"kind": "range", "column": "a", "max": 998},
        {"kind": "allowed_values", "column": "s", "values": ["x", "y"]},
        {"kind": "regex", "column": "s", "pattern": "[xy]"},
        {"kind": "not_null", "column": "f"},
        {"kind": "unique", "column": "f"},
    ]
    start = time.perf_counter()
    violations = check(frame, *rules)
    assert time.perf_counter() - start < 5
    assert [v.rule_index for v in violations] == [0, 1, 2]
    assert violations[1].count == violations[2].count == (frame["s"] == "z").sum()
