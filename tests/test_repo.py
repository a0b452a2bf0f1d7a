"""Promises about the repository itself: docs match code, configs are valid, deps import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lepton_platform.processes import nats_server_binary

ROOT = Path(__file__).resolve().parent.parent


def test_event_catalogue_doc_matches_the_code() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_events_doc
    finally:
        sys.path.pop(0)
    assert check_events_doc.problems((ROOT / "docs" / "events.md").read_text()) == []
    assert check_events_doc.problems("nothing here")  # the check can fail


def test_pinned_dependencies_import_together() -> None:
    """pip check passes on pyarrow>=22 with numpy 1.x, yet pyarrow then refuses to import."""
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "smoke_imports.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_requirement_is_pinned_exactly() -> None:
    for name in ("base.in", "lock.txt"):
        for line in (ROOT / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert "==" in line, f"{name}: {line} is not pinned"


@pytest.mark.parametrize("node", [1, 2, 3])
def test_cluster_configs_are_valid_nats_configs(node: int) -> None:
    conf = ROOT / "deploy" / "nats" / f"node-{node}.conf"
    out = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
