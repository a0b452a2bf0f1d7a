"""Declared, replayable cleaning and preprocessing recipes over polars frames.

A recipe is an ordered list of steps, declared as JSON. :func:`fit_transform` runs it on
training data and returns, per step, the parameters it learned (means, categories,
quantile bounds); :func:`transform` replays the recipe on new data with those parameters
and never refits, which is what serving applies to each request. Nothing here evaluates a
user string as code: every operation is one of a fixed set of polars expressions.

The steps themselves, :class:`Recipe`, :func:`parse_recipe` and :func:`recipe_digest`
are declared in ``lepton_ml._recipe_steps`` and re-exported here: this module is the
one to import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from lepton_core.errors import InvalidArgument
from lepton_ml._recipe_steps import (
    MAX_ONE_HOT_CATEGORIES,
    MAX_QUANTILE_BUCKETS,
    MAX_STEPS,
    ROW_DROPPING_OPS,
    STEP_MODELS,
    Bucketize,
    Cast,
    Clip,
    Dedupe,
    Derive,
    DropNulls,
    FillNulls,
    Filter,
    FilterScalar,
    OneHot,
    Recipe,
    Rename,
    Select,
    Standardize,
    Step,
    StepModel,
    parse_recipe,
    recipe_digest,
)

# Lower-cased, stripped strings a strict cast to bool accepts.
TRUE_STRINGS = ("true", "1", "yes")
FALSE_STRINGS = ("false", "0", "no")


# --------------------------------------------------------------------------- helpers


def _column_list(df: pl.DataFrame) -> str:
    names = df.columns
    shown = ", ".join(repr(n) for n in names[:50])
    return shown + (f" and {len(names) - 50} more" if len(names) > 50 else "") if names else "(none)"


def _require(df: pl.DataFrame, names: Sequence[str], field: str) -> None:
    present = set(df.columns)
    for name in names:
        if name not in present:
            raise InvalidArgument(
                f"column {name!r} does not exist; expected one of the existing columns: {_column_list(df)}", field=field
            )


def _require_numeric(df: pl.DataFrame, name: str, field: str, what: str) -> None:
    _require(df, [name], field)
    dtype = df.schema[name]
    if not dtype.is_numeric():
        raise InvalidArgument(
            f"column {name!r} is {dtype}; {what} expects a numeric column (add a cast step before it)", field=field
        )


def _is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)


def _fit_values(df: pl.DataFrame, name: str) -> pl.Expr:
    # NaN is not a value to learn from: it would poison means and quantiles, and fitted
    # parameters must stay JSON numbers.
    col = pl.col(name)
    return col.fill_nan(None) if df.schema[name].is_float() else col


def _json_number(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _json_scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | str):
        return value
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{value!r} is not a finite number")
    return f


def _param(params: Mapping[str, Any], key: str, i: int) -> Any:
    if key not in params:
        raise InvalidArgument(
            f"fitted parameters lack {key!r}; expected the output of fit_transform", field=f"fitted[{i}]"
        )
    return params[key]


def _param_number(params: Mapping[str, Any], key: str, i: int, *, nullable: bool = False) -> float | None:
    value = _param(params, key, i)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"expected a finite number, got {value!r}", field=f"fitted[{i}].{key}")
    return float(value)


def _param_list(params: Mapping[str, Any], key: str, i: int, item: type | tuple[type, ...], what: str) -> list[Any]:
    value = _param(params, key, i)
    if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise InvalidArgument(f"expected a list of {what}, got {value!r}", field=f"fitted[{i}].{key}")
    return value


# --------------------------------------------------------------------------- fitting


def _fit(df: pl.DataFrame, step: StepModel, i: int) -> dict[str, Any]:
    """Learns a step's parameters from ``df`` (the frame as it reaches the step)."""
    at = f"recipe.steps[{i}]"
    match step:
        case FillNulls(strategy="mean" | "median" as strategy):
            _require_numeric(df, step.column, f"{at}.column", f"fill_nulls with strategy {strategy!r}")
            values = _fit_values(df, step.column)
            fill = df.select(values.mean() if strategy == "mean" else values.median()).item()
            if fill is None:
                raise InvalidArgument(
                    f"column {step.column!r} has no non-null values to compute the {strategy} from; "
                    "expected some data, or use strategy 'constant'",
                    field=f"{at}.column",
                )
            return {"fill": float(fill)}
        case FillNulls(strategy="mode"):
            _require(df, [step.column], f"{at}.column")
            dtype = df.schema[step.column]
            if not (dtype.is_numeric() or dtype == pl.Boolean or _is_text(dtype)):
                raise InvalidArgument(
                    f"column {step.column!r} is {dtype}; mode expects a numeric, boolean or text column",
                    field=f"{at}.column",
                )
            series = df.get_column(step.column)
            series = series.cast(pl.String) if _is_text(dtype) else series
            # NaN and inf are not fills a JSON parameter can carry, nor sensible ones.
            series = series.filter(series.is_finite()) if dtype.is_float() else series
            # polars counts null as a value in mode(); it must never be the fill.
            modes = series.drop_nulls().mode()
            if modes.len() == 0:
                raise InvalidArgument(
                    f"column {step.column!r} has no non-null values to take the mode of; expected some data, "
                    "or use strategy 'constant'",
                    field=f"{at}.column",
                )
            # Ties are broken by the smallest value so refits on the same data agree.
            return {"fill": _json_scalar(modes.sort().item(0))}
        case Clip():
            _require_numeric(df, step.column, f"{at}.column", "clip")
            values = _fit_values(df, step.column)
            wanted = {"lower": step.lower_quantile, "upper": step.upper_quantile}
            exprs = [values.quantile(q, interpolation="linear").alias(k) for k, q in wanted.items() if q is not None]
            fitted = df.select(exprs).row(0, named=True) if exprs else {}
            for key in fitted:
                if fitted[key] is None:
                    raise InvalidArgument(
                        f"column {step.column!r} has no non-null values to fit the {key} quantile from; "
                        "expected some data, or give a fixed bound",
                        field=f"{at}.{key}_quantile",
                    )
            lower = step.lower if step.lower is not None else _json_number(fitted.get("lower"))
            upper = step.upper if step.upper is not None else _json_number(fitted.get("upper"))
            if lower is not None and upper is not None and lower > upper:
                raise InvalidArgument(
                    f"the fitted bounds cross (lower {lower} > upper {upper}); expected lower <= upper", field=at
                )
            return {"lower": lower, "upper": upper}
        case Standardize():
            for name in step.columns:
                _require_numeric(df, name, f"{at}.columns", "standardize")
            # Population std (ddof=0), as scikit-learn's StandardScaler uses.
            exprs = [
                e
                for n in step.columns
                for e in (_fit_values(df, n).mean().alias(f"m{n}"), _fit_values(df, n).std(ddof=0).alias(f"s{n}"))
            ]
            row = df.select(exprs).row(0, named=True)
            out: dict[str, Any] = {}
            for name in step.columns:
                mean = _json_number(row[f"m{name}"])
                std = _json_number(row[f"s{name}"])
                # A constant (or empty) column has no spread to divide out; dividing by 1 keeps it finite.
                out[name] = {"mean": mean if mean is not None else 0.0, "std": std if std else 1.0}
            return out
        case OneHot(categories=None):
            _require(df, [step.column], f"{at}.column")
            seen = df.get_column(step.column).cast(pl.String).drop_nulls().unique()
            if seen.len() == 0:
                raise InvalidArgument(
                    f"column {step.column!r} has no non-null values to learn categories from; "
                    "expected some data, or give categories",
                    field=f"{at}.column",
                )
            if seen.len() > MAX_ONE_HOT_CATEGORIES:
                raise InvalidArgument(
                    f"column {step.column!r} has {seen.len()} distinct values; one_hot expects at most "
                    f"{MAX_ONE_HOT_CATEGORIES} (give categories, or use bucketize)",
                    field=f"{at}.column",
                )
            return {"categories": sorted(seen.to_list())}
        case OneHot(categories=list() as categories):
            _require(df, [step.column], f"{at}.column")
            return {"categories": list(categories)}
        case Bucketize(quantiles=int() as quantiles):
            _require_numeric(df, step.column, f"{at}.column", "bucketize")
            probs = [k / quantiles for k in range(1, quantiles)]
            # A list of quantiles comes back as one list value, a Series, in a single pass.
            found = df.select(_fit_values(df, step.column).quantile(probs, interpolation="linear")).item()
            points = found.to_list() if isinstance(found, pl.Series) else []
            # Ties in skewed data give repeated quantiles; a boundary counts once.
            bounds = sorted({b for b in (_json_number(x) for x in points) if b is not None})
            if not bounds:
                raise InvalidArgument(
                    f"column {step.column!r} has no non-null values to fit quantile boundaries from; "
                    "expected some data, or give boundaries",
                    field=f"{at}.column",
                )
            return {"boundaries": bounds}
        case Bucketize(boundaries=list() as boundaries):
            _require_numeric(df, step.column, f"{at}.column", "bucketize")
            return {"boundaries": list(boundaries)}
    return {}


# --------------------------------------------------------------------------- applying


def _apply(df: pl.DataFrame, step: StepModel, params: Mapping[str, Any], i: int) -> pl.DataFrame:
    """Applies one step to ``df`` with the given (fitted) parameters."""
    at = f"recipe.steps[{i}]"
    match step:
        case DropNulls():
            _require(df, step.columns or [], f"{at}.columns")
            return df.drop_nulls(subset=step.columns)
        case Dedupe():
            _require(df, step.columns or [], f"{at}.columns")
            return df.unique(subset=step.columns, keep="first", maintain_order=True)
        case FillNulls():
            return _apply_fill(df, step, params, i)
        case Cast():
            return _apply_cast(df, step, i)
        case Clip():
            return _apply_clip(df, step, params, i)
        case Filter():
            return _apply_filter(df, step, i)
        case Select():
            _require(df, step.columns, f"{at}.columns")
            return df.select(step.columns)
        case Rename():
            _require(df, list(step.mapping), f"{at}.mapping")
            kept = set(df.columns) - set(step.mapping)
            clash = next((new for new in step.mapping.values() if new in kept), None)
            if clash is not None:
                raise InvalidArgument(
                    f"new name {clash!r} is already a column; expected names not in use", field=f"{at}.mapping"
                )
            return df.rename(step.mapping)
        case Derive():
            return _apply_derive(df, step, i)
        case Standardize():
            exprs = []
            for name in step.columns:
                _require_numeric(df, name, f"{at}.columns", "standardize")
                stats = _param(params, name, i)
                if not isinstance(stats, Mapping):
                    raise InvalidArgument("expected {'mean': .., 'std': ..}", field=f"fitted[{i}].{name}")
                mean = _param_number(stats, "mean", i)
                std = _param_number(stats, "std", i) or 1.0
                exprs.append(((pl.col(name).cast(pl.Float64) - mean) / std).alias(name))
            return df.with_columns(exprs)
        case OneHot():
            return _apply_one_hot(df, step, params, i)
        case Bucketize():
            _require_numeric(df, step.column, f"{at}.column", "bucketize")
            bounds = _param_list(params, "boundaries", i, (int, float), "numbers")
            out = f"{step.column}_bucket"
            if out in df.columns:
                raise InvalidArgument(
                    f"column {out!r} already exists; expected a free output name", field=f"{at}.column"
                )
            values = _fit_values(df, step.column)
            # Bucket k holds bounds[k-1] <= x < bounds[k]: the count of boundaries at or below x.
            index = pl.sum_horizontal([(values >= b).cast(pl.Int32) for b in bounds]) if bounds else pl.lit(0)
            return df.with_columns(pl.when(values.is_not_null()).then(index).cast(pl.Int32).alias(out))
    raise AssertionError(f"unhandled step {step!r}")  # pragma: no cover


def _apply_fill(df: pl.DataFrame, step: FillNulls, params: Mapping[str, Any], i: int) -> pl.DataFrame:
    field = f"recipe.steps[{i}].column"
    _require(df, [step.column], field)
    col = pl.col(step.column)
    if step.strategy == "forward":
        # Leading nulls stay null: there is no earlier value to carry.
        return df.with_columns(col.fill_null(strategy="forward"))
    fill = step.value if step.strategy == "constant" else _param(params, "fill", i)
    dtype = df.schema[step.column]
    if dtype.is_numeric():
        ok = isinstance(fill, int | float) and not isinstance(fill, bool)
        expected = "a number"
    elif dtype == pl.Boolean:
        ok, expected = isinstance(fill, bool), "a boolean"
    elif _is_text(dtype):
        ok, expected = isinstance(fill, str), "a string"
    else:
        raise InvalidArgument(
            f"column {step.column!r} is {dtype}; fill_nulls expects a numeric, boolean or text column", field=field
        )
    if not ok:
        raise InvalidArgument(
            f"column {step.column!r} is {dtype}; expected {expected} to fill it, got {fill!r}", field=field
        )
    if isinstance(dtype, pl.Enum) and fill not in dtype.categories.to_list():
        # polars leaves the nulls in place, without an error, for a value outside the enum.
        raise InvalidArgument(
            f"column {step.column!r} is an Enum; expected one of its categories to fill it, got {fill!r}", field=field
        )
    return df.with_columns(col.fill_null(pl.lit(fill)))


def _apply_cast(df: pl.DataFrame, step: Cast, i: int) -> pl.DataFrame:
    field = f"recipe.steps[{i}].column"
    _require(df, [step.column], field)
    src = pl.col(step.column)
    dtype = df.schema[step.column]
    text = src.cast(pl.String).str.strip_chars() if _is_text(dtype) else None
    out: pl.Expr
    if step.dtype == "str":
        out = src.cast(pl.String)
    elif step.dtype == "category":
        out = src.cast(pl.String).cast(pl.Categorical)
    elif step.dtype == "int":
        if dtype.is_float():
            # polars truncates 1.5 to 1 even in a strict cast; a fraction is a bad value here.
            out = pl.when(src.is_finite() & (src == src.floor())).then(src).cast(pl.Int64, strict=False)
        else:
            out = (text if text is not None else src).cast(pl.Int64, strict=False)
    elif step.dtype == "float":
        out = (text if text is not None else src).cast(pl.Float64, strict=False)
    elif text is not None:
        lowered = text.str.to_lowercase()
        out = pl.when(lowered.is_in(TRUE_STRINGS)).then(True).when(lowered.is_in(FALSE_STRINGS)).then(False)
    elif dtype.is_numeric():
        out = pl.when(src == 1).then(True).when(src == 0).then(False)
    else:
        out = src.cast(pl.Boolean, strict=False)
    bad = src.is_not_null() & out.is_null()
    n_bad, example = df.select(bad.sum().alias("n"), src.filter(bad).first().alias("e")).row(0)
    if n_bad:
        hint = {
            "bool": f"true/false ({', '.join(TRUE_STRINGS + FALSE_STRINGS)}, or 0/1)",
            "int": "whole numbers",
            "float": "numbers",
        }.get(step.dtype, step.dtype)
        raise InvalidArgument(
            f"column {step.column!r} cannot be cast to {step.dtype}: {n_bad} value{'s' if n_bad > 1 else ''} "
            f"do not convert, e.g. {example!r}; expected {hint}",
            field=field,
        )
    return df.with_columns(out.alias(step.column))


def _apply_clip(df: pl.DataFrame, step: Clip, params: Mapping[str, Any], i: int) -> pl.DataFrame:
    field = f"recipe.steps[{i}].column"
    _require_numeric(df, step.column, field, "clip")
    lower = _param_number(params, "lower", i, nullable=True)
    upper = _param_number(params, "upper", i, nullable=True)
    if df.schema[step.column].is_integer():
        # polars casts the bounds to the column's type, turning a lower bound of 1.5 into 1.
        # For integers, clipping to [ceil(lower), floor(upper)] is exact and keeps the dtype.
        lo = math.ceil(lower) if lower is not None else None
        hi = math.floor(upper) if upper is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise InvalidArgument(
                f"no whole number lies in [{lower}, {upper}]; expected bounds that hold an integer", field=field
            )
        return df.with_columns(pl.col(step.column).clip(lo, hi))
    return df.with_columns(pl.col(step.column).clip(lower, upper))


def _apply_filter(df: pl.DataFrame, step: Filter, i: int) -> pl.DataFrame:
    field = f"recipe.steps[{i}].column"
    _require(df, [step.column], field)
    col = pl.col(step.column)
    if step.operator == "not_null":
        return df.filter(col.is_not_null())
    dtype = df.schema[step.column]
    values: list[FilterScalar] = (
        step.value if isinstance(step.value, list) else [step.value] if step.value is not None else []
    )
    if dtype.is_numeric():
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        expected = "numbers"
    elif dtype == pl.Boolean:
        ok, expected = all(isinstance(v, bool) for v in values) and step.operator in ("==", "!=", "in"), "booleans"
    elif _is_text(dtype):
        ok, expected = all(isinstance(v, str) for v in values), "strings"
        col = col.cast(pl.String)
    else:
        raise InvalidArgument(
            f"column {step.column!r} is {dtype}; filter expects a numeric, boolean or text column", field=field
        )
    if not ok:
        raise InvalidArgument(
            f"column {step.column!r} is {dtype}; expected {expected} to compare with "
            f"(booleans only with ==, != and in), got {step.value!r}",
            field=f"recipe.steps[{i}].value",
        )
    if step.operator == "in":
        if dtype.is_integer():
            # Since polars 2.0, is_in no longer coerces; a fractional value can never match an integer.
            members = pl.Series([int(v) for v in values if float(v).is_integer()], dtype=dtype)
        elif dtype.is_numeric():
            members = pl.Series([float(v) for v in values], dtype=pl.Float64)
            col = col.cast(pl.Float64)
        else:
            members = pl.Series(values, dtype=pl.Boolean if dtype == pl.Boolean else pl.String)
        return df.filter(col.is_in(members.implode()))
    value = pl.lit(values[0])
    compare = {
        "==": col.__eq__,
        "!=": col.__ne__,
        "<": col.__lt__,
        "<=": col.__le__,
        ">": col.__gt__,
        ">=": col.__ge__,
    }[step.operator]
    # filter() drops rows where the predicate is null, so nulls never pass a comparison.
    return df.filter(compare(value))


def _apply_derive(df: pl.DataFrame, step: Derive, i: int) -> pl.DataFrame:
    at = f"recipe.steps[{i}]"
    _require_numeric(df, step.left, f"{at}.left", f"derive {step.operator!r}")
    left = pl.col(step.left)
    right: pl.Expr | None = None
    if isinstance(step.right, str):
        _require_numeric(df, step.right, f"{at}.right", f"derive {step.operator!r}")
        right = pl.col(step.right)
    elif step.right is not None:
        right = pl.lit(step.right)
    out: pl.Expr
    if step.operator == "abs":
        out = left.abs()
    elif step.operator == "log":
        out = pl.when(left > 0).then(left.cast(pl.Float64).log())
    elif right is None:  # pragma: no cover - the model validator rules this out
        raise AssertionError("binary operator without right")
    elif step.operator == "+":
        out = left + right
    elif step.operator == "-":
        out = left - right
    elif step.operator == "*":
        out = left * right
    elif step.operator == "/":
        out = pl.when(right != 0).then(left.cast(pl.Float64) / right)
    else:
        powered = left.cast(pl.Float64).pow(right)
        out = pl.when(powered.is_finite()).then(powered)
    return df.with_columns(out.alias(step.name))


def _apply_one_hot(df: pl.DataFrame, step: OneHot, params: Mapping[str, Any], i: int) -> pl.DataFrame:
    field = f"recipe.steps[{i}].column"
    _require(df, [step.column], field)
    categories = _param_list(params, "categories", i, str, "strings")
    names = [f"{step.column}={c}" for c in categories]
    clash = next((n for n in names if n in df.columns and n != step.column), None)
    if clash is not None:
        raise InvalidArgument(f"output column {clash!r} already exists; expected a free output name", field=field)
    values = pl.col(step.column).cast(pl.String)
    # A null or a value not seen in training matches no category and so gets all zeros.
    dummies = [(values == c).fill_null(False).cast(pl.Int8).alias(n) for c, n in zip(categories, names, strict=True)]
    at = df.columns.index(step.column)
    order = [*df.columns[:at], *names, *df.columns[at + 1 :]]
    return df.with_columns(dummies).select(order)


def _run(df: pl.DataFrame, step: StepModel, params: Mapping[str, Any], i: int) -> pl.DataFrame:
    try:
        return _apply(df, step, params, i)
    except InvalidArgument:
        raise
    except pl.exceptions.PolarsError as exc:
        # A combination the checks above did not foresee is still the recipe's fault, not the service's.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        op = getattr(step, "op", "?")
        raise InvalidArgument(
            f"step {op!r} cannot be applied to this data ({reason}); expected columns of a type it supports",
            field=f"recipe.steps[{i}]",
        ) from exc


# --------------------------------------------------------------------------- public API


def fit_transform(df: pl.DataFrame, recipe: Recipe) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Runs ``recipe`` on training data, fitting each step on the frame as it reaches that step.

    Args:
        df: The training frame.
        recipe: The recipe.

    Returns:
        The transformed frame and one JSON-serializable dict of fitted parameters per step
        (``{}`` for stateless steps), to pass to :func:`transform`.

    Raises:
        InvalidArgument: A step names a missing column, meets a column of the wrong type, a
            value that does not cast, or data it cannot fit on.
    """
    fitted: list[dict[str, Any]] = []
    for i, step in enumerate(recipe.steps):
        params = _fit(df, step, i)
        df = _run(df, step, params, i)
        fitted.append(params)
    return df, fitted


def transform(
    df: pl.DataFrame, recipe: Recipe, fitted: Sequence[Mapping[str, Any]], *, serving: bool = True
) -> pl.DataFrame:
    """Replays ``recipe`` on new data with parameters fitted earlier; it never refits.

    Args:
        df: The new frame.
        recipe: The recipe that was fitted.
        fitted: The parameters :func:`fit_transform` returned for this recipe (possibly after
            a JSON round trip).
        serving: Skip the row-dropping steps (drop_nulls, dedupe, filter). Serving must
            return one prediction per input row, in order, so it cannot silently drop rows;
            pass ``False`` for batch use, such as preparing a held-out evaluation set.

    Returns:
        The transformed frame.

    Raises:
        InvalidArgument: ``fitted`` does not match the recipe, or a step cannot be applied to
            ``df`` (missing column, wrong type, uncastable value).
    """
    if len(fitted) != len(recipe.steps):
        raise InvalidArgument(
            f"{len(fitted)} fitted entries for {len(recipe.steps)} steps; expected one per step", field="fitted"
        )
    for i, (step, params) in enumerate(zip(recipe.steps, fitted, strict=True)):
        if not isinstance(params, Mapping):
            raise InvalidArgument(f"expected a dict of parameters, got {params!r}", field=f"fitted[{i}]")
        if serving and step.op in ROW_DROPPING_OPS:
            continue
        df = _run(df, step, params, i)
    return df


__all__ = [
    "MAX_ONE_HOT_CATEGORIES",
    "MAX_QUANTILE_BUCKETS",
    "MAX_STEPS",
    "ROW_DROPPING_OPS",
    "STEP_MODELS",
    "Bucketize",
    "Cast",
    "Clip",
    "Dedupe",
    "Derive",
    "DropNulls",
    "FillNulls",
    "Filter",
    "OneHot",
    "Recipe",
    "Rename",
    "Select",
    "Standardize",
    "Step",
    "fit_transform",
    "parse_recipe",
    "recipe_digest",
    "transform",
]
