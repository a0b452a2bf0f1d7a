"""tools/gpu_check.py, the GPU host check, runs end to end on this machine's CPU-only Triton.

On a host without a GPU it checks CPU instances only; what it found on an H200 is in
docs/serving.md. This keeps both halves working between the sessions that get a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Starts Triton itself (the check's run half), not through a fixture.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_prepare_then_run_loads_predicts_and_names_each_runtime(tmp_path: Path) -> None:
    tool = [sys.executable, str(ROOT / "tools" / "gpu_check.py")]
    prepared = subprocess.run([*tool, "prepare", str(tmp_path / "kit")], capture_output=True, text=True, timeout=240)
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    kit = sorted(p.name for p in (tmp_path / "kit").glob("*.json"))
    assert kit == ["breast_cancer-linear.json", "breast_cancer-mlp.json", "diabetes-linear.json", "diabetes-mlp.json"]
    record = json.loads((tmp_path / "kit" / "diabetes-mlp.json").read_text())
    # What the deployer would send for GPU instances, and the tolerance its smoke test would use.
    assert record["configs"]["gpu"]["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]
    assert record["tolerance"] == [1e-6, 1e-5]

    ran = subprocess.run([*tool, "run", str(tmp_path / "kit"), str(tmp_path / "out")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    results = {(r["model"], r["kind"]): r for r in report["results"]}
    assert set(results) == {(k[:-5], "cpu") for k in kit}  # no GPU here: CPU instances only
    for (model, _), result in results.items():
        assert result["equal"], result
        expected = "torch (cpu)" if model.endswith("mlp") else "onnxruntime (CPUExecutionProvider)"
        assert result["runtime"] == expected, result
        assert result["latency_1_rows"]["p50_ms"] > 0
    assert "| diabetes-mlp | cpu | python | torch (cpu) |" in (tmp_path / "out" / "report.md").read_text()
