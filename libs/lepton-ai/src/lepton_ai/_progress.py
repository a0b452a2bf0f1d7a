"""Progress bars for the SDK's long calls, in a terminal and in Jupyter.

A terminal gets rich's live bar on stderr, so stdout stays clean for ``--output json``
and pipes. An IPython kernel (JupyterLab, Notebook, VS Code, Colab) gets the same bar
redrawn in an output widget under the cell: rich's Jupyter support, which needs
ipywidgets (``pip install 'lepton-ai[jupyter]'``). Anywhere else (a pipe, a log file,
a batch job) nothing is drawn unless ``progress=True`` asks for it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.progress import Progress, ProgressColumn

#: Most redraws a second in Jupyter: each one is a message to the front end.
JUPYTER_REFRESH_PER_S = 8.0


def in_jupyter() -> bool:
    """Whether this process is an IPython kernel, i.e. a notebook's (or VS Code's, Colab's).

    Looks only when IPython is already imported (a kernel imports it before any cell
    runs), so scripts and the CLI never pay for importing it. The IPython shell of a
    terminal has no ``kernel`` and is not a notebook.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def wanted(progress: bool | None) -> bool:
    """Whether to draw a bar: ``progress`` if given, else on a terminal or in a notebook."""
    if progress is not None:
        return progress
    if sys.stderr.isatty():
        return True
    if not in_jupyter():
        return False
    if importlib.util.find_spec("ipywidgets") is None:
        warnings.warn(
            "progress bars in Jupyter need ipywidgets: pip install 'lepton-ai[jupyter]' (or progress=False)",
            stacklevel=3,
        )
        return False
    return True


class ProgressBar:
    """One task's live bar, drawn where the user looks (see the module docstring).

    In a terminal rich redraws from its own thread, so the elapsed time keeps ticking.
    In Jupyter each redraw replaces the output widget's content with a message to the
    front end, so it happens on :meth:`update` instead, at most
    :data:`JUPYTER_REFRESH_PER_S` times a second, and once more at the end.
    """

    def __init__(self, description: str, total: float, *columns: str | ProgressColumn) -> None:
        self._jupyter = in_jupyter()
        self._console = Console(stderr=True, force_jupyter=self._jupyter)
        self._progress = Progress(*columns, console=self._console, auto_refresh=not self._jupyter)
        self._task = self._progress.add_task(description, total=total)
        self._drawn = 0.0
        self._stale = False

    def __enter__(self) -> ProgressBar:
        with self._drawing():
            self._progress.start()  # draws the first frame (in Jupyter: displays the widget)
        self._drawn = time.monotonic()
        return self

    def update(self, **changes: Any) -> None:
        """Changes the task (``completed``, ``advance``, ``description``) and redraws when due."""
        self._progress.update(self._task, **changes)
        self._stale = True
        if self._jupyter and time.monotonic() - self._drawn >= 1 / JUPYTER_REFRESH_PER_S:
            self._refresh()

    def _drawing(self) -> contextlib.AbstractContextManager[None]:
        return held_interrupt() if self._jupyter else contextlib.nullcontext()

    def _refresh(self) -> None:
        with self._drawing():
            self._progress.refresh()
        self._drawn = time.monotonic()
        self._stale = False

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if not self._jupyter:
            self._progress.stop()
            return
        try:
            if self._stale:  # rich draws no last frame in Jupyter: show where it ended
                self._refresh()
        finally:
            # Stopping would display rich's empty buffer as a blank output below the widget.
            self._console.quiet = True
            with self._drawing():
                self._progress.stop()


@contextlib.contextmanager
def held_interrupt() -> Iterator[None]:
    """Holds a Ctrl-C that comes during the block and raises it once the block is done.

    rich draws in Jupyter inside ``with output_widget:``, and ipywidgets' ``Output`` shows
    and swallows any exception raised in it, KeyboardInterrupt included: a Kernel >
    Interrupt that lands during a redraw would leave the job running with no prompt. Only
    the main thread can hold signals; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        signal.raise_signal(signal.SIGINT)  # to the handler it was meant for: KeyboardInterrupt, outside the widget


class _JobUpdate(Protocol):
    progress: float
    stage: str


J = TypeVar("J", bound=_JobUpdate)


def follow(updates: Iterable[J], label: str) -> J | None:
    """Draws a bar over a job's updates (``progress`` 0..1 and ``stage``); returns the last one."""
    from rich.progress import BarColumn, TaskProgressColumn, TimeElapsedColumn

    last = None
    columns = ("[progress.description]{task.description}", BarColumn(), TaskProgressColumn())
    with ProgressBar(label, 1.0, *columns, TimeElapsedColumn()) as bar:
        for last in updates:
            bar.update(completed=last.progress, description=f"{label}: {last.stage}")
    return last
