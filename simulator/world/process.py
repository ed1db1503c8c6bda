"""A program the driver started, and the contract every backend's programs keep.

Whatever runs it -- a process in a namespace, ``docker exec`` in a container, a model in the
fake network's virtual time -- a program is seen the same way: the typed messages it said
since last time, whether it is still running, and how to ask it to stop or to make it stop.
The driver (:mod:`simulator.world.driver`) knows nothing else of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

from simulator.core.messages import Message
from simulator.support import interrupts

REPO_ROOT = Path(__file__).resolve().parents[2]


class Program(Protocol):
    role: str
    """Who it is in the story: ``client``, ``server``, ``server1``, ``middlebox``, ``dns``."""

    def read(self) -> list[Message]:
        """What it said since the last call, as messages (never blocks)."""
        ...

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        ...

    def stop(self) -> None:
        """Ask it to stop (SIGTERM, or its backend's equivalent); it may take a moment."""
        ...

    def kill(self) -> None:
        """Make it stop now, and wait for it."""
        ...

    def fileno(self) -> int | None:
        """What to wait on for its next words (None: it has no descriptor, or said all)."""
        ...

    def close(self) -> None:
        """Let go of what it is read through (once it has ended, or been left running)."""
        ...


def ended(code: int | None) -> str:
    """How a program ended, from its exit status."""
    return f"was killed by signal {-code}" if code is not None and code < 0 else \
        f"exited with status {code}"


class Process:
    """A real process whose JSON lines come through a pipe, or through a file it writes
    (a middlebox left running by ``natsim up`` outlives the command that started it)."""

    def __init__(self, role: str, popen: subprocess.Popen[bytes], source: IO[bytes],
                 stop: Callable[[], None] | None = None) -> None:
        self.role = role
        self.popen = popen
        self.pid = popen.pid
        self._source = source
        self._stop = stop
        self._buffer = b""
        self.eof = False
        self._pipe = source is popen.stdout

    def read(self) -> list[Message]:
        if self._source.closed:
            return []
        fd = self._source.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                # a file has no end while its writer lives: only a pipe's end is final
                self.eof = self._pipe or self.popen.poll() is not None
                break
            self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        return [Message.from_line(raw, self.role) for raw in complete if raw.strip()]

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        if self._stop is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to stop
                self._stop()
        else:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def fileno(self) -> int | None:
        return None if self.eof or self._source.closed or not self._pipe \
            else self._source.fileno()

    def close(self) -> None:
        self._source.close()


def spawn(role: str, argv: Sequence[str], stderr: IO[bytes], *,
          stop: Callable[[], None] | None = None,
          detached: tuple[IO[bytes], IO[bytes]] | None = None) -> Process:
    """Start ``argv``; its stdout is read as messages. ``detached``: a file to write them
    to and the same file opened for reading (both opened safely by the caller); the
    process then has its own session and no parent-death signal, so that it outlives this
    one (``natsim up``)."""
    if detached is not None:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=detached[0],
                                 stderr=stderr, start_new_session=True, cwd=REPO_ROOT)
        source = detached[1]
    else:
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            # the driver is single-threaded, so preexec_fn is safe here; it is the only way
            # to set PR_SET_PDEATHSIG in the child before it execs
            preexec_fn=interrupts.die_with_parent,  # noqa: PLW1509
            cwd=REPO_ROOT)
        assert popen.stdout is not None
        source = popen.stdout
    os.set_blocking(source.fileno(), False)
    return Process(role, popen, source, stop)
