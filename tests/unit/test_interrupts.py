"""Ctrl-C cannot be lost: a KeyboardInterrupt swallowed on the way is raised again."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from simulator.support import interrupts


@pytest.fixture(autouse=True)
def _ctrl_c_as_at_a_terminal() -> Iterator[None]:
    """Python's own SIGINT handler for each test: a suite started in the background (as CI
    may start it) inherits SIGINT ignored, which :func:`interrupts.install` rightly keeps."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs in this thread between two bytecodes


def test_a_swallowed_ctrl_c_is_raised_again_once() -> None:
    with interrupts.handled():
        # what a destructor, a weakref callback or a bare ``except:`` does
        with contextlib.suppress(KeyboardInterrupt):
            _deliver(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt, match="signal 2"):
            interrupts.check()
        interrupts.check()  # raised once: nothing pending any more


def test_sigterm_unwinds_like_ctrl_c_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with interrupts.handled(), pytest.raises(KeyboardInterrupt, match="signal 15"):
        _deliver(signal.SIGTERM)
    interrupts.check()  # acted on, and forgotten with the block
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_forked_helper_exits_instead_of_unwinding_our_stack() -> None:
    with interrupts.handled():
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                _deliver(signal.SIGTERM)
                time.sleep(5)
            finally:
                os._exit(0)  # reached only if the handler raised instead of exiting
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
    interrupts.check()  # the child's signal is not ours


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.handled():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            _deliver(signal.SIGINT)
        interrupts.check()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_during_a_deferred_step_lands_after_it() -> None:
    finished = []
    with interrupts.handled(), pytest.raises(KeyboardInterrupt, match="signal 2"):
        with interrupts.deferred():
            _deliver(signal.SIGINT)
            finished.append("the step")  # not cut short
        finished.append("after")  # the interrupt lands before this
    assert finished == ["the step"]
