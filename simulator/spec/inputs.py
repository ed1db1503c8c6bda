"""Reading the files people hand natsim (scenarios, matrices, captures): regular files only,
and never more than a bound.

A FIFO given as a scenario blocks for ever; a link to ``/dev/zero`` reports a size of 0 and
then never ends (a size check on ``st_size`` alone reads until memory runs out); a folder is
no file. Each is refused at once, with what it is, before a byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO


class UnreadableError(ValueError):
    """A file natsim will not read; ``why`` says what it is instead."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"{path}: {why}")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened to read if it is a regular file; otherwise :class:`UnreadableError`."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise block right here
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableError(path, f"cannot be read ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else
                "a directory" if stat.S_ISDIR(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise UnreadableError(path, f"is {kind}; natsim reads regular files only")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes; :class:`UnreadableError` when it holds more than ``limit``."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnreadableError(path, f"more than {limit:,} bytes; natsim files are at most "
                               f"{limit // 1024} KB")
    return data
