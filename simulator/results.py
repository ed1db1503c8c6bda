"""Results folders: where a run writes, made so that nobody else can redirect the writing.

natsim usually runs as root. A results folder under a directory that an ordinary user can
write (the repository's ``results/``, say) must not let that user plant a symlink named
``result.json`` and have root write through it. The rule is simple: a run writes only into a
folder it created itself, or into an empty folder owned by the caller that nobody else can
write; any other folder is refused with its name and the reason. Single files are written
with ``O_NOFOLLOW`` as well, and state files get explicit modes whatever the umask.

``$NATSIM_RESULTS`` moves the default parent folder (``results/`` in the current directory):
the test suite points it at a temporary folder so that ``make test`` leaves nothing in the
repository.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

RESULTS_VAR = "NATSIM_RESULTS"


class ResultsError(RuntimeError):
    """A results folder that natsim will not write into; the message says why."""


def base() -> Path:
    return Path(os.environ.get(RESULTS_VAR) or "results")


def default_dir(label: str, run_id: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return base() / f"{label}-{stamp}-{run_id}"


def prepare(path: Path) -> Path:
    """Make ``path`` a folder this run may write into, or refuse it; returns it resolved.

    A missing folder is created (its parents as needed) with mode 0755. An existing one must
    be a real directory (not a symlink), owned by the caller, writable by nobody else, and
    empty: then everything in it is what this run creates.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            raise ResultsError(f"results folder {path}: appeared while natsim created it; "
                               "choose another --results") from None
        return path.resolve()
    why = None
    if stat.S_ISLNK(info.st_mode):
        why = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        why = "is not a directory"
    elif info.st_uid != os.geteuid():
        why = f"belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        why = "can be written by other users"
    elif any(path.iterdir()):
        why = "is not empty"
    if why is not None:
        raise ResultsError(f"results folder {path} {why}: give --results a new folder (natsim "
                           "creates it) or an empty one of yours")
    return path.resolve()


def write_private(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write a whole file without following a symlink at ``path``, with exactly ``mode``."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def replace_private(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` atomically (a reader never sees half a file), symlink-safe."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private(tmp, data, mode)
    os.replace(tmp, path)
