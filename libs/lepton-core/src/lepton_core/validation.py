"""Request validation with pydantic, reported as :class:`~lepton_core.errors.InvalidArgument`.

Every service validates structured input (recipes, rules, alert rules, profiles) with pydantic
models; this module is the one place that turns pydantic's error list into an error naming the
field at fault (``recipe.steps[2].op``) and what was expected there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from lepton_core.errors import InvalidArgument


class FieldError(ValueError):
    """A validator error that knows which field of the model is at fault.

    Pydantic reports errors from model validators at the model's location; carrying the
    field here lets :func:`invalid_argument_from` point at the exact field instead.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


_TYPE_WORDS = {"bool": "a boolean", "int": "a number", "float": "a number", "str": "a string", "none": "null"}


def _is_type_label(label: str) -> bool:
    return label in _TYPE_WORDS or label.startswith(("list[", "dict[", "function-"))


def _describe_type_label(label: str) -> str:
    if label.startswith("list["):
        return "a list"
    if label.startswith("dict["):
        return "an object"
    return _TYPE_WORDS.get(label, label)


def invalid_argument_from(
    exc: ValidationError,
    root: str,
    *,
    tag_field: str = "",
    models: Mapping[str, type[BaseModel]] | None = None,
    expected_root: str = "",
) -> InvalidArgument:
    """Turns the first error of a pydantic ValidationError into an InvalidArgument naming the field.

    Args:
        exc: The validation error.
        root: Name of the validated value, the start of the reported field (``recipe``, ``rules[0]``).
        tag_field: For a tagged union, the discriminator field (``op``, ``kind``).
        models: For a tagged union, its members by tag, to list allowed tags and fields.
        expected_root: What the whole value should be, said when it has the wrong shape.

    Returns:
        An error whose field is a path like ``recipe.steps[2].op`` and whose message says what
        was expected, with the count of any further errors.
    """
    models = models or {}
    errors = exc.errors()
    err = errors[0]
    loc = list(err["loc"])
    # A value that matches no member of a plain union (``bool | float | str``) gives one error
    # per member, each located under the member's type name; they are one error to the user.
    alternatives = [e for e in errors if list(e["loc"][: len(loc) - 1]) == loc[:-1]]
    union_labels = [str(e["loc"][-1]) for e in alternatives if e["loc"]]
    is_union = len(alternatives) > 1 and all(_is_type_label(label) for label in union_labels)
    if is_union:
        loc = loc[:-1]
    path = root
    tag: str | None = None
    prev: Any = None
    for part in loc:
        # A discriminated union inserts the member's tag into the location, right after the
        # list index; the user never wrote it, so it is left out of the field path.
        if isinstance(prev, int) and isinstance(part, str) and part in models and tag is None:
            tag = part
        elif isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
        prev = part
    kind = err["type"]
    ctx = err.get("ctx") or {}
    expected_tags = ", ".join(models)
    if is_union:
        wanted = list(dict.fromkeys(_describe_type_label(label) for label in union_labels))
        field, message = (
            path,
            "expected " + (" or ".join([", ".join(wanted[:-1]), wanted[-1]]) if len(wanted) > 1 else wanted[0]),
        )
    elif kind == "union_tag_invalid":
        field, message = (
            f"{path}.{tag_field}",
            f"unknown {tag_field} {ctx.get('tag')!r}; expected one of: {expected_tags}",
        )
    elif kind == "union_tag_not_found":
        field, message = f"{path}.{tag_field}", f"missing {tag_field!r}; expected one of: {expected_tags}"
    elif kind == "extra_forbidden":
        name = loc[-1] if loc else ""
        allowed = ", ".join(models[tag].model_fields) if tag else ""
        message = f"unknown field {name!r}" + (f"; expected only: {allowed}" if allowed else "")
        field = path
    elif kind in ("model_type", "dict_type", "list_type") and path == root and expected_root:
        field, message = path, f"expected {expected_root}"
    elif kind in ("model_attributes_type", "model_type", "dict_type"):
        field, message = path, f"expected a JSON object with {tag_field!r}"
    elif kind == "missing":
        field, message = path, "this field is required"
    elif kind == "value_error" and isinstance(ctx.get("error"), FieldError):
        error: FieldError = ctx["error"]
        field, message = f"{path}.{error.field}", error.message
    elif kind == "value_error":
        field, message = path, str(ctx.get("error", err["msg"]))
    else:
        field, message = path, err["msg"]
    others = len(errors) - (len(alternatives) if is_union else 1)
    if others > 0:
        message += f" (and {others} more error{'s' if others > 1 else ''})"
    return InvalidArgument(message, field=field)


def load_json(text: str | bytes, field: str, expected: str = "JSON text") -> Any:
    """``json.loads(text)``, with every way it fails as InvalidArgument naming ``field``.

    Args:
        text: The JSON text from a request.
        field: The request field it came in.
        expected: What the text should be, said when it does not parse.

    Raises:
        InvalidArgument: The text does not parse, or nests deeper than the parser goes
            (``[[[...]]]`` raises RecursionError, which would otherwise become INTERNAL).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"expected {expected}; it does not parse: {exc.msg} at line {exc.lineno} column {exc.colno}", field=field
        ) from None
    except RecursionError:
        raise InvalidArgument(f"expected {expected}; it nests too deeply to read", field=field) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"expected {expected}; it does not parse: {exc}", field=field) from None


__all__ = ["FieldError", "invalid_argument_from", "load_json"]
