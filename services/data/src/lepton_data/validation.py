"""Validation rules declared per dataset, and a report of every rule a frame violates.

Rules are JSON, one object per rule tagged by ``kind``. :func:`validate` checks them all and
reports each violated rule once, with how many rows offend and a few of those rows; a rule
about a column the frame lacks is reported as a violation rather than failing the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from lepton_core.errors import InvalidArgument
from lepton_core.validation import FieldError, invalid_argument_from, load_json

MAX_RULES = 1000
MAX_PATTERN_LENGTH = 500
MAX_ALLOWED_VALUES = 10_000


class _Rule(BaseModel):
    # Unknown keys are errors: a misspelt bound silently ignored would pass bad data.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TypeRule(_Rule):
    """The column has a dtype of the given family (an all-null column of dtype Null passes)."""

    kind: Literal["type"] = "type"
    column: str
    dtype: Literal["int", "float", "numeric", "str", "bool"]


class NotNullRule(_Rule):
    """The column holds no nulls."""

    kind: Literal["not_null"] = "not_null"
    column: str


class RangeRule(_Rule):
    """Every non-null value lies in [min, max] (either bound may be omitted); NaN is out of range."""

    kind: Literal["range"] = "range"
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise FieldError("min", "expected at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldError("max", f"max ({self.max:g}) must be >= min ({self.min:g})")
        return self


class AllowedValuesRule(_Rule):
    """Every non-null value is one of ``values``."""

    kind: Literal["allowed_values"] = "allowed_values"
    column: str
    values: list[bool | int | float | str] = Field(min_length=1, max_length=MAX_ALLOWED_VALUES)


class UniqueRule(_Rule):
    """No two rows are equal on ``column`` (or on all of ``columns`` together); null equals null here."""

    kind: Literal["unique"] = "unique"
    column: str | None = None
    columns: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> UniqueRule:
        if (self.column is None) == (self.columns is None):
            raise FieldError("column", "expected exactly one of column or columns")
        return self

    @property
    def keys(self) -> list[str]:
        """The columns the rule is about."""
        return [self.column] if self.column is not None else list(self.columns or [])


class RegexRule(_Rule):
    """Every non-null value, as text, matches ``pattern`` in full (Rust regex syntax: no look-around)."""

    kind: Literal["regex"] = "regex"
    column: str
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        # polars runs the pattern, so polars (not Python's re) decides whether it is valid.
        try:
            pl.select(pl.lit("").str.contains(_anchored(pattern)))
        except pl.exceptions.PolarsError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip().startswith("error:"))
            raise ValueError(
                f"expected a valid regular expression; {pattern!r} does not compile ({detail or 'parse error'})"
            ) from exc
        return pattern


class RowCountRule(_Rule):
    """The frame has between ``min`` and ``max`` rows (either bound may be omitted)."""

    kind: Literal["row_count"] = "row_count"
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> RowCountRule:
        if self.min is None and self.max is None:
            raise FieldError("min", "expected at least one of min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldError("max", f"max ({self.max}) must be >= min ({self.min})")
        return self


Rule = Annotated[
    TypeRule | NotNullRule | RangeRule | AllowedValuesRule | UniqueRule | RegexRule | RowCountRule,
    Field(discriminator="kind"),
]
RULE_MODELS: dict[str, type[_Rule]] = {
    get_args(m.model_fields["kind"].annotation)[0]: m
    for m in (TypeRule, NotNullRule, RangeRule, AllowedValuesRule, UniqueRule, RegexRule, RowCountRule)
}
_RULES: TypeAdapter[list[Rule]] = TypeAdapter(Annotated[list[Rule], Field(max_length=MAX_RULES)])


class Violation(BaseModel):
    """One violated rule.

    ``count`` is the number of offending rows for a rule about values (not_null, range,
    allowed_values, unique, regex), and 1 for a rule about the frame or a column as a whole
    (type, row_count, a missing column). ``examples`` holds up to ``max_examples`` offending
    rows, each with ``_row``, its 0-based index in the frame.
    """

    rule_index: int
    kind: str
    column: str
    description: str
    count: int
    examples: list[dict[str, Any]] = Field(default_factory=list)


def parse_rules(text: str) -> list[Rule]:
    """Parses rules declared as a JSON list, such as ``[{"kind": "not_null", "column": "id"}]``.

    Args:
        text: The JSON text.

    Returns:
        The validated rules, in order.

    Raises:
        InvalidArgument: The text is not JSON or not a list of valid rules; ``field`` points
            at the fault, e.g. ``rules[1].pattern``.
    """
    data = load_json(text, "rules", "a JSON list of rules")
    try:
        return _RULES.validate_python(data)
    except ValidationError as exc:
        raise invalid_argument_from(
            exc,
            "rules",
            tag_field="kind",
            models=RULE_MODELS,
            expected_root='a JSON list of rules like [{"kind": "not_null", "column": "id"}]',
        ) from exc


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class _RowCheck:
    """A rule that flags rows: ``bad`` is true on each offending row."""

    index: int
    kind: str
    column: str
    bad: pl.Expr
    describe: Callable[[int], str]


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def _num(x: float) -> str:
    return f"{x:g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def _type_matches(dtype: pl.DataType, wanted: str) -> bool:
    if dtype == pl.Null:
        return True
    return {
        "int": dtype.is_integer(),
        "float": dtype.is_float(),
        "numeric": dtype.is_numeric(),
        "str": _is_text(dtype),
        "bool": dtype == pl.Boolean,
    }[wanted]


def _as_text(value: bool | int | float | str) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _allowed_mask(col: pl.Expr, dtype: pl.DataType, values: Sequence[bool | int | float | str]) -> pl.Expr:
    """True where a non-null value is allowed; compares like with like so 1 and "1" stay distinct."""
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    members: pl.Series
    if dtype.is_integer():
        whole = [int(v) for v in numbers if float(v).is_integer()]
        # Values the dtype cannot hold can match nothing, so they are dropped rather than failing the cast.
        members = pl.Series(whole, dtype=pl.Int64).cast(dtype, strict=False).drop_nulls()
    elif dtype.is_numeric():
        members, col = pl.Series([float(v) for v in numbers], dtype=pl.Float64), col.cast(pl.Float64)
    elif dtype == pl.Boolean:
        members = pl.Series([v for v in values if isinstance(v, bool)], dtype=pl.Boolean)
    else:
        members, col = pl.Series([_as_text(v) for v in values], dtype=pl.String), col.cast(pl.String)
    return col.is_in(members.implode())


def _row_check(df: pl.DataFrame, i: int, rule: Rule) -> _RowCheck | Violation | None:
    """Builds the check for one rule, or answers it at once when it is about the frame or a column's type."""
    present = set(df.columns)
    if isinstance(rule, RowCountRule):
        n = df.height
        if (rule.min is None or n >= rule.min) and (rule.max is None or n <= rule.max):
            return None
        if rule.min is not None and rule.max is not None:
            expected = f"between {rule.min} and {rule.max}"
        else:
            expected = f"at least {rule.min}" if rule.min is not None else f"at most {rule.max}"
        return Violation(
            rule_index=i,
            kind=rule.kind,
            column="",
            description=f"dataset: {_plural(n, 'row')}, expected {expected}",
            count=1,
        )
    keys = rule.keys if isinstance(rule, UniqueRule) else [rule.column]
    label = ",".join(keys)
    missing = [k for k in keys if k not in present]
    if missing:
        shown = ", ".join(df.columns[:50]) + (" ..." if df.width > 50 else "")
        return Violation(
            rule_index=i,
            kind=rule.kind,
            column=label,
            description=f"{', '.join(missing)}: column missing (the dataset has: {shown or 'no columns'})",
            count=1,
        )
    if isinstance(rule, UniqueRule):
        key = pl.col(keys[0]) if len(keys) == 1 else pl.struct(keys)
        return _RowCheck(
            i,
            rule.kind,
            label,
            key.is_duplicated(),
            lambda n: f"{label}: {_plural(n, 'row')} share a value with another row",
        )
    name = rule.column
    col = pl.col(name)
    dtype = df.schema[name]
    if isinstance(rule, TypeRule):
        if _type_matches(dtype, rule.dtype):
            return None
        return Violation(
            rule_index=i,
            kind=rule.kind,
            column=name,
            description=f"{name}: expected type {rule.dtype}, found {dtype}",
            count=1,
        )
    if isinstance(rule, NotNullRule):
        return _RowCheck(i, rule.kind, name, col.is_null(), lambda n: f"{name}: {_plural(n, 'null value')}")
    if isinstance(rule, RangeRule):
        if not dtype.is_numeric():
            if dtype == pl.Null:
                return None
            return Violation(
                rule_index=i,
                kind=rule.kind,
                column=name,
                description=f"{name}: expected a numeric column for a range check, found {dtype}",
                count=1,
            )
        lo, hi = rule.min, rule.max
        outside = pl.lit(False)
        if lo is not None:
            outside = outside | (col < lo)
        if hi is not None:
            outside = outside | (col > hi)
        if dtype.is_float():
            outside = outside | col.is_nan()
        if lo is not None and hi is not None:
            where = f"outside [{_num(lo)}, {_num(hi)}]"
        elif lo is not None:
            where = f"below {_num(lo)}"
        else:
            where = f"above {_num(hi or 0.0)}"
        return _RowCheck(i, rule.kind, name, outside, lambda n: f"{name}: {_plural(n, 'value')} {where}")
    if isinstance(rule, AllowedValuesRule):
        allowed = ", ".join(_as_text(v) for v in rule.values[:10]) + (" ..." if len(rule.values) > 10 else "")
        bad = col.is_not_null() & ~_allowed_mask(col, dtype, rule.values)
        return _RowCheck(i, rule.kind, name, bad, lambda n: f"{name}: {_plural(n, 'value')} not in {{{allowed}}}")
    # RegexRule: values are matched as text, so a pattern can check numbers' digits too.
    if not (_is_text(dtype) or dtype.is_numeric() or dtype.is_temporal() or dtype in (pl.Boolean, pl.Null)):
        return Violation(
            rule_index=i,
            kind=rule.kind,
            column=name,
            description=f"{name}: expected a text, number, boolean or date column for a regex check, found {dtype}",
            count=1,
        )
    text = col if dtype == pl.String else col.cast(pl.String)
    bad = col.is_not_null() & ~text.str.contains(_anchored(rule.pattern))
    pattern = rule.pattern
    return _RowCheck(i, rule.kind, name, bad, lambda n: f"{name}: {_plural(n, 'value')} do not match /{pattern}/")


def validate(df: pl.DataFrame, rules: Sequence[Rule], max_examples: int = 5) -> list[Violation]:
    """Checks every rule against ``df`` and reports each violated one.

    All row-level rules are counted in one polars pass; offending rows are then gathered by
    index only for the rules that failed.

    Args:
        df: The frame to check.
        rules: The rules, as :func:`parse_rules` returns them.
        max_examples: The most offending rows to include per violation.

    Returns:
        The violations in rule order; an empty list means the frame is valid.

    Raises:
        InvalidArgument: ``max_examples`` is negative.
    """
    if max_examples < 0:
        raise InvalidArgument(f"expected max_examples >= 0, got {max_examples}", field="max_examples")
    answered: dict[int, Violation] = {}
    checks: list[_RowCheck] = []
    for i, rule in enumerate(rules):
        found = _row_check(df, i, rule)
        if isinstance(found, Violation):
            answered[i] = found
        elif found is not None:
            checks.append(found)
    if checks:
        # A null mask value (a null compared with a bound) means "not offending".
        row = pl.int_range(pl.len(), dtype=pl.UInt32)
        exprs = [
            e
            for c in checks
            for e in (
                c.bad.fill_null(False).sum().alias(f"n{c.index}"),
                row.filter(c.bad.fill_null(False)).head(max_examples).implode().alias(f"e{c.index}"),
            )
        ]
        summary = df.select(exprs).row(0, named=True)
        for c in checks:
            n = int(summary[f"n{c.index}"])
            if not n:
                continue
            found = summary[f"e{c.index}"]
            rows: list[int] = found.to_list() if isinstance(found, pl.Series) else list(found or [])
            examples = df.select(pl.all().gather(rows)).to_dicts() if rows else []
            answered[c.index] = Violation(
                rule_index=c.index,
                kind=c.kind,
                column=c.column,
                description=c.describe(n),
                count=n,
                # "_row" is added last, so it wins over a column of that name.
                examples=[{**ex, "_row": r} for ex, r in zip(examples, rows, strict=True)],
            )
    return [answered[i] for i in sorted(answered)]


__all__ = [
    "MAX_PATTERN_LENGTH",
    "RULE_MODELS",
    "AllowedValuesRule",
    "NotNullRule",
    "RangeRule",
    "RegexRule",
    "RowCountRule",
    "Rule",
    "TypeRule",
    "UniqueRule",
    "Violation",
    "parse_rules",
    "validate",
]
