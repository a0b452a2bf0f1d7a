"""docs/evaluation.md and docs/registry.md: their examples run as written on the real platform."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _run(doc: str, platform: EmbeddedPlatform) -> str:
    path = DOCS / doc
    (block,) = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(path), "exec"), {"URL": platform.url, "API_KEY": platform.api_key})
    return out.getvalue()


def test_the_evaluation_example_runs(platform: EmbeddedPlatform) -> None:
    printed = _run("evaluation.md", platform)
    holdout = re.search(r"holdout accuracy (\S+) in \[(\S+), (\S+)\]", printed)
    assert holdout is not None, printed
    accuracy, low, high = (float(g) for g in holdout.groups())
    assert 0.85 < accuracy <= 1.0 and low <= accuracy <= high
    assert "plots: calibration, confusion_matrix, feature_importance, pr, roc" in printed
    assert "all 169 newer rows: roc_auc" in printed
    assert re.search(r"5-fold accuracy 0\.\d+ \+/- 0\.\d+", printed), printed
    assert "confusion matrix PNG: True True" in printed


def test_the_registry_example_runs(platform: EmbeddedPlatform) -> None:
    printed = _run("registry.md", platform)
    assert re.search(r"candidate: wine v2 random_forest_classifier accuracy", printed), printed
    assert "champion v1 -> v2" in printed
    assert "stale move refused: expected_version: alias 'champion' of wine points at version 2, not 1" in printed
    assert "lineage: upload random_forest_classifier 1 evaluation(s)" in printed
    assert "model: cultivar from chemistry {'champion': 2}" in printed


def test_the_monitoring_example_runs(platform: EmbeddedPlatform) -> None:
    printed = _run("monitoring.md", platform)
    assert "incident: ['bmi', 'bp'] requested" in printed, printed
    assert "drifted: ['bmi', 'bp', 'prediction']" in printed, printed
    assert re.search(r"bmi: PSI \d+\.\d, KS 0\.\d\d", printed), printed
    assert "logged requests >= 40: True Triton reachable: True" in printed, printed
