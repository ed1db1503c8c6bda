"""Ctrl-C and SIGTERM that a run cannot lose.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be.
If that is a ``__del__`` method, a weakref callback or a library's bare ``except:``, the
exception is printed or swallowed and the run goes on as if nothing had been asked (seen
once in a Ctrl-C-at-start-up test: the run went on to PASS). So the signal is also written
down, and the runner calls :func:`check` between its steps and while it waits: a swallowed
interrupt is raised again there, and the ``finally`` clauses remove what was built.

SIGTERM gets the same treatment, so that ``kill`` unwinds like Ctrl-C. Only in the process
that installed the handler: pyroute2 forks helpers (``os.fork``) that inherit it and are
stopped with SIGTERM; were they to raise, they would unwind *our* stack in the child and run
our cleanup, removing the namespaces from under the parent. They exit instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

_received: list[int] = []
"""Signals received by this process since :func:`install` and not yet consumed."""

_Handler = Callable[[int, FrameType | None], object] | int | None


_deferring = [0]
"""How many :func:`deferred` blocks are open: the handler then records and returns."""


def _make_handler(owner: int) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        _received.append(signum)
        if _deferring[0]:  # taken by another thread despite the mask: it lands after the block
            return
        raise KeyboardInterrupt(f"signal {signum}")
    return handler


def install() -> dict[int, _Handler]:
    """Route SIGINT and SIGTERM through the recording handler; return what was there.

    An ignored SIGINT stays ignored (a run started with ``&`` from a script, as a shell
    would leave it). Outside the main thread signals cannot be set: nothing changes.
    """
    handler = _make_handler(os.getpid())
    previous: dict[int, _Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) == signal.SIG_IGN and sig == signal.SIGINT:
                continue
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    return previous


def check() -> None:
    """Raise the KeyboardInterrupt of a signal whose first one was swallowed."""
    if _received:
        signum = _received[0]
        _received.clear()
        raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """:func:`install` for the duration of a block, then put the old handlers back.

    What was recorded belongs to the block and is forgotten with it: a runner used twice in
    one process (the pytest plugin) must not see the first run's interrupt in the second.
    """
    previous = install()
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a block; a signal that came meanwhile lands after it.

    For steps that make lasting state in a forked helper: pyroute2's ``netns.create`` forks
    a child that binds the namespace file while the parent waits. Interrupted in that wait,
    the parent's cleanup ran while the child went on and bound a namespace nobody removed.
    The helper inherits the blocked mask, so a Ctrl-C sent to the whole process group does
    not stop it half-way either. In a process with other threads the mask alone does not
    hold a signal back (another thread takes it): the recording handler then keeps it for
    the end of the block.
    """
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    _deferring[0] += 1
    try:
        yield
    finally:
        _deferring[0] -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, before)  # one held here lands now
    # The mask is this thread's: a process-directed signal goes to another thread that does
    # not block it (pytest-xdist's, a library's), and Python runs the handler here anyway,
    # which then only recorded it. It lands now.
    if not _deferring[0]:
        check()


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies.

    For a process started (or forked) by another that may be killed without a chance to
    stop its children: a child left behind keeps its sockets, in a world that may still be
    in use (``make bench`` builds its worlds once and runs the load generator in them again
    and again: an orphaned server worker kept listening on the port the next run used,
    accepted a share of its connections, and closed them at its own end time).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
