"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import shutil


def die_with_parent(signal_name: str = "KILL") -> list[str]:
    """A command prefix that sends the command ``signal_name`` when its parent dies, even by SIGKILL.

    util-linux's ``setpriv --pdeathsig`` (Linux's PR_SET_PDEATHSIG) sets it and then execs the
    command. It is not done in a ``preexec_fn``: Python code between fork and exec in a process
    with gRPC's threads can abort the child (gRPC's poller checks fail after the fork). Empty
    where there is no ``setpriv``: the child then outlives a parent that is killed. The signal is
    set once setpriv runs, so a parent that dies in the instant between its fork and that is
    not covered.
    """
    return ["setpriv", "--pdeathsig", signal_name] if shutil.which("setpriv") else []
