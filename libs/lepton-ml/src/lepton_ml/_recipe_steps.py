"""What a recipe declares: its typed steps, parsed and validated from JSON, and its digest.

The declarative half of :mod:`lepton_ml.recipes` (which re-exports every public name
here): pydantic models of the steps and :class:`Recipe`, :func:`parse_recipe` and
:func:`recipe_digest`. Nothing here touches data; fitting and applying a recipe to a
polars frame is :mod:`lepton_ml.recipes`' job.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lepton_core.validation import FieldError, invalid_argument_from, load_json

MAX_STEPS = 200
# One-hot encoding an id-like column would create one output column per row; past this
# many fitted categories the recipe is almost certainly wrong, so fitting refuses.
MAX_ONE_HOT_CATEGORIES = 1000
MAX_QUANTILE_BUCKETS = 100


class StepModel(BaseModel):
    """The base of every step: a frozen model that refuses unknown keys."""

    # Unknown keys are errors: a misspelt option silently ignored would change what a
    # recipe does without anyone noticing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unique_names(names: list[str], what: str = "column") -> list[str]:
    seen: set[str] = set()
    for name in names:
        if not name:
            raise ValueError(f"{what} names must be non-empty strings")
        if name in seen:
            raise ValueError(f"{what} {name!r} is listed twice; expected each {what} once")
        seen.add(name)
    return names


# A list of column names: non-empty, each name non-empty and listed once.
ColumnList = Annotated[list[str], Field(min_length=1), AfterValidator(_unique_names)]


class DropNulls(StepModel):
    """Drops rows with a null in any of ``columns`` (every column when omitted). Drops rows."""

    op: Literal["drop_nulls"] = "drop_nulls"
    columns: ColumnList | None = None


class FillNulls(StepModel):
    """Replaces nulls in ``column``: with a fitted mean/median/mode, a constant, or the previous value."""

    op: Literal["fill_nulls"] = "fill_nulls"
    column: str
    strategy: Literal["mean", "median", "mode", "constant", "forward"]
    value: bool | int | float | str | None = None

    @model_validator(mode="after")
    def _value_matches_strategy(self) -> FillNulls:
        if self.strategy == "constant" and self.value is None:
            raise FieldError("value", "strategy 'constant' needs a value: a number, string or boolean")
        if self.strategy != "constant" and self.value is not None:
            raise FieldError(
                "value", f"strategy {self.strategy!r} computes its own fill; expected no value (it is for 'constant')"
            )
        return self


class Dedupe(StepModel):
    """Keeps the first of rows that are equal on ``columns`` (every column when omitted). Drops rows."""

    op: Literal["dedupe"] = "dedupe"
    columns: ColumnList | None = None


class Cast(StepModel):
    """Casts ``column`` strictly: any non-null value that does not convert is an error, never a null."""

    op: Literal["cast"] = "cast"
    column: str
    dtype: Literal["int", "float", "str", "bool", "category"]


class Clip(StepModel):
    """Clips ``column`` to bounds given as numbers or as quantiles fitted on the training data."""

    op: Literal["clip"] = "clip"
    column: str
    lower: float | None = None
    upper: float | None = None
    lower_quantile: float | None = Field(default=None, ge=0.0, le=1.0)
    upper_quantile: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_bound_each_side(self) -> Clip:
        if self.lower is not None and self.lower_quantile is not None:
            raise FieldError("lower_quantile", "give lower or lower_quantile, not both")
        if self.upper is not None and self.upper_quantile is not None:
            raise FieldError("upper_quantile", "give upper or upper_quantile, not both")
        if all(b is None for b in (self.lower, self.upper, self.lower_quantile, self.upper_quantile)):
            raise FieldError("lower", "expected at least one of lower, upper, lower_quantile, upper_quantile")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise FieldError("upper", f"upper ({self.upper}) must be >= lower ({self.lower})")
        lq, uq = self.lower_quantile, self.upper_quantile
        if lq is not None and uq is not None and lq > uq:
            raise FieldError("upper_quantile", f"upper_quantile ({uq}) must be >= lower_quantile ({lq})")
        return self


FilterScalar = bool | int | float | str


class Filter(StepModel):
    """Keeps the rows where ``column <operator> value`` holds; a null never passes. Drops rows."""

    op: Literal["filter"] = "filter"
    column: str
    operator: Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_null"]
    value: FilterScalar | list[FilterScalar] | None = None

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Filter:
        if self.operator == "not_null":
            if self.value is not None:
                raise FieldError("value", "operator 'not_null' takes no value; expected value to be omitted")
        elif self.operator == "in":
            if not isinstance(self.value, list) or not self.value:
                raise FieldError("value", "operator 'in' expects a non-empty list of values")
        elif self.value is None or isinstance(self.value, list):
            raise FieldError("value", f"operator {self.operator!r} expects a single number, string or boolean")
        elif isinstance(self.value, bool) and self.operator not in ("==", "!="):
            raise FieldError("value", f"operator {self.operator!r} expects a number or string, not a boolean")
        return self


class Select(StepModel):
    """Keeps only ``columns``, in the order given."""

    op: Literal["select"] = "select"
    columns: ColumnList


class Rename(StepModel):
    """Renames columns: ``mapping`` is old name to new name."""

    op: Literal["rename"] = "rename"
    mapping: dict[str, str] = Field(min_length=1)

    @field_validator("mapping")
    @classmethod
    def _distinct_targets(cls, mapping: dict[str, str]) -> dict[str, str]:
        _unique_names(list(mapping.values()), "new name")
        return mapping


class Derive(StepModel):
    """Adds (or replaces) column ``name`` computed from ``left`` and ``right`` (a column name or a number).

    ``log`` and ``abs`` are unary and take no ``right``. Division by zero, the log of a
    non-positive number and a non-finite power give null rather than inf or NaN.
    """

    op: Literal["derive"] = "derive"
    name: str = Field(min_length=1)
    left: str
    operator: Literal["+", "-", "*", "/", "log", "abs", "pow"]
    right: str | int | float | None = None

    @model_validator(mode="after")
    def _arity(self) -> Derive:
        if self.operator in ("log", "abs") and self.right is not None:
            raise FieldError("right", f"operator {self.operator!r} is unary; expected right to be omitted")
        if self.operator not in ("log", "abs") and self.right is None:
            raise FieldError("right", f"operator {self.operator!r} expects right: a column name or a number")
        if isinstance(self.right, bool):
            raise FieldError("right", "expected a column name or a number, not a boolean")
        return self


class Standardize(StepModel):
    """Rescales each of ``columns`` to (x - mean) / std, with mean and std fitted on the training data."""

    op: Literal["standardize"] = "standardize"
    columns: ColumnList


class OneHot(StepModel):
    """Replaces ``column`` by 0/1 columns named ``<column>=<category>``; unseen values get all zeros."""

    op: Literal["one_hot"] = "one_hot"
    column: str
    categories: list[str] | None = Field(default=None, min_length=1, max_length=MAX_ONE_HOT_CATEGORIES)

    @field_validator("categories")
    @classmethod
    def _distinct_categories(cls, categories: list[str] | None) -> list[str] | None:
        if categories is not None and len(set(categories)) != len(categories):
            raise ValueError("categories must be distinct")
        return categories


class Bucketize(StepModel):
    """Adds ``<column>_bucket``: the index of the half-open interval [b[i-1], b[i]) holding the value.

    Boundaries are given, or fitted as the ``quantiles``-quantiles of the training data.
    """

    op: Literal["bucketize"] = "bucketize"
    column: str
    boundaries: list[float] | None = Field(default=None, min_length=1)
    quantiles: int | None = Field(default=None, ge=2, le=MAX_QUANTILE_BUCKETS)

    @model_validator(mode="after")
    def _exactly_one(self) -> Bucketize:
        if (self.boundaries is None) == (self.quantiles is None):
            raise FieldError("boundaries", "expected exactly one of boundaries or quantiles")
        b = self.boundaries
        if b is not None and any(x >= y for x, y in itertools.pairwise(b)):
            raise FieldError("boundaries", "boundaries must be strictly increasing")
        return self


Step = Annotated[
    DropNulls | FillNulls | Dedupe | Cast | Clip | Filter | Select | Rename | Derive | Standardize | OneHot | Bucketize,
    Field(discriminator="op"),
]

STEP_MODELS: dict[str, type[StepModel]] = {
    get_args(model.model_fields["op"].annotation)[0]: model
    for model in (
        DropNulls,
        FillNulls,
        Dedupe,
        Cast,
        Clip,
        Filter,
        Select,
        Rename,
        Derive,
        Standardize,
        OneHot,
        Bucketize,
    )
}
# Steps that remove rows; serving skips them because a request must get one prediction per row.
ROW_DROPPING_OPS = frozenset({"drop_nulls", "dedupe", "filter"})


class Recipe(BaseModel):
    """An ordered list of steps; identified in lineage by :func:`recipe_digest`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)


def parse_recipe(text: str) -> Recipe:
    """Parses a recipe declared as JSON, such as ``{"steps": [{"op": "dedupe"}]}``.

    Args:
        text: The JSON text.

    Returns:
        The validated recipe.

    Raises:
        InvalidArgument: The text is not JSON or not a valid recipe; ``field`` points at the
            fault, e.g. ``recipe.steps[2].op``.
    """
    data = load_json(text, "recipe")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise invalid_argument_from(
            exc,
            "recipe",
            tag_field="op",
            models=STEP_MODELS,
            expected_root='a JSON object like {"steps": [{"op": ...}, ...]}',
        ) from exc


def recipe_digest(recipe: Recipe) -> str:
    """The identity of a recipe in lineage: ``sha256:<hex>`` of its canonical JSON.

    Canonical means sorted keys, no whitespace and defaults filled in, so two spellings of
    one recipe (an omitted optional field vs an explicit null) get one digest.

    Args:
        recipe: The recipe.

    Returns:
        The digest, in the same ``sha256:<hex>`` format as stored objects.
    """
    canonical = json.dumps(recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
