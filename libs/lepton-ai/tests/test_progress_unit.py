"""The progress bar's Ctrl-C handling, without a kernel."""

from __future__ import annotations

import os
import signal
import threading
from types import TracebackType

import pytest

from lepton_ai import _progress


class Swallowing:
    """Behaves like ipywidgets' Output inside IPython: shows and suppresses what is raised in it."""

    def __init__(self) -> None:
        self.swallowed: list[BaseException] = []

    def __enter__(self) -> Swallowing:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> bool:
        if ev is not None:
            self.swallowed.append(ev)
        return True


def test_a_ctrl_c_during_a_redraw_is_raised_after_it_not_swallowed_by_the_widget() -> None:
    widget = Swallowing()
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt), _progress.held_interrupt(), widget:
        os.kill(os.getpid(), signal.SIGINT)
        reached_the_end = True
    assert reached_the_end and widget.swallowed == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_ctrl_c_nothing_is_raised_and_the_handler_is_restored() -> None:
    with _progress.held_interrupt():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _progress.held_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_outside_the_main_thread_the_block_just_runs() -> None:
    ran: list[bool] = []

    def draw() -> None:
        with _progress.held_interrupt():
            ran.append(True)

    thread = threading.Thread(target=draw)
    thread.start()
    thread.join()
    assert ran == [True]
