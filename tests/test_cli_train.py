"""`lepton train`, `lepton jobs ...` and `lepton models ...` against the running platform."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sklearn.datasets import load_wine

from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.testing import lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def lepton(platform: EmbeddedPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    return lepton_cli(platform, *args)


def test_train_list_show_promote(platform: EmbeddedPlatform, tmp_path: Path) -> None:
    path = tmp_path / "cli-train-wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    assert lepton(platform, "data", "upload", str(path)).returncode == 0
    trained = lepton(
        platform, "-o", "json", "train", "cli-train-wine", "-a", "logistic_regression", "-p", "max_iter=5000",
        "--name", "cli-wine",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["model_name"] == "cli-wine" and result["version"] >= 1 and result["metrics"]["accuracy"] > 0.8
    jobs = json.loads(lepton(platform, "-o", "json", "jobs", "list", "--state", "succeeded").stdout)
    assert result["job_id"] in [j["job_id"] for j in jobs]
    watched = lepton(platform, "-o", "json", "jobs", "watch", result["job_id"])
    assert watched.returncode == 0 and json.loads(watched.stdout)["state"] == "succeeded"
    assert "cli-wine" in lepton(platform, "models", "list").stdout
    shown = json.loads(lepton(platform, "-o", "json", "models", "show", "cli-wine").stdout)
    assert shown["training_job_id"] == result["job_id"]
    promoted = lepton(
        platform, "-o", "json", "models", "promote", "cli-wine", str(result["version"]), "--expected", "0"
    )
    assert promoted.returncode == 0 and json.loads(promoted.stdout)["previous_version"] == 0
    again = lepton(platform, "models", "promote", "cli-wine", str(result["version"]), "--expected", "0")
    assert again.returncode == 7 and "expected_version" in again.stderr
    champion = json.loads(lepton(platform, "-o", "json", "models", "show", "cli-wine", "--alias", "champion").stdout)
    assert champion["version"] == result["version"]
    bad = lepton(platform, "train", "cli-train-wine", "-a", "logistic_regression", "-p", "C=-1")
    assert bad.returncode == 3 and "params.C" in bad.stderr
    assert "logistic_regression" in lepton(platform, "jobs", "algorithms").stdout
    tree = lepton(platform, "models", "lineage", "cli-wine")
    assert tree.returncode == 0 and "dataset cli-train-wine" in tree.stdout and result["job_id"] in tree.stdout
    graph = json.loads(lepton(platform, "-o", "json", "models", "lineage", "cli-wine", "--alias", "champion").stdout)
    assert graph["job"]["job_id"] == result["job_id"] and graph["datasets"][0]["origin"] == "upload"
    cancelled = lepton(platform, "jobs", "cancel", result["job_id"])
    assert cancelled.returncode == 8 and "already succeeded" in cancelled.stderr
    # Tags, search and an evaluation on request, with the plots written to disk.
    tagged = lepton(platform, "-o", "json", "models", "tag", "cli-wine", "-t", "team=cellar", "--description", "wine")
    assert tagged.returncode == 0 and json.loads(tagged.stdout)["tags"] == {"team": "cellar"}
    found = json.loads(lepton(platform, "-o", "json", "models", "search", "-t", "team=cellar").stdout)
    assert [v["model_name"] for v in found] == ["cli-wine"]
    bad_tag = lepton(platform, "models", "tag", "cli-wine", "-t", "novalue")
    assert bad_tag.returncode == 2 and "KEY=VALUE" in bad_tag.stderr
    evaluated = lepton(
        platform, "-o", "json", "models", "evaluate", "cli-wine", "--rows", "all", "--cv", "3",
        "--plots", str(tmp_path / "plots"),
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["rows"] == "all" and report["test_rows"] == 178 and "accuracy" in report["cross_validation"]
    assert (tmp_path / "plots" / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    refused = lepton(platform, "models", "evaluate", "cli-wine", "--cv", "1")
    assert refused.returncode == 3 and "cv_folds" in refused.stderr
