"""A file rewritten now and then from a thread of its own, so that writing never holds up the
thread that has the packets.

The dataplane publishes its flow table and counters four times a second (``natsim status``
reads the file). The file is replaced atomically, and on ext4 (``auto_da_alloc``, the
default) a rename over an existing file starts the new file's writeback: on this machine's
disk that took 0.7 ms at the median, 69 ms at p99 and up to 0.9 s (400 replacements of a
20 KB file). Done in the packet loop, such a pause delays every packet behind it, and the
engine judges a packet at the model time it handles it, not the time it arrived: at speed
35 a 0.9-second pause has a keepalive probe that arrived 10 model seconds before the idle
deadline handled 21 seconds after it, and the verdict changes. ``make bench`` saw the pauses
as RSTs sent up to 250 ms after their deadline.

The thread spends its time in system calls, which release the GIL; only the newest text is
kept (a slow disk skips versions rather than queueing them).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from simulator.support.results import replace_private

JOIN_TIMEOUT = 5.0
"""Wall seconds :meth:`BackgroundFile.close` waits for the last write."""


class BackgroundFile:
    """``path``, replaced atomically with the newest text given to :meth:`write`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: str | None = None
        self._closed = False
        self._failed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"write {path.name}",
                                        daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        """Hand ``text`` over; returns at once (what was pending and not yet written is
        dropped for it)."""
        with self._changed:
            self._pending = text
            self._changed.notify()

    def close(self) -> None:
        """Write what is pending, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(JOIN_TIMEOUT)

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closed:
                    self._changed.wait()
                text, self._pending = self._pending, None
            if text is None:
                return  # closed, nothing left
            try:
                replace_private(self.path, text)
            except OSError as exc:  # the folder removed under a run, a full disk: say it once
                if not self._failed:
                    self._failed = True
                    print(f"natsim: cannot write {self.path}: {exc}", file=sys.stderr)
