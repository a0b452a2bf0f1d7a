"""docs/training.md's example runs as written against real data and trainer services."""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from pathlib import Path

import pytest

from lepton_platform.testing import StartService

DOC = Path(__file__).resolve().parents[3] / "docs" / "training.md"
pytestmark = pytest.mark.timeout(180)


def test_the_documented_example_runs(service: StartService) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    key = "doc-" + uuid.uuid4().hex
    keys = {key: "tdoc" + uuid.uuid4().hex[:8]}
    data = service("data", keys)
    trainer = service("trainer", keys, data_url=data)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(DOC), "exec"), {"DATA_ADDRESS": data, "TRAINER_ADDRESS": trainer, "API_KEY": key})
    printed = out.getvalue()
    assert "ridge: [('alpha', 'float', '1.0'), ('fit_intercept', 'bool', 'true')]" in printed
    assert "job JOB_STATE_SUCCEEDED done" in printed
    assert printed.count("trial alpha") == 3
    assert re.search(r"best alpha (0.01|1|100)\n", printed)
