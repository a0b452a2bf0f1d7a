"""docs/quickstart.md: its commands run as written against the running platform."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_runs_from_upload_to_a_served_prediction(platform: EmbeddedPlatform) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "quickstart.md").read_text(), flags=re.S)
    assert [b.strip() for b in blocks[:1]] == ["make up"]  # the platform fixture is that platform
    commands = [line for line in blocks[1].splitlines() if line.strip()]
    assert commands[0].startswith("export LEPTON_URL=") and len(commands) == 4
    env = {**os.environ, "LEPTON_URL": platform.url, "LEPTON_API_KEY": platform.api_key}
    bin_dir = Path(sys.executable).parent
    outputs = []
    for line in commands[1:]:
        argv = shlex.split(line)
        argv[0] = str(bin_dir / Path(argv[0]).name)  # this venv's lepton
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        outputs.append(done.stdout)
    predictions = [float(v) for v in outputs[-1].split()]
    assert len(predictions) == 5 and all(25 < p < 346 for p in predictions), outputs[-1]
    assert "diabetes-ridge v" in outputs[1] and "r2" in outputs[1]
