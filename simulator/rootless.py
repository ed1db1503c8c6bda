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

import ctypes
import errno
import os
from pathlib import Path

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
