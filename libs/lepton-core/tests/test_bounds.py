"""The shared bounds: versions, seeds, fractions and free text mean the same on every RPC."""

from __future__ import annotations

import math

import pytest

from lepton_core.bounds import (
    MAX_SEED,
    MAX_VERSION,
    check_fraction,
    check_seed,
    check_text,
    check_timestamp,
    check_version,
)
from lepton_core.errors import InvalidArgument


def test_a_version_is_positive_and_zero_only_where_it_means_something() -> None:
    assert check_version(1) == 1 and check_version(MAX_VERSION) == MAX_VERSION
    assert check_version(0, zero="the latest") == 0
    for bad in (-1, 0, MAX_VERSION + 1):
        with pytest.raises(InvalidArgument) as caught:
            check_version(bad, "model_version")
        assert caught.value.field == "model_version"
    with pytest.raises(InvalidArgument, match=r"must be 0 \(the latest\) or a version number"):
        check_version(-1, zero="the latest")


def test_seeds_fractions_and_text() -> None:
    assert check_seed(MAX_SEED, "seed") == 2**32 - 1
    for bad_seed in (-1, MAX_SEED + 1):
        with pytest.raises(InvalidArgument):
            check_seed(bad_seed, "seed")
    assert check_fraction(0.2, "test_fraction") == 0.2
    for bad_fraction in (0.0, 1.0, math.nan, math.inf, -0.1):
        with pytest.raises(InvalidArgument):
            check_fraction(bad_fraction, "test_fraction")
    assert check_text("ridge", "algorithm", limit=8) == "ridge"
    for bad_text in ("x" * 9, "a\nb", "a\x7f"):
        with pytest.raises(InvalidArgument) as caught:
            check_text(bad_text, "algorithm", limit=8)
        assert caught.value.field == "algorithm"


def test_a_timestamp_outside_years_1_to_9999_or_with_bad_nanos_is_refused_naming_the_field() -> None:
    from datetime import UTC, datetime

    from google.protobuf.timestamp_pb2 import Timestamp

    assert check_timestamp(Timestamp(seconds=0, nanos=5000), "since") == datetime(1970, 1, 1, 0, 0, 0, 5, tzinfo=UTC)
    for bad in (Timestamp(seconds=2**63 - 1), Timestamp(seconds=-(2**63)), Timestamp(nanos=-1), Timestamp(nanos=10**9)):
        with pytest.raises(InvalidArgument) as refused:
            check_timestamp(bad, "since")
        assert refused.value.field == "since" and "not a valid timestamp" in str(refused.value)
