"""Results folders: where natsim writes, made so that nobody else can redirect the writing.

natsim usually runs as root, often on a machine it shares. Whatever a command writes (a
run's results, a live world's events, a matrix's cells and reports, replay's pictures,
the bench's rows) goes through one of two doors:

* :class:`Folder`: a folder held open by descriptor. Its path is walked once, component by
  component from ``/``, each one opened with ``O_NOFOLLOW`` relative to the one before
  and checked: owned by root or by you, and writable by nobody else unless it has the
  sticky bit (``/tmp``), where others cannot rename or remove what is yours. A folder whose
  parent another user could write is refused with a message that says so: that user could
  swap the folder for one full of links while the run goes. Files and subfolders are then
  created relative to the descriptor (``O_CREAT|O_EXCL|O_NOFOLLOW``), read and removed the
  same way; no path is resolved again later. Programs the run starts (the middlebox writes
  its capture) get paths inside a folder checked this way, which nobody but its owner can
  change.
* :func:`write_private` / :func:`replace_private`: one file by path, never through a
  symlink, with an explicit mode.

Within a user namespace (rootless mode) the host's own folders show as owned by the
overflow uid; natsim there has only the user's rights on files, so that uid is trusted too.
Under ``sudo``, folders of the user who ran it (``$SUDO_UID``) are trusted as well: that
user could run anything as root already, and ``sudo make scenario`` in one's own checkout
must work.

``$NATSIM_RESULTS`` moves the default parent folder (``results/`` in the current directory):
the test suite points it at a temporary folder so that ``make test`` leaves nothing in the
repository.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, overload

RESULTS_VAR = "NATSIM_RESULTS"
_WALK_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_READ = 64 << 20
"""What :meth:`Folder.read_text` reads at most (natsim's own files are far smaller)."""


class ResultsError(RuntimeError):
    """A results folder that natsim will not write into; the message says why."""


def base() -> Path:
    return Path(os.environ.get(RESULTS_VAR) or "results")


def default_dir(label: str, run_id: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return base() / f"{label}-{stamp}-{run_id}"


def _trusted_uids() -> set[int]:
    uids = {0, os.geteuid()}
    sudo = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo.isdigit():
        uids.add(int(sudo))
    with contextlib.suppress(OSError, ValueError):
        if Path("/proc/self/uid_map").read_text().split()[:3] != ["0", "0", "4294967295"]:
            uids.add(int(Path("/proc/sys/kernel/overflowuid").read_text()))
    return uids


def _unsafe(info: os.stat_result, trusted: set[int]) -> str | None:
    """Why a folder in the chain could be changed by another user, or None."""
    if info.st_uid not in trusted:
        return f"belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}) or root"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
        return "can be written by other users (and has no sticky bit)"
    return None


def _walk(path: Path) -> int:
    """A descriptor of the existing folder ``path``, every folder from ``/`` to it checked."""
    real = Path(os.path.realpath(path))  # the links on the way, once: then no link at all
    trusted = _trusted_uids()
    fd = os.open("/", _WALK_FLAGS)
    here = Path("/")
    try:
        for part in (*real.parts[1:], None):
            why = _unsafe(os.fstat(fd), trusted)
            if why is not None:
                raise ResultsError(f"{here} {why}: another user could replace what natsim "
                                   f"writes below it; choose a folder under one of yours")
            if part is None:
                return fd
            try:
                nxt = os.open(part, _WALK_FLAGS, dir_fd=fd)
            except OSError as exc:
                what = "changed while natsim checked it" if exc.errno == errno.ELOOP \
                    else exc.strerror
                raise ResultsError(f"{here / part}: {what}") from None
            os.close(fd)
            fd, here = nxt, here / part
        raise AssertionError("unreachable")
    except BaseException:
        os.close(fd)
        raise


class Folder:
    """A folder held open: everything below it is created, read and removed through its
    descriptor. ``path`` is for messages and for the programs a run starts."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, reuse: bool = False) -> Folder:
        """Open ``path`` to write into, creating it (and missing parents, 0755) if need be.

        An existing folder must be a real directory of yours that nobody else can write;
        unless ``reuse`` (a matrix resumes in its folder), it must also be empty, so that
        everything in it is what this command creates.
        """
        path = Path(path)
        if path.name in ("", ".", ".."):
            path = Path(os.path.abspath(path))
        missing: list[str] = []
        parent = path.parent
        while not parent.exists() and not parent.is_symlink():
            missing.insert(0, parent.name)
            parent = parent.parent
        fd = _walk(parent)
        try:
            for name in missing:
                fd = _step(fd, name, create=True)
            created = _mkdir(fd, path.name)
            sub = _open_dir(fd, path.name, path)
        finally:
            os.close(fd)
        folder = cls(sub, Path(os.path.abspath(path)))
        why = None if created else folder._not_ours(reuse)
        if why is not None:
            folder.close()
            raise ResultsError(f"results folder {path} {why}: give a new folder (natsim "
                               "creates it) or an empty one of yours")
        return folder

    def sub(self, name: str, *, reuse: bool = True) -> Folder:
        """A subfolder, created if missing; an existing one must be a real folder of yours
        (not a link), and empty unless ``reuse``."""
        _name(name)
        created = _mkdir(self.fd, name)
        fd = _open_dir(self.fd, name, self.path / name)
        folder = Folder(fd, self.path / name)
        why = None if created else folder._not_ours(reuse)
        if why is not None:
            folder.close()
            raise ResultsError(f"{self.path / name} {why}")
        return folder

    def _not_ours(self, reuse: bool) -> str | None:
        """Why an existing folder is not one to write into (None: it is): owned by someone
        else, writable by others, or (unless ``reuse``) not empty."""
        why = _unsafe(os.fstat(self.fd), {os.geteuid()})
        if why is None and not reuse and os.listdir(self.fd):
            why = "is not empty"
        return why

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- files --------------------------------------------------------------------------------

    @overload
    def open(self, name: str, mode: Literal["w"] = "w", *, replace: bool = True
             ) -> IO[str]: ...
    @overload
    def open(self, name: str, mode: Literal["wb"], *, replace: bool = True) -> IO[bytes]: ...
    def open(self, name: str, mode: Literal["w", "wb"] = "w", *, replace: bool = True
             ) -> IO[str] | IO[bytes]:
        """A new file ``name`` to write (``mode`` "w" or "wb"). With ``replace``, an
        earlier regular file of that name is removed first; a link or anything else there
        is refused."""
        _name(name)
        if replace:
            self._unlink_file(name)
        try:
            fd = os.open(name, _NEW_FILE, 0o644, dir_fd=self.fd)
        except FileExistsError:
            raise ResultsError(f"{self.path / name} exists already") from None
        except OSError as exc:
            raise ResultsError(f"{self.path / name}: {exc.strerror}") from None
        os.fchmod(fd, 0o644)
        return os.fdopen(fd, mode)

    def reader(self, name: str) -> IO[bytes]:
        """``name`` (a regular file here, never a link) opened to read."""
        _name(name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            raise ResultsError(f"{self.path / name}: {exc.strerror}") from None
        return os.fdopen(fd, "rb")

    def write(self, name: str, data: str | bytes) -> Path:
        with self.open(name, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return self.path / name

    def replace(self, name: str, data: str | bytes) -> None:
        """Write ``name`` atomically: a reader sees the old file or the new, never half."""
        tmp = f".{name}.{os.getpid()}.tmp"
        self.write(tmp, data)
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        """``src`` becomes ``dst`` (both in this folder; ``dst`` replaced atomically)."""
        _name(src)
        _name(dst)
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def read_text(self, name: str, limit: int = MAX_READ) -> str | None:
        """A regular file's text (None when there is none by that name)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return f.read(limit).decode(errors="replace")

    def exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def is_file(self, name: str) -> bool:
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode)

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def remove(self, name: str) -> None:
        """Remove ``name``: a file, a link (never what it points to) or a folder tree, each
        by descriptor."""
        _name(name)
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            os.unlink(name, dir_fd=self.fd)

    def _unlink_file(self, name: str) -> None:
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a file"
            raise ResultsError(f"{self.path / name} is {what}; natsim writes only files it "
                               "creates")
        os.unlink(name, dir_fd=self.fd)


def _name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ResultsError(f"{name!r} is not a plain file name")


def _mkdir(fd: int, name: str) -> bool:
    try:
        os.mkdir(name, 0o755, dir_fd=fd)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ResultsError(f"cannot create {name}: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # whatever the umask: 0755
        new = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            os.fchmod(new, 0o755)
        finally:
            os.close(new)
    return True


def _open_dir(fd: int, name: str, shown: Path) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError as exc:
        link = exc.errno == errno.ELOOP
        if exc.errno == errno.ENOTDIR:  # O_DIRECTORY|O_NOFOLLOW on a link says ENOTDIR
            with contextlib.suppress(OSError):
                link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
        if link:
            raise ResultsError(f"{shown} is a symbolic link: natsim writes only into real "
                               "folders") from None
        if exc.errno == errno.ENOTDIR:
            raise ResultsError(f"{shown} exists and is not a directory") from None
        raise ResultsError(f"{shown}: {exc.strerror}") from None


def _step(fd: int, name: str, *, create: bool) -> int:
    """From folder ``fd`` into its subfolder ``name`` (created 0755 if missing); closes
    ``fd``."""
    try:
        if create:
            _mkdir(fd, name)
        nxt = _open_dir(fd, name, Path(name))
    finally:
        os.close(fd)
    return nxt


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[IO[str]]:
    """One file a command was told to write (``--json FILE``): every folder up to it checked
    as for a results folder (a shared, sticky folder such as ``/tmp`` is fine), the file
    written through the folder's descriptor, never through a link."""
    path = Path(os.path.abspath(path))
    with Folder(_walk(path.parent), path.parent) as folder, folder.open(path.name) as f:
        yield f


@overload
def create_new(path: Path, mode: Literal["w"] = "w") -> IO[str]: ...
@overload
def create_new(path: Path, mode: Literal["wb"]) -> IO[bytes]: ...
def create_new(path: Path, mode: Literal["w", "wb"] = "w") -> IO[str] | IO[bytes]:
    """A new file at ``path`` (in a results folder already checked), never through a link
    and never over an existing file: what the middlebox's process writes (capture,
    metrics)."""
    try:
        fd = os.open(path, _NEW_FILE, 0o644)
    except OSError as exc:
        raise ResultsError(f"{path}: {exc.strerror} (natsim writes only files it "
                           "creates)") from None
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, mode)


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
