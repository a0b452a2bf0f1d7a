"""A child started with die_with_parent's prefix does not outlive a parent that is killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lepton_core.children import die_with_parent


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _orphan(prefix: list[str]) -> int:
    """Starts ``sleep 60`` (behind ``prefix``) from a parent, kills the parent by SIGKILL; the child's pid."""
    script = (
        "import subprocess, time; "
        f"child = subprocess.Popen({[*prefix, 'sleep', '60']!r}); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    # Only once setpriv has exec'd sleep is the signal set: a parent killed before that leaves none.
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep\0"):
        assert time.monotonic() < deadline, "the child never ran sleep"
        time.sleep(0.01)
    parent.kill()
    parent.wait()
    return child


def test_a_child_dies_with_its_killed_parent_and_without_the_prefix_it_would_not() -> None:
    assert die_with_parent("KILL"), "setpriv (util-linux) is missing"
    child = _orphan(die_with_parent("KILL"))
    deadline = time.monotonic() + 10
    while _running(child):
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.05)
    control = _orphan([])
    try:
        time.sleep(0.5)
        assert _running(control)  # what the prefix prevents
    finally:
        subprocess.run(["kill", "-9", str(control)], check=False)
