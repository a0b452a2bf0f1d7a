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
from lepton_platform.processes import UNRESTORED_FILE

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


def _up(home: Path, api_key: str | None) -> tuple[subprocess.Popen[str], list[str]]:
    """Starts `make up` in ``home`` (with ``api_key`` in LEPTON_API_KEY, or none); its output up to Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k != "LEPTON_API_KEY"}
    env.update(LEPTON_HOME=str(home), PYTHONUNBUFFERED="1", LEPTON_BASE_PORT="0")
    if api_key:
        env["LEPTON_API_KEY"] = api_key
    proc = subprocess.Popen(
        [sys.executable, "-m", "lepton_platform.embedded"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
    except BaseException:
        proc.kill()
        raise
    return proc, lines


def test_up_serves_and_stops_everything(tmp_path: Path) -> None:
    proc, lines = _up(tmp_path, "up-test-key")
    try:
        text = "".join(lines)
        assert "API key   from LEPTON_API_KEY" in text and "up-test-key" not in text, text  # no secret in the output
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


def _up_output(home: Path) -> str:
    """Starts `make up` with no key given, reads its output up to Ctrl-C, stops it."""
    proc, lines = _up(home, None)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return "".join(lines)


def test_up_shows_a_key_it_makes_once_then_where_it_is(tmp_path: Path) -> None:
    first = _up_output(tmp_path)
    key = (tmp_path / "secrets" / "api-key").read_text().strip()
    assert f"API key   {key}" in first and "shown this once" in first, first
    again = _up_output(tmp_path)
    assert key not in again, again
    assert f"API key   kept in {tmp_path / 'secrets' / 'api-key'}" in again, again
    assert f'LEPTON_API_KEY="$(cat {tmp_path / "secrets" / "api-key"})"' in again, again


def test_up_on_a_store_that_lost_a_stream_says_so_and_starts_nothing(tmp_path: Path) -> None:
    """A stream nats-server did not restore at an earlier start (noted by the launcher): `make up` exits 1
    with the reason and the operator's next step, no traceback, and leaves no process running."""
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / UNRESTORED_FILE).write_text('["EVENTS"]')
    proc, lines = _up(tmp_path, None)
    assert proc.wait(timeout=60) == 1
    out = "".join(lines)
    assert "lepton: nats-server did not restore EVENTS" in out and "A disk that filled up" in out, out
    assert "Traceback" not in out, out
    assert subprocess.run(["pgrep", "-f", str(tmp_path)], check=False).returncode == 1  # nothing left running
