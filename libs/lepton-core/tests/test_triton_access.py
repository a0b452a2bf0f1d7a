"""The platform's Triton credentials: secret files, the headers that carry them, Triton's option."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from lepton_core.triton_access import CONTROL, STATISTICS, TritonCredential, check_secret, ensure_secret_file


def test_a_secret_file_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / CONTROL.file_name
    first = ensure_secret_file(path)
    assert len(first) >= 43 and ensure_secret_file(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_secret_file(tmp_path / "secrets" / STATISTICS.file_name) != first


def test_headers_and_options_carry_the_secret_and_repr_hides_it() -> None:
    credential = TritonCredential(CONTROL, "s" * 43)
    assert credential.grpc_headers() == {"triton-grpc-protocol-lepton-triton-control": "s" * 43}
    assert credential.http_headers() == {"lepton-triton-control": "s" * 43}
    assert CONTROL.option("s" * 43) == (
        "model-repository,model-config,shared-memory,trace,logging:lepton-triton-control=" + "s" * 43
    )
    assert STATISTICS.option("t" * 20) == "statistics:lepton-triton-statistics=" + "t" * 20
    assert "s" * 43 not in repr(credential)


@pytest.mark.parametrize("bad", ["", "short", "a" * 20 + ":b", "a" * 20 + ",b", "a" * 20 + "=b", "a b" * 10, "é" * 20])
def test_a_secret_triton_could_not_parse_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^what: a Triton secret must be 16 to 512 characters"):
        check_secret(bad, "what")


def test_a_missing_or_bad_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(f"lepton-triton-statistics secret file {tmp_path / 'nope'}: ")):
        TritonCredential.from_file(STATISTICS, tmp_path / "nope")
    (tmp_path / "bad").write_text("tiny\n")
    with pytest.raises(ValueError, match=r"secret file .*bad: a Triton secret must be"):
        TritonCredential.from_file(STATISTICS, tmp_path / "bad")
    (tmp_path / "good").write_text("g" * 43 + "\n")
    assert TritonCredential.from_file(STATISTICS, tmp_path / "good").secret == "g" * 43
