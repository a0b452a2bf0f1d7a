"""The name and id grammars: fullmatch only, adversarial values refused with a short message."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from lepton_core.errors import MAX_DETAILS_CHARS, MAX_DETAILS_WIRE, InvalidArgument, details
from lepton_core.names import check_id, check_name, is_id, is_name, shown

ADVERSARIAL = ["", " ", "x\n", "\nx", "a.b", "a.b.*.>", "*", ">", "名字", "Sales", "-x", "_x", "a b", "x\x00", "a" * 65]
#: ``--`` separates tenant, deployment and ``next`` in Triton model names (``<tenant>--<deployment>--next``).
DOUBLE_DASH = ["a--b", "d--next", "a---b", "a--", "a" * 30 + "--" + "b" * 32]


@pytest.mark.parametrize("value", ["a", "0", "sales", "sales-2024_q1", "a" * 64, "a-b-c", "a-", "a_-_b"])
def test_names_that_are_names(value: str) -> None:
    assert is_name(value) and check_name(value, "name") == value


@pytest.mark.parametrize("value", ADVERSARIAL + DOUBLE_DASH)
def test_everything_a_key_or_subject_would_choke_on_is_refused(value: str) -> None:
    assert not is_name(value)
    with pytest.raises(InvalidArgument) as caught:
        check_name(value, "model_name")
    assert caught.value.field == "model_name" and "1 to 64 of a-z" in caught.value.message
    assert "without '--'" in caught.value.message


def test_a_trailing_newline_is_not_a_name() -> None:
    """``re.match(r"...$")`` accepts "x\\n"; the grammar is matched whole."""
    assert not is_name("x\n") and not is_id("job_abc\n", "job")


def test_ids_say_their_kind() -> None:
    assert is_id("job_0123abcd", "job") and is_id("dv_" + "f" * 24, "dv") and is_id("job_rt_abc", "job")
    with pytest.raises(InvalidArgument) as caught:
        check_id("ev_0123abcd", "job_id", "job")
    assert caught.value.field == "job_id"
    assert (
        caught.value.message
        == "expected a training job id like 'job_…' (a-z, 0-9, '_'); got 'ev_0123abcd' (that is an evaluation id)"
    )
    for value in ("job_", "job_ABC", "job_a.b", "job_名字", "job_" + "a" * 65, " job_a"):
        assert not is_id(value, "job"), value


def test_long_values_are_cut_in_messages() -> None:
    value = "x" * 10_000
    with pytest.raises(InvalidArgument) as caught:
        check_name(value, "name")
    assert len(str(caught.value)) < 300 and "10000 characters" in caught.value.message
    assert shown("short") == "'short'"


def test_no_status_message_passes_the_transport_limit() -> None:
    text = details(InvalidArgument("y" * 50_000, field="f"))
    assert len(text) <= MAX_DETAILS_CHARS and text.startswith("f: yyy") and "cut from 50003" in text
    assert details("fine") == "fine"
    # Non-ASCII text is percent-encoded in the trailer, nine bytes a CJK character: cut by that size.
    wide = details("名" * 5_000)
    assert len(quote(wide, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")) <= MAX_DETAILS_WIRE
    assert wide.endswith("(message cut from 5000 characters)")
