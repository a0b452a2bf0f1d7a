"""docs/data.md's example runs as written against a real data service."""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from pathlib import Path

import pytest

from lepton_platform.testing import StartService

DOC = Path(__file__).resolve().parents[3] / "docs" / "data.md"
pytestmark = pytest.mark.timeout(120)


def test_the_documented_example_runs(service: StartService) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    key = "doc-" + uuid.uuid4().hex
    address = service("data", {key: "doc" + uuid.uuid4().hex[:8]})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(DOC), "exec"), {"ADDRESS": address, "API_KEY": key, "__name__": "__doc__"})
    printed = out.getvalue()
    assert "6 rows: [('age', 'Int64'), ('income', 'Int64'), ('city', 'String')]" in printed
    assert printed.count("violation:") == 2
    assert "'categories': ['Lyon', 'Nice', 'Paris']" in printed
    assert "income mean 42200 nulls 1" in printed
    assert "split 3 train / 2 test" in printed
