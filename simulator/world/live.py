"""A world that stays up: ``natsim up``/``exec``/``status``/``down`` and the pytest plugin.

A scenario run builds its world, runs the built-in client and server, and tears it all
down. A *live* world is the same three namespaces and the same middlebox, left running so
that people can put their own programs in the hosts (``curl`` in ``client``, their service
in ``server``) and watch what the appliance does to them.

The middlebox is started detached (its own session, no parent-death signal), so it outlives
the ``natsim up`` command; it then owns the run in the registry, and ``natsim cleanup``
leaves the world alone for as long as it lives. What the world needs to be found again
(names, speed, the middlebox's pid, the results folder) is kept in
``/run/natsim/worlds/NAME.json``.

Time compression applies to the appliance (its idle timeout is divided by the speed), to
the hosts' keepalive sysctls, and to the programs natsim starts in the hosts: they run on the
world's clock (:mod:`simulator.world.modeltime`), so their own timeouts and keepalive options are
model seconds, as their authors meant them. ``--wall-time`` (and ``model_time=False``)
starts a program on the wall clock instead; :meth:`LiveWorld.wall` converts for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pickle
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from pyroute2 import netns

from simulator.core.appliances import Appliance
from simulator.core.jsonvalue import JsonObject
from simulator.core.path_events import PathKind
from simulator.core.plan import ip_refusal, keepalive_sysctls, middlebox_config, world_plan
from simulator.dataplane import control
from simulator.spec.scenario import LINUX_KEEPALIVE_DEFAULTS
from simulator.support.results import Folder, default_dir, replace_private
from simulator.world import modeltime, topology
from simulator.world.backends import Backend, get_backend, host_command
from simulator.world.driver import MiddleboxFailedError, WorldDriver
from simulator.world.process import Process, ended

T = TypeVar("T")
WORLD_NAME_HELP = "which world (default: the one called default, else the only one up)"
"""The commands' --name help: :meth:`LiveWorld.load` without a name."""
WORLDS = topology.REGISTRY / "worlds"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
ROLES = ("client", "server", "middlebox")
STALE_AFTER = 3.0
"""Wall seconds without a status update after which a live middlebox counts as stalled (it
rewrites status.json four times a second)."""
REPO_ROOT = Path(__file__).resolve().parents[2]


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Middleboxes this process started, kept so that ``down`` can reap them (a process that
outlives its ``Popen`` object is not reaped, and Python warns about it)."""


class WorldError(RuntimeError):
    """A live world that cannot be found, built or reached; the message says which."""


def check_name(name: str) -> str:
    """The one rule for world names, applied wherever a name comes in (a name is a file
    name under /run/natsim: never a path)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise WorldError(f"world name {name!r}: use 1-20 characters a-z, 0-9 and '-', "
                         "starting with a letter or digit")
    return name


def _lock_file(name: str) -> Path:
    return WORLDS / f".{check_name(name)}.lock"


@contextlib.contextmanager
def _name_lock(name: str) -> Iterator[None]:
    """Held while a world of this name is built or removed. The lock file goes with the
    world (``down``); one removed while another process waits on it is checked for after
    the wait, and the wait starts over on the new file."""
    topology.private_dir(WORLDS)
    while True:
        fd = os.open(_lock_file(name), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(_lock_file(name), follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


@dataclass
class LiveWorld:
    name: str
    run_id: str
    speed: float
    appliance: dict[str, Any]
    namespaces: dict[str, str]
    addresses: dict[str, str]
    results_dir: str
    middlebox_pid: int
    """The dataplane's process; with Docker, the process that follows its container's log
    into events.jsonl."""
    started: str
    backend: str = "namespaces"
    sysctls: dict[str, dict[str, int]] = field(default_factory=dict)
    """What ``up`` set in each host, in wall seconds (``natsim up`` prints it)."""
    clock: JsonObject | None = None
    """The world's clock (:class:`simulator.world.modeltime.WorldClock`) for its programs."""
    libraries: dict[str, str] | None = None
    """Where libfaketime and the timer shim are for the hosts' programs (in a container,
    its own paths); None where model time cannot be had (the reason is in ``no_model_time``)."""
    no_model_time: str = ""
    uncompressed_retransmissions: str = ""
    """Why the hosts' kernels retransmit on the wall clock (empty: their retransmission
    timer is compressed like a scripted run's, so a silent appliance's 15-minute hang lasts
    about 15 model minutes)."""

    # -- finding ------------------------------------------------------------------------

    @staticmethod
    def state_file(name: str) -> Path:
        return WORLDS / f"{check_name(name)}.json"

    @classmethod
    def names(cls) -> list[str]:
        """Worlds that are up: state files with a valid name (anything else is not ours)."""
        if not WORLDS.is_dir():
            return []
        return sorted(p.stem for p in WORLDS.glob("*.json")
                      if NAME_RE.fullmatch(p.stem) and not p.is_symlink())

    @classmethod
    def load(cls, name: str | None = None) -> LiveWorld:
        """The world called ``name``; without a name, the one ``natsim up`` makes without
        a name (``default``), and never another: a ``natsim down`` without a name once
        removed the only world that was up, a test's running beside the README's."""
        if name is None:
            names = cls.names()
            if not names:
                raise WorldError("no world is up: start one with `natsim up`")
            if "default" not in names:
                raise WorldError(f"no world called default is up (up: {', '.join(names)}): "
                                 "say which with --name")
            name = "default"
        path = cls.state_file(name)
        if path.is_symlink() or not path.exists():
            raise WorldError(f"no world named {name!r} is up (up: "
                             f"{', '.join(cls.names()) or 'none'})")
        info = path.stat()
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise WorldError(f"world {name!r}: its state file {path} is not natsim's own "
                             f"(owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}); "
                             "remove it")
        try:
            live = cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise WorldError(f"world {name!r}: unreadable state file {path} ({exc})") from None
        if live.name != name or not topology.RUN_ID_RE.fullmatch(live.run_id):
            raise WorldError(f"world {name!r}: state file {path} names another world")
        return live

    # -- building and removing ----------------------------------------------------------

    @classmethod
    def up(cls, name: str, appliance: Appliance, speed: float,
           sysctls: dict[str, int] | None = None, results_dir: Path | None = None,
           backend: str = "namespaces", capture: bool = True, ip: str = "4") -> LiveWorld:
        """Build a world and start its middlebox. ``capture``: write ``capture.pcap`` (every
        frame then crosses the Python dataplane; without it the frames of hot established
        flows take the compiled fast path: ``simulator/dataplane/fastpath.py``). ``ip``: the
        hosts' family (``core/plan.py``, IP_MODES)."""
        if speed <= 0:
            raise WorldError(f"speed must be positive, got {speed}")
        if refused := ip_refusal(ip, appliance, backend):
            raise WorldError(f"ip {ip}: {refused}")
        with _name_lock(name):  # two `up --name X` at once: the second waits, then refuses
            if cls.state_file(name).exists():
                raise WorldError(f"a world named {name!r} is already up: `natsim down --name "
                                 f"{name}` first, or choose another --name")
            return cls._up(name, appliance, speed, sysctls, results_dir, backend, capture, ip)

    @classmethod
    def _up(cls, name: str, appliance: Appliance, speed: float,
            sysctls: dict[str, int] | None, results_dir: Path | None,
            backend: str, capture: bool, ip: str = "4") -> LiveWorld:
        """The world driver's stages up to the middlebox, left running: build, start the
        middlebox detached (its lines in events.jsonl), wait for it, then the clock."""
        hosts = get_backend(backend)
        run_id = topology.new_run_id()
        folder = Folder.create(results_dir or default_dir(f"world-{name}", run_id))
        results, driver = folder.path, WorldDriver(hosts, folder)
        # the whole world is compressed: the client's keepalive sysctls (the scenario's or
        # Linux's defaults) and the server's (Linux's defaults), in whole wall seconds
        client = keepalive_sysctls(sysctls or LINUX_KEEPALIVE_DEFAULTS, speed)
        server = keepalive_sysctls(LINUX_KEEPALIVE_DEFAULTS, speed)
        retransmits, uncompressed = topology.retransmission_sysctls(hosts.name, speed)
        client.update(retransmits)
        server.update(retransmits)
        try:
            world = driver.build(world_plan(run_id, client, server_sysctls=server, ip=ip,
                                            vip=appliance.vip6 or None))
            inside, outside = world.ports()
            driver.start_middlebox(middlebox_config(
                [appliance], speed, inside, outside,
                pcap=str(results / "capture.pcap") if capture else None,
                status=str(results / "status.json"), metrics=str(results / "metrics.jsonl"),
                sample_every=speed), detached=True)
            mbox = driver.middlebox
            assert isinstance(mbox, Process)
            _CHILDREN[mbox.pid] = mbox.popen
            mbox.close()
            _wait_for_status(mbox, folder)
            topology.register(run_id, owner=mbox.pid)
            live = cls._record(name, hosts, world, appliance, speed, results, mbox.pid,
                               {"client": client, "server": server})
            live.uncompressed_retransmissions = uncompressed
            topology.private_dir(WORLDS)
            replace_private(cls.state_file(name), json.dumps(asdict(live), indent=2))
            return live
        except BaseException as exc:
            for program in driver.programs:
                program.kill()
            driver.destroy()  # the world's clock segment with it
            if isinstance(exc, MiddleboxFailedError):
                err = (folder.read_text("middlebox.stderr") or "")[-2000:]
                raise WorldError(f"the middlebox did not start ({exc}); its stderr ends "
                                 f"with:\n{err}") from None
            raise
        finally:
            folder.close()

    @classmethod
    def _record(cls, name: str, hosts: Backend, world: topology.World, appliance: Appliance,
                speed: float, results: Path, pid: int, sysctls: dict[str, dict[str, int]]
                ) -> LiveWorld:
        """What finds the world again: its names, its clock, its middlebox."""
        clock = modeltime.WorldClock.starting_now(speed, world.run_id)
        libraries, why_not = hosts.model_time(world, clock)
        return cls(name=name, run_id=world.run_id, speed=speed,
                   appliance={"name": appliance.name, "title": appliance.title,
                              "nat": appliance.nat,
                              "tcp_idle_timeout": appliance.tcp_idle_timeout,
                              "late_from_inside": str(appliance.late_from_inside),
                              "late_from_outside": str(appliance.late_from_outside),
                              "record": appliance.to_record()},
                   namespaces={"client": world.client_ns, "server": world.server_ns,
                               "middlebox": world.mbox_ns},
                   addresses={"client": world.client_ip, "server": world.server_ip,
                              "nat": appliance.public_ips[0]},
                   results_dir=str(results), middlebox_pid=pid,
                   started=datetime.now(UTC).isoformat(timespec="seconds"),
                   backend=hosts.name,
                   sysctls={role: {f"net.ipv4.{k}": v for k, v in values.items()}
                            for role, values in sysctls.items()},
                   clock=clock.to_record(), libraries=libraries, no_model_time=why_not)

    def down(self) -> JsonObject | None:
        """Stop the middlebox, remove the hosts, the state file and the lock file.

        Returns the middlebox's final report (its counters when asked to stop), or None
        when it gave none: it was dead, stopped or hung, and what the world showed since
        then cannot be trusted (the pytest plugin fails the test)."""
        with _name_lock(self.name):
            final = self._down()
            _lock_file(self.name).unlink(missing_ok=True)
        return final

    def _down(self) -> JsonObject | None:
        if self.backend == "docker":
            with contextlib.suppress(Exception):  # the container may be gone already
                subprocess.run(["docker", "kill", "--signal", "TERM",
                                self.namespaces["middlebox"]], capture_output=True,
                               timeout=10, check=False)
        else:
            topology.signal_in(self.namespaces["middlebox"], self.middlebox_pid,
                               signal.SIGTERM)
        deadline = time.monotonic() + 5.0  # a large flow table makes a long last line
        while time.monotonic() < deadline and self.alive() and self.final_report() is None:
            time.sleep(0.02)
        while time.monotonic() < deadline and self.alive():  # it reported; let it exit
            time.sleep(0.02)
        final = self.final_report()
        get_backend(self.backend).destroy(self.run_id)  # the clock segment with it
        self.state_file(self.name).unlink(missing_ok=True)
        child = _CHILDREN.pop(self.middlebox_pid, None)
        if child is not None:
            child.wait()
        return final

    def forget(self) -> None:
        """Remove what names a world whose middlebox is gone (``natsim cleanup``)."""
        with _name_lock(self.name):
            self.state_file(self.name).unlink(missing_ok=True)
            _lock_file(self.name).unlink(missing_ok=True)

    def final_report(self) -> JsonObject | None:
        """The middlebox's ``stopped`` line (its final counters), once it has written it:
        the last line of ``events.jsonl``, however long (it lists every flow still held)."""
        path = Path(self.results_dir) / "events.jsonl"
        try:
            with path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                span = 1 << 16
                while True:
                    f.seek(max(0, size - span))
                    tail = f.read().rstrip(b"\n")
                    cut = tail.rfind(b"\n")
                    if cut >= 0 or span >= size:
                        break
                    span *= 4
        except OSError:
            return None
        last = tail[cut + 1:]
        if b'"stopped"' not in last:
            return None
        try:
            line = json.loads(last)
        except ValueError:  # still being written
            return None
        return line if isinstance(line, dict) and line.get("kind") == "stopped" else None

    # -- using --------------------------------------------------------------------------

    def namespace(self, role: str) -> str:
        if role not in self.namespaces:
            raise WorldError(f"no host {role!r} in world {self.name!r}; hosts: "
                             f"{', '.join(self.namespaces)}")
        return self.namespaces[role]

    def command(self, role: str, argv: Sequence[str],
                env: Mapping[str, str] | None = None) -> list[str]:
        """The command line that runs ``argv`` inside host ``role`` (with ``env`` added to
        its environment, for a container whose programs do not inherit ours)."""
        if not argv:
            raise WorldError("no command given")
        return host_command(self.backend, self.namespace(role), argv, env)

    def world_clock(self) -> modeltime.WorldClock | None:
        return modeltime.WorldClock.from_record(self.clock) if self.clock else None

    def timer_log(self) -> Path:
        """Where the timer shim reports what it scaled (in a container: its own /tmp)."""
        if self.backend == "docker":
            return Path("/tmp/natsim-timers.jsonl")
        return Path(self.results_dir) / "timers.jsonl"

    def model_time_env(self, base: Mapping[str, str], verbose: bool = False) -> dict[str, str]:
        """``base`` with what puts a program on the world's clock; raises
        :class:`~simulator.world.modeltime.ModelTimeError` where that cannot be had."""
        clock = self.world_clock()
        if clock is None or self.libraries is None:
            raise modeltime.ModelTimeError(
                f"world {self.name} has no model clock for its programs"
                f"{f': {self.no_model_time}' if self.no_model_time else ''}")
        return clock.environment(base, self.timer_log(), verbose,
                                 libraries=(self.libraries["faketime"], self.libraries["shim"]))

    def why_not_model_time(self, program: str) -> str | None:
        """Why ``program`` cannot run on this world's clock (None: it can)."""
        if self.libraries is None:
            return self.no_model_time or f"world {self.name} has no model clock"
        # a container's programs are its image's: judged there by what they do
        return None if self.backend == "docker" else modeltime.cannot_compress(program)

    def program(self, role: str, argv: Sequence[str], model_time: bool = True,
                verbose: bool = False, base: Mapping[str, str] | None = None
                ) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that run ``argv`` in host ``role``, on the
        world's clock unless ``model_time`` is false. The environment names the world and
        its speed (``NATSIM_WORLD``, ``NATSIM_SPEED``): a script can tell where it runs."""
        named = {"NATSIM_WORLD": self.name, "NATSIM_SPEED": f"{self.speed:g}"}
        env = {**(os.environ if base is None else base), **named}
        docker = self.backend == "docker"  # a container's program gets only `docker exec -e`
        if not model_time:
            return self.command(role, argv, named if docker else None), env
        why = self.why_not_model_time(argv[0]) if argv else None
        if why is not None:  # never judged silently
            raise modeltime.ModelTimeError(f"{why}; it cannot run in model time: "
                                           f"{modeltime.ADVICE} (wall_time=True in the "
                                           "pytest plugin)")
        if docker:
            return self.command(role, argv, self.model_time_env(named, verbose)), env
        return self.command(role, argv), self.model_time_env(env, verbose)

    def scaled(self) -> list[JsonObject]:
        """What the timer shim scaled in this world's programs (``timers.jsonl``)."""
        return modeltime.scaled_settings(Path(self.results_dir) / "timers.jsonl")

    def run(self, role: str, argv: Sequence[str], model_time: bool = True,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        command, env = self.program(role, argv, model_time, base=kwargs.pop("env", None))
        return subprocess.run(command, check=False, env=env, **kwargs)

    def popen(self, role: str, argv: Sequence[str], model_time: bool = True,
              **kwargs: Any) -> subprocess.Popen[str]:
        kwargs.setdefault("text", True)
        command, env = self.program(role, argv, model_time, base=kwargs.pop("env", None))
        return subprocess.Popen(command, env=env, **kwargs)

    def wall(self, model_seconds: float) -> float:
        """Wall seconds for a duration in the appliance's model time."""
        return model_seconds / self.speed

    def status(self) -> dict[str, Any]:
        path = Path(self.results_dir) / "status.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise WorldError(f"world {self.name!r}: no status from its middlebox ({exc}); "
                             "is it still running?") from None
        return data

    def path_event(self, kind: PathKind, duration: float | None = None,
                   flow: int | None = None) -> None:
        """Have the middlebox carry out ``kind`` now: ``restart`` (the flow table lost),
        ``replace`` (and new public addresses), ``blackhole`` for ``duration`` model s, or
        ``expire`` (flow number ``flow``, or every flow, forgotten as at its timeout)."""
        if self.backend != "namespaces":
            raise WorldError(f"world {self.name}: path events on demand need the namespaces "
                             "backend (the dataplane reads them from the results folder)")
        if kind is PathKind.REPLACE and not self.appliance.get("nat", True):
            raise WorldError(f"world {self.name}: replace gives a NAT new public addresses; "
                             f"{self.appliance.get('title')} translates none (restart instead)")
        health = self.health()
        if health is not None:
            raise WorldError(f"world {self.name}: {health}")
        if self.status().get("fast_path") is not None:
            raise WorldError(f"world {self.name} forwards hot flows on its fast path (natsim "
                             "up --no-capture), where no path event reaches them: bring it up "
                             "with its capture")
        with (Path(self.results_dir) / "control.jsonl").open("a") as f:
            f.write(control.request(kind, duration, flow))

    def events(self) -> list[dict[str, Any]]:
        """The middlebox's events so far (times in model seconds since it started)."""
        path = Path(self.results_dir) / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines
                if line.strip() and json.loads(line).get("kind") not in ("ready", "stopped")]

    def health(self) -> str | None:
        """None while the middlebox is alive and updating its status; otherwise what is
        wrong, starting with DEAD (gone) or STALLED (alive, but its loop stopped)."""
        if not self.alive():
            last = ""
            with contextlib.suppress(OSError):
                lines = (Path(self.results_dir) / "middlebox.stderr").read_text(
                    errors="replace").strip().splitlines()
                last = lines[-1] if lines else ""
            why = f"its last error: {last}" if last else _silent_end(self.middlebox_pid)
            return f"DEAD: the middlebox is gone; {why}"
        try:
            age = time.time() - float(self.status()["written"])
        except (WorldError, KeyError, TypeError, ValueError):
            return "STALLED: the middlebox has written no status"
        if age > STALE_AFTER:
            return f"STALLED: the middlebox's last update was {age:.0f} s ago"
        return None

    def alive(self) -> bool:
        if self.backend == "docker":  # its log follower lives as long as the container
            try:
                os.kill(self.middlebox_pid, 0)
            except ProcessLookupError:
                return False
            return _CHILDREN.get(self.middlebox_pid) is None or \
                _CHILDREN[self.middlebox_pid].poll() is None
        return bool(topology.pids_in(self.namespaces["middlebox"]))


def _silent_end(pid: int) -> str:
    """How a middlebox that wrote nothing ended: only its starter can read its status."""
    code = _CHILDREN[pid].poll() if pid in _CHILDREN else None
    how = "was killed" if code is None else f"exited with status {code}" if code >= 0 \
        else f"was killed by {signal.Signals(-code).name}"
    return f"it {how} (no error written)"


def _wait_for_status(mbox: Process, results: Folder, timeout: float = 15.0) -> None:
    """Ready, and its first status written: health() reads it from the first call on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.is_file("status.json"):
            return
        if mbox.poll() is not None:
            break
        time.sleep(0.02)
    code = mbox.poll()
    how = f"it {ended(code)}" if code is not None else "stalled"
    raise MiddleboxFailedError(f"the middlebox wrote no status within {timeout:g} s ({how})")


# -- running Python code inside a host ------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_SLAVE, _MS_BIND = 0x4000, 0x80000, 0x1000


def _enter_host(ns: str) -> None:
    """In a forked child: join ``ns`` and see its hosts file, as ``ip netns exec`` does."""
    netns.setns(ns, flags=0)
    libc = ctypes.CDLL(None, use_errno=True)
    hosts = topology.ETC_NETNS / ns / "hosts"
    if hosts.exists() and libc.unshare(_CLONE_NEWNS) == 0:
        libc.mount(None, b"/", None, _MS_SLAVE | _MS_REC, None)
        libc.mount(str(hosts).encode(), b"/etc/hosts", None, _MS_BIND, None)


def call_on_clock(live: LiveWorld, role: str, func: Callable[..., T],
                  args: Sequence[object] = (), kwargs: Mapping[str, object] | None = None,
                  limit: float | None = None) -> T:
    """Run ``func(*args, **kwargs)`` in a fresh interpreter inside host ``role``, on the
    world's clock (:mod:`simulator.world.host_call`). ``func`` must be importable by name."""
    name = getattr(func, "__qualname__", repr(func))
    try:
        payload = pickle.dumps((func, tuple(args), dict(kwargs or {})))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise WorldError(f"{name} cannot run in model time: it runs in a fresh interpreter, "
                         f"which must import it by name ({exc}); define it at the top level "
                         "of a module, or call with wall_time=True") from None
    command, env = live.program(role, [sys.executable, "-m", "simulator.world.host_call"])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *(p for p in sys.path if p)])
    try:
        done = subprocess.run(command, input=payload, capture_output=True, env=env,
                              timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{name} did not finish within {limit:g} s in {role}") from None
    if not done.stdout:
        raise WorldError(f"the interpreter running {name} in {role} died (status "
                         f"{done.returncode}): {done.stderr.decode(errors='replace')[-1500:]}")
    sys.stderr.write(done.stderr.decode(errors="replace"))
    return cast(T, _outcome(done.stdout))  # what func returned, pickled


def _outcome(data: bytes) -> object:
    """What the child sent back: its value, or its exception raised here."""
    status, value = pickle.loads(data)
    if status == "error":
        raise value
    return value


def call_in(ns: str, func: Callable[..., T], args: Sequence[object] = (),
            kwargs: Mapping[str, object] | None = None, limit: float | None = None) -> T:
    """Run ``func(*args, **kwargs)`` in a child process inside namespace ``ns``.

    The child is a fork of this process, so ``func`` may be any function or closure; its
    return value (or exception) comes back pickled. Sockets it opens live in ``ns``.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's stack
        os.close(read_end)
        try:
            _enter_host(ns)
            payload = pickle.dumps(("ok", func(*args, **(kwargs or {}))))
        except BaseException as exc:  # everything goes back to the parent
            try:
                payload = pickle.dumps(("error", exc))
            except Exception:
                payload = pickle.dumps(("error", RuntimeError(traceback.format_exc())))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        if limit is not None and not select.select([pipe], [], [], limit)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"{getattr(func, '__name__', func)} did not finish within "
                               f"{limit:g} s inside {ns}")
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise WorldError(f"the child running {getattr(func, '__name__', func)} in {ns} died")
    return cast(T, _outcome(data))
