"""natsim without root: a user namespace mapped to root, with its own network and mount
namespaces, entered by the ``natsim`` process itself before it builds anything.

Why this works: inside a user namespace the user is root *of that namespace*, and a network
namespace created there belongs to it, so creating namespaces and veths, writing their
``net.*`` sysctls and opening AF_PACKET sockets are all allowed (CAP_NET_ADMIN and
CAP_NET_RAW over namespaces we own). What is not ours stays read-only: ``/run`` and
``/etc`` belong to the host. So the mount namespace gets

* a private ``tmpfs`` on ``/run``: ``/run/netns`` (where pyroute2 and ``ip netns`` pin the
  namespaces) and ``/run/natsim`` (the run registry) live there;
* a private ``/etc/netns`` (:func:`_private_etc_netns`): ``ip netns exec`` shows
  ``/etc/netns/<ns>/hosts`` as each host's ``/etc/hosts``, and the name ``server`` resolves.

Nothing of the host is written. When the last process of the run exits, the kernel frees
the user namespace and with it every mount and network namespace the run made: a crash, a
SIGKILL or a power-cut shell leaves nothing behind, which root mode needs a registry and
``natsim cleanup`` for.

The user's own files keep their owner: the namespace maps root to the invoking user only,
so results written here are the user's on the outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import signal
from pathlib import Path

from simulator.world.topology import start_ticks

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

ENV_FLAG = "NATSIM_ROOTLESS"
"""Set in the environment once inside, so that a child ``natsim`` does not enter again."""

_PROC_SYS = Path("/proc/sys")


class RootlessError(RuntimeError):
    """The user namespace cannot be made here; the message says why and how to enable it."""


def active() -> bool:
    """Whether this process runs inside natsim's user namespace."""
    return os.environ.get(ENV_FLAG) == "1"


def needed() -> bool:
    return os.geteuid() != 0 and not active()


def why_unavailable(proc_sys: Path = _PROC_SYS) -> str | None:
    """The host setting that forbids unprivileged user namespaces, with the fix, or None."""
    debian = proc_sys / "kernel" / "unprivileged_userns_clone"
    if debian.exists() and debian.read_text().strip() == "0":
        return ("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone"
                " = 0); enable them as root with: sysctl -w kernel.unprivileged_userns_clone=1")
    limit = proc_sys / "user" / "max_user_namespaces"
    if limit.exists() and limit.read_text().strip() == "0":
        return ("user namespaces are disabled (user.max_user_namespaces = 0); enable them as "
                "root with: sysctl -w user.max_user_namespaces=15000")
    apparmor = proc_sys / "kernel" / "apparmor_restrict_unprivileged_userns"
    if apparmor.exists() and apparmor.read_text().strip() == "1":
        return ("AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and later); "
                "allow them as root with: sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0, or run natsim with sudo")
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        name = errno.errorcode.get(err, str(err))
        raise RootlessError(f"{what} failed: {os.strerror(err)} ({name})")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None,
           flags: int, data: str | None = None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(),
                      fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                      data.encode() if data else None), f"mount {target}")


def _private_etc_netns(libc: ctypes.CDLL, etc: Path = Path("/etc")) -> None:
    """A writable ``/etc/netns`` of our own (``ip netns exec`` reads each host's files there).

    ``/etc`` belongs to the host's root, which is not mapped into our namespace, so nothing
    can be created in it, not even through an overlay. If ``/etc/netns`` exists, a tmpfs on
    it is enough. If not, ``/etc`` itself becomes a tmpfs in which every original entry is
    bind-mounted back (symlinks recreated), plus an empty ``netns``.
    """
    netns = etc / "netns"
    if netns.is_dir():
        _mount(libc, "tmpfs", str(netns), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        return
    original = Path("/run/natsim-etc")
    original.mkdir()
    _mount(libc, str(etc), str(original), None, MS_BIND | MS_REC)
    _mount(libc, "tmpfs", str(etc), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for entry in original.iterdir():
        target = etc / entry.name
        if entry.is_symlink():
            target.symlink_to(os.readlink(entry))
            continue
        if entry.is_dir():
            target.mkdir()
        else:
            target.touch()
        _mount(libc, str(entry), str(target), None, MS_BIND | MS_REC)
    netns.mkdir()


def enter() -> None:
    """Become root of a new user namespace with private network and mount namespaces.

    Must run before any thread is started (``unshare(CLONE_NEWUSER)`` refuses a threaded
    process): the CLI calls it first thing.
    """
    uid, gid = os.getuid(), os.getgid()
    libc = _libc()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        reason = why_unavailable() or f"unshare: {os.strerror(err)}"
        raise RootlessError(f"natsim needs root or a user namespace, and cannot make one: "
                            f"{reason}")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
    Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    Path("/run/netns").mkdir()
    _private_etc_netns(libc)
    os.environ[ENV_FLAG] = "1"


# -- sessions: worlds that outlive the command (natsim up / exec / status / down) ----------


def session_file() -> Path:
    """Where the user's session is recorded: in their cache folder, not under ``/run``
    (``$XDG_RUNTIME_DIR`` is usually there, and inside the session ``/run`` is private)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "natsim" / "rootless-session.json"


def _live_keeper() -> int | None:
    """The pid of the process that holds the user's namespaces, if it still lives."""
    try:
        info = json.loads(session_file().read_text())
    except (OSError, ValueError):
        return None
    pid = int(info.get("pid", 0))
    if pid and start_ticks(pid) == info.get("start"):
        return pid
    return None


def _join(pid: int) -> None:
    """Enter the user, mount and network namespaces of ``pid`` (the keeper)."""
    libc = _libc()
    cwd = os.getcwd()  # joining a mount namespace moves us to its root
    for kind in ("user", "mnt", "net"):
        fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        try:
            _check(libc.setns(fd, 0), f"joining the natsim session's {kind} namespace")
        finally:
            os.close(fd)
    os.chdir(cwd)
    os.environ[ENV_FLAG] = "1"


def _keeper() -> None:
    """Hold the namespaces while worlds are up: a child that only waits for SIGTERM."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        signal.pause()


def enter_session(create: bool) -> None:
    """For ``up``, ``exec``, ``status``, ``down`` and ``cleanup`` run as an ordinary user.

    Worlds left up must be found by the next command, so they live in one long-lived set of
    namespaces per user, held by a small keeper process recorded in :func:`session_file`.
    A command joins it when it lives; ``up`` (``create``) otherwise makes it; the others
    otherwise enter a fresh, empty namespace (where no world is up, as is the truth).
    """
    pid = _live_keeper()
    if pid is not None:
        _join(pid)
        return
    enter()
    if not create:
        return
    child = os.fork()
    if child == 0:  # pragma: no cover (the keeper never returns)
        try:
            _keeper()
        finally:
            os._exit(0)
    path = session_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps({"pid": child, "start": start_ticks(child)}))


def end_session() -> None:
    """No world is up any more: let the keeper go, and the kernel frees the namespaces."""
    pid = _live_keeper()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    session_file().unlink(missing_ok=True)
