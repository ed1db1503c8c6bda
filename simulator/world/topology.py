"""The simulated world: network namespaces, veths, addresses, routes and sysctls, via pyroute2.

::

  natsim-<run>-client        natsim-<run>-mbox               natsim-<run>-server
  eth0 198.18.1.10/24 ---- inside | outside (no addresses) ---- eth0 198.19.1.10/24
  gw 198.18.1.1 (static neigh)    userspace dataplane            gw 198.19.1.1 (static neigh)

Every veth is created from inside a namespace with its peer placed straight into another, so
the host's own network namespace is never touched. The middlebox's interfaces carry no
address and its kernel does not forward (``ip_forward=0``): its kernel must never answer for
an address the userspace dataplane owns (DESIGN.md, pitfalls), so client and server reach it
through static neighbour entries for its MAC addresses instead of ARP.

An appliance with several backends (an NLB target group) gets one server namespace per
backend, ``natsim-<run>-server``, ``-server1``, ..., each on its own middlebox interface
(``outside``, ``outside1``, ...) with address 198.19.N.10, and ``server`` names the virtual
address the clients connect to.

Offloads stay on (veth's defaults: checksum offload, TSO, GSO), as on a real host: the
dataplane reads GSO frames of up to 64 KB with their virtio-net headers and forwards them
whole (see ``dataplane.py`` and DESIGN.md section 1).

Every run registers itself in ``/run/natsim/<run>.json`` with its process id; ``natsim
cleanup`` removes namespaces whose run is no longer alive, and only names with our prefix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool

from simulator.core.configs import Port
from simulator.core.plan import CLIENT_IP, PREFIXLEN, PREFIXLEN6, SERVER_IP, HostPlan, WorldPlan
from simulator.core.retransmission import (
    REQUIRED_SYSCTLS,
    WORLD_RTT,
    Retransmission,
    at_speed,
    world_sysctls,
)
from simulator.support import interrupts
from simulator.support.results import replace_private

PREFIX = "natsim-"
REGISTRY = Path("/run/natsim")
NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")




class TopologyError(RuntimeError):
    """Building the world failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class Backend:
    """One server namespace and the middlebox interface it hangs off."""

    ns: str
    ip: str
    mac: str
    mbox_if: str
    mbox_mac: str


@dataclass(frozen=True)
class World:
    run_id: str
    client_ns: str
    mbox_ns: str
    server_ns: str
    client_mac: str
    server_mac: str
    mbox_inside_mac: str
    mbox_outside_mac: str
    mbox_inside_if: str = "inside"
    mbox_outside_if: str = "outside"
    client_ip: str = CLIENT_IP
    server_ip: str = SERVER_IP
    backends: tuple[Backend, ...] = ()

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.client_ns, self.mbox_ns, self.server_ns,
                *(b.ns for b in self.backends[1:]))

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def ports(self) -> tuple[Port, tuple[Port, ...]]:
        """The middlebox's interfaces: the client's side, and one per backend."""
        return (Port(self.mbox_inside_if, self.mbox_inside_mac, self.client_mac),
                tuple(Port(b.mbox_if, b.mbox_mac, b.mac) for b in self.backends))


RUN_ID_RE = re.compile(r"[a-z0-9]{6,14}")
RUN_PREFIX_VAR = "NATSIM_RUN_PREFIX"
RUN_PREFIX_RE = re.compile(r"[a-z0-9]{0,8}")


def new_run_id() -> str:
    """A fresh run id; ``$NATSIM_RUN_PREFIX`` (a-z, 0-9, at most 8) goes first, so that a
    test session or a CI job can find its own runs among other natsim runs on the host."""
    prefix = os.environ.get(RUN_PREFIX_VAR, "")
    if not RUN_PREFIX_RE.fullmatch(prefix):
        raise TopologyError(f"{RUN_PREFIX_VAR}={prefix!r}: use at most 8 characters a-z, 0-9")
    return prefix + secrets.token_hex(3)


def ns_names(run_id: str) -> tuple[str, str, str]:
    return f"{PREFIX}{run_id}-client", f"{PREFIX}{run_id}-mbox", f"{PREFIX}{run_id}-server"


def check_privileges() -> None:
    if os.geteuid() != 0:
        raise TopologyError(
            "natsim needs root to create network namespaces (CAP_SYS_ADMIN and CAP_NET_ADMIN): "
            "run it as root, e.g. `sudo make scenario NAME=nat-gw`")


# -- sysctls and offloads: pyroute2 moves us into the namespace, /proc/sys does the rest --


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this process in namespace ``ns`` (for /proc/sys and ethtool).

    Entering and leaving are each done whole: a Ctrl-C between ``setns`` and the
    bookkeeping would leave the process in the run's namespace while it cleans up.
    """
    with interrupts.deferred():
        netns.pushns(ns)
    try:
        yield
    finally:
        with interrupts.deferred():
            netns.popns()


def write_sysctls(ns: str, values: Mapping[str, int | str]) -> None:
    """Set ``net.*`` sysctls of namespace ``ns``; keys are dotted names."""
    try:
        with inside(ns):
            for key, value in values.items():
                Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        _write_sysctls_on_a_fresh_proc(ns, values)


_CLONE_NEWNS, _MS_REC, _MS_PRIVATE = 0x00020000, 0x4000, 0x40000


def _write_sysctls_on_a_fresh_proc(ns: str, values: Mapping[str, int | str]) -> None:
    """In a container, /proc/sys is mounted read-only (a pod, ``docker run`` with only the
    capabilities a run needs). A forked child joins the namespace, takes a mount namespace of
    its own and mounts a fresh procfs there, whose net.* entries are the namespace's own and
    writable (CAP_SYS_ADMIN): nothing outside the child sees the mount."""
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack
        code = 1
        try:
            netns.setns(ns, flags=0)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(_CLONE_NEWNS) != 0 or libc.mount(
                    None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0 or libc.mount(
                    b"proc", b"/proc", b"proc", 0, None) != 0:
                raise OSError(ctypes.get_errno(), "a fresh /proc for the sysctls")
            for key, value in values.items():
                Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")
            code = 0
        except BaseException as exc:  # reported by the exit status
            print(f"natsim: sysctls of {ns}: {exc}", file=sys.stderr)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise TopologyError(f"could not set sysctls in {ns}: /proc/sys is read-only here and "
                            "a fresh procfs could not be mounted (CAP_SYS_ADMIN, and an "
                            "AppArmor profile that allows mount, are needed)")


def read_sysctl(ns: str, key: str) -> str:
    with inside(ns):
        return Path("/proc/sys", *key.split(".")).read_text().strip()


def missing_retransmission_sysctls() -> list[str]:
    """The per-namespace sysctls this kernel lacks to compress the retransmission timer
    (``tcp_rto_min_us``, Linux 6.11; ``tcp_rto_max_ms``, 6.15): every namespace has the
    same kernel, so the host's ``/proc/sys`` tells."""
    return [f"net.ipv4.{key}" for key in REQUIRED_SYSCTLS
            if not Path("/proc/sys/net/ipv4", key).exists()]


def retransmission_sysctls(backend: str, speed: float) -> tuple[dict[str, int], str]:
    """The hosts' retransmission sysctls at ``speed`` (``tcp_rto_min_us``,
    ``tcp_rto_max_ms`` and the ``tcp_retries2`` that lands Linux's 924 s give-up near 924
    model s: :func:`simulator.core.retransmission.at_speed`), or why they stay the wall
    clock's. The SYN's initial timeout and delayed ACKs are not compressed either way."""
    if speed == 1:
        return {}, ""
    if backend != "namespaces":
        return {}, f"the {backend} backend sets no retransmission sysctls"
    missing = missing_retransmission_sysctls()
    if missing:
        return {}, f"this kernel lacks {missing[0]} (Linux 6.15 and later)"
    return world_sysctls(at_speed(Retransmission(rtt=WORLD_RTT), speed)), ""


# -- building -------------------------------------------------------------------------------


def register(run_id: str, owner: int | None = None) -> None:
    """Record which process owns the run: while it lives, ``cleanup`` leaves the run alone.

    A scenario run is owned by the runner; a world left up by ``natsim up`` by its
    middlebox process, which outlives the command that started it.
    """
    pid = os.getpid() if owner is None else owner
    private_dir(REGISTRY)
    replace_private(REGISTRY / f"{run_id}.json", json.dumps(
        {"run_id": run_id, "pid": pid, "pid_start": start_ticks(pid),
         "started": time.time(), "namespaces": list(ns_names(run_id))}))


def private_dir(path: Path) -> None:
    """A state folder of natsim's: created 0755 whatever the umask, and refused when it is a
    symlink or someone else's (state under /run/natsim is read by root)."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(parents=True, mode=0o755)
        os.chmod(path, 0o755)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) \
            or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise TopologyError(f"{path} is not natsim's own state folder (a symlink, not a "
                            "directory, someone else's or writable by others): remove it")


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks: tells a live owner from a reused pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def _netns_lock() -> Iterator[None]:
    """Serialise namespace creation between concurrent runs.

    Creating the first named namespace makes ``/run/netns`` a shared bind mount of itself
    (as ``ip netns add`` does); two runs doing that at the same moment stack two mounts and
    one loses the namespace files it just bound.
    """
    private_dir(REGISTRY)
    with (REGISTRY / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _hosts_file(ns: str, hosts: list[tuple[str, str]]) -> None:
    """``/etc/netns/NS/hosts``, which ``ip netns exec`` shows as the host's /etc/hosts."""
    folder = ETC_NETNS / ns
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text(
        "127.0.0.1\tlocalhost\n" + "".join(f"{ip}\t{name}\n" for ip, name in hosts))


def _mac(ipr: IPRoute, ifname: str) -> str:
    return str(ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("address"))


def server_names(run_id: str, backends: int) -> list[str]:
    first = ns_names(run_id)[2]
    return [first] + [f"{first}{i}" for i in range(1, backends)]


def build_world(plan: WorldPlan) -> World:
    """Apply a world plan with namespaces and veths; on any failure, remove what was made.

    One namespace per host of the plan and one for the middlebox; each end host hangs off
    its own interface of the middlebox (``inside`` for the client, ``outside``,
    ``outside1``... for the servers), with a permanent neighbour entry for the middlebox's
    MAC (nothing owns the gateway address: the dataplane forwards, the kernel never).
    """
    check_privileges()
    run_id = plan.run_id
    client_ns, mbox_ns, _ = ns_names(run_id)
    servers = server_names(run_id, len(plan.servers))
    register(run_id)
    try:
        with _netns_lock(), interrupts.deferred():
            for ns in (client_ns, mbox_ns, *servers):
                netns.create(ns)
        mbox_ifs = ["outside"] + [f"outside{i}" for i in range(1, len(servers))]
        ends = [(client_ns, "inside", plan.client),
                *((ns, ifname, host) for ns, ifname, host
                  in zip(servers, mbox_ifs, plan.servers, strict=True))]
        for ns, ifname, _host in ends:
            with IPRoute(netns=ns) as ipr:
                ipr.link("add", ifname="eth0", kind="veth",
                         peer={"ifname": ifname, "net_ns_fd": mbox_ns})
        with IPRoute(netns=mbox_ns) as ipr:
            for ifname in ("lo", "inside", *mbox_ifs):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
            mbox_macs = {ifname: _mac(ipr, ifname) for ifname in ("inside", *mbox_ifs)}
        write_sysctls(mbox_ns, plan.middlebox_sysctls)
        if plan.middlebox_addresses:
            give_addresses(mbox_ns, plan.middlebox_addresses)
        macs = {ns: _configure_host(ns, host, mbox_macs[ifname]) for ns, ifname, host in ends}
        backend_list = tuple(
            Backend(ns, host.address, macs[ns], ifname, mbox_macs[ifname])
            for ns, ifname, host in ends[1:])
        return World(run_id, client_ns, mbox_ns, servers[0], macs[client_ns], macs[servers[0]],
                     mbox_macs["inside"], mbox_macs["outside"], backends=backend_list,
                     client_ip=plan.client.address, server_ip=_named_server(plan))
    except BaseException:
        destroy_world(run_id)
        raise


def _named_server(plan: WorldPlan) -> str:
    """The address the client knows the server by (in an IPv4 world, the server's own)."""
    if ":" not in plan.client.address:
        return SERVER_IP
    return next(ip for ip, name in plan.client.hosts if name == "server")


def _configure_host(ns: str, host: HostPlan, gateway_mac: str) -> str:
    """Addresses, neighbour, routes, sysctls and hosts file of one end host; its MAC."""
    write_sysctls(ns, host.sysctls)
    with IPRoute(netns=ns) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=eth0, state="up")
        for address in host.addresses:
            ipr.addr("add", index=eth0, address=address, prefixlen=_prefixlen(address))
        ipr.neigh("add", dst=host.gateway, lladdr=gateway_mac, ifindex=eth0, state="permanent",
                  family=_family(host.gateway))
        for far in host.routes:
            ipr.route("add", dst=far, gateway=host.gateway, family=_family(far))
        mac = _mac(ipr, "eth0")
    if not host.offloads:
        offloads_off(ns, "eth0")
    _hosts_file(ns, list(host.hosts))
    if host.nameserver is not None:
        (ETC_NETNS / ns / "resolv.conf").write_text(f"nameserver {host.nameserver}\n")
    return mac


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _prefixlen(address: str) -> int:
    return PREFIXLEN6 if ":" in address else PREFIXLEN


def offloads_off(ns: str, ifname: str) -> None:
    """Transmit checksum offload off on ``ifname`` (segmentation offloads go with it: the
    kernel needs the checksum to segment), so its frames leave complete and MTU-sized."""
    with inside(ns):
        tool = Ethtool()
        try:
            features = tool.get_features(ifname)
            features.features["tx-checksum-ip-generic"].enable = False
            tool.set_features(ifname, features)
        finally:
            tool.close()


def give_addresses(ns: str, addresses: Mapping[str, str]) -> None:
    """Addresses on the middlebox's own interfaces (``inside`` -> the client's gateway...):
    only for a proxy that terminates TCP there; natsim's dataplane owns no address."""
    with IPRoute(netns=ns) as ipr:
        for ifname, address in addresses.items():
            ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=address,
                     prefixlen=PREFIXLEN)


def set_client_link(ns: str, host: HostPlan, gateway_mac: str, attached: bool) -> None:
    """Detach the client's interface (link down: the kernel drops its routes and
    neighbours, so every connect and DNS query fails at once) or attach it again (link up,
    the neighbour and routes as the plan has them): a Lambda's late network attach."""
    with IPRoute(netns=ns) as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.link("set", index=eth0, state="up" if attached else "down")
        if attached:
            ipr.neigh("replace", dst=host.gateway, lladdr=gateway_mac, ifindex=eth0,
                      state="permanent", family=_family(host.gateway))
            for far in host.routes:
                ipr.route("replace", dst=far, gateway=host.gateway, family=_family(far))


# -- tearing down ---------------------------------------------------------------------------


def _ns_inode(ns: str) -> int | None:
    try:
        return (NETNS_DIR / ns).stat().st_ino
    except OSError:
        return None


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    inode = _ns_inode(ns)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "net").stat().st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def signal_in(ns: str, pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still a process of ``ns``: a pid recorded
    earlier may name another process by now (pid_max can be 32768, and a test suite goes
    round it in minutes). The pidfd pins the process between the check and the signal."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        inode = _ns_inode(ns)
        if inode is None or Path(f"/proc/{pid}/ns/net").stat().st_ino != inode:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _kill_all(pids: list[int], grace: float = 1.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                alive.append(pid)
        if not alive:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in alive):
            time.sleep(0.02)
        pids = [p for p in alive if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


def destroy_world(run_id: str) -> list[str]:
    """Kill every process in the run's namespaces, remove them; return what was removed."""
    removed = []
    mine = set(ns_names(run_id))
    if NETNS_DIR.is_dir():
        mine |= {e.name for e in NETNS_DIR.iterdir() if _run_id_of(e.name) == run_id}
    for ns in sorted(mine):
        pids = [p for p in pids_in(ns) if p != os.getpid()]
        if pids:
            _kill_all(pids)
        if (NETNS_DIR / ns).exists():
            with contextlib.suppress(OSError):
                netns.remove(ns)
                removed.append(ns)
        shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (REGISTRY / f"{run_id}.json").unlink()
    return removed


def leftover_runs() -> dict[str, int | None]:
    """Run ids found on this machine (namespaces, hosts folders, registry) -> owner pid."""
    runs: dict[str, int | None] = {}
    for folder in (NETNS_DIR, ETC_NETNS):
        if folder.is_dir():
            for entry in folder.iterdir():
                run_id = _run_id_of(entry.name)
                if run_id is not None:
                    runs.setdefault(run_id, None)
    if REGISTRY.is_dir():
        for entry in REGISTRY.glob("*.json"):
            try:
                record = json.loads(entry.read_text())
                pid = int(record["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                runs.setdefault(entry.stem, None)
                continue
            # The owner counts as alive only if it is the very process that registered.
            live = _alive(pid) and start_ticks(pid) == record.get("pid_start")
            runs[entry.stem] = pid if live else None
    return runs


def _run_id_of(name: str) -> str | None:
    """``natsim-<id>-<role>`` -> ``<id>``; anything else (not ours) -> None."""
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX):]
    run_id, _, role = rest.rpartition("-")
    if not run_id or not re.fullmatch(r"client|mbox|server([1-9][0-9]?)?", role):
        return None
    return run_id


def cleanup(force: bool = False) -> tuple[list[str], list[str]]:
    """Remove leftovers of runs whose owner is gone; returns (removed, skipped live runs)."""
    removed: list[str] = []
    skipped: list[str] = []
    for run_id, pid in sorted(leftover_runs().items()):
        if pid is not None and pid != os.getpid() and not force:
            skipped.append(run_id)
            continue
        removed += destroy_world(run_id)
        removed.append(f"run {run_id}")
    return removed, skipped
