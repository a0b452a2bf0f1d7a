"""`make up` (python -m lepton_platform.embedded) serves, then stops every process on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_platform.embedded import grpc_serving

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _descendants(pid: int) -> set[int]:
    """Every process whose parent chain leads to ``pid`` (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped by init."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_up_serves_and_stops_everything(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LEPTON_API_KEY": "up-test-key",
        "LEPTON_HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "LEPTON_BASE_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "lepton_platform.embedded"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "API key   up-test-key" in text, text
        assert "export LEPTON_URL=127.0.0.1:" in text, text
        addresses = [
            line.split()[1]
            for line in lines
            if line.split()[:1]
            and line.split()[0] in ("data", "trainer", "evaluator", "registry", "deployer", "monitor")
        ]
        assert len(addresses) == 6, text
        assert all(grpc_serving(a) for a in addresses)
        children = _descendants(proc.pid)
        assert len(children) >= 8  # nats-server, tritonserver, six services
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if _running(pid)]
    assert not left, f"processes left running: {left}"
    assert proc.returncode == 0
