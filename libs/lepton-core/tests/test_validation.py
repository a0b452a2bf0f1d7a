"""Request JSON that cannot be read is INVALID_ARGUMENT naming the field, never INTERNAL."""

from __future__ import annotations

import pytest

from lepton_core.errors import InvalidArgument
from lepton_core.validation import load_json


def test_json_nested_past_the_parser_is_invalid_not_a_recursion_error() -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_json("[" * 100_000 + "]" * 100_000, "rules_json", "a JSON list of rules")
    assert caught.value.field == "rules_json" and "nests too deeply" in caught.value.message


@pytest.mark.parametrize("text", ["{", "", "nul\x00", b"\xff\xfe"])
def test_text_that_does_not_parse_names_the_field(text: str | bytes) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_json(text, "recipe")
    assert caught.value.field == "recipe" and caught.value.message.startswith("expected JSON text")


def test_json_that_parses_is_returned() -> None:
    assert load_json('{"steps": []}', "recipe") == {"steps": []}
