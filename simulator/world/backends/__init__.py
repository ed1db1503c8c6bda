"""Where a world's hosts live: network namespaces (the default), Docker containers, or the
fake network of natsim's own unit suite.

The driver asks the same of every backend, at the level of typed programs: apply a
:class:`~simulator.core.plan.WorldPlan` (``build``), start a program in a host from its
typed configuration (``start``) or the middlebox from its (``middlebox``), take the
client's interface away and give it back (``attach``, a late attach), put the world's clock
where the hosts' programs find it (``model_time``), tell the time and wait for the next
words of its programs (``now``, ``wait``), and remove everything (``destroy``). Programs
come back as :class:`~simulator.world.process.Program` handles that stream typed
messages. :mod:`~simulator.world.backends.netns` builds with pyroute2 and runs programs
with ``ip netns exec``; :mod:`~simulator.world.backends.docker` with the Docker SDK and
``docker exec -i``; :mod:`~simulator.world.backends.fake` in memory, in virtual time. The
engine, the workloads, the messages and the verdict are the same.
"""

from __future__ import annotations

import select
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from simulator.core.configs import MiddleboxConfig, ProgramConfig
from simulator.core.plan import HostPlan, WorldPlan
from simulator.world import topology
from simulator.world.modeltime import WorldClock
from simulator.world.process import Program


class BackendError(RuntimeError):
    """The backend cannot be used here; the message says what is missing and how to get it."""


class Backend(Protocol):
    name: str

    def build(self, plan: WorldPlan, results_dir: Path) -> topology.World:
        """Apply ``plan``: make its hosts and networks."""
        ...

    def start(self, host: str, config: ProgramConfig, stderr: IO[bytes]) -> Program:
        """Start the program ``config`` describes in ``host`` (its stderr to ``stderr``)."""
        ...

    def middlebox(self, world: topology.World, config: MiddleboxConfig, config_path: Path,
                  stderr: IO[bytes], detached: tuple[IO[bytes], IO[bytes]] | None = None
                  ) -> Program:
        """Start the dataplane with ``config`` (written to ``config_path`` on the way).
        ``detached``: it outlives us, its lines written to the first file and read from
        the second (``natsim up``)."""
        ...

    def attach(self, world: topology.World, client: HostPlan, attached: bool) -> None:
        """Take the client's network interface away, or give it back."""
        ...

    def model_time(self, world: topology.World, clock: WorldClock
                   ) -> tuple[dict[str, str] | None, str]:
        """Put ``clock`` where the hosts' programs find it; where libfaketime and the timer
        shim are for them, or None and why model time cannot be had."""
        ...

    def now(self) -> float:
        """Seconds on the clock the programs stamp their messages with."""
        ...

    def wait(self, programs: Sequence[Program], timeout: float) -> None:
        """Until one of ``programs`` may have something to say, or ``timeout`` seconds."""
        ...

    def destroy(self, run_id: str) -> None: ...


def host_command(backend: str, host: str, argv: Sequence[str],
                 env: Mapping[str, str] | None = None) -> list[str]:
    """The argv that runs ``argv`` inside ``host`` (a namespace, or a container with
    ``backend == "docker"``), its output on our pipes: for the driver and ``natsim exec``.
    ``env``: variables a container's program must be given (a namespace's inherits ours)."""
    if backend == "docker":
        extra = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return ["docker", "exec", "-i", *extra, host, *argv]
    if shutil.which("ip") is None:
        raise BackendError("the `ip` command (Debian package iproute2) is needed to run "
                           "programs inside namespaces: apt-get install iproute2")
    return ["ip", "netns", "exec", host, *argv]


def program_role(config: ProgramConfig) -> str:
    """The role a program's messages carry until the driver names it (``server1``...)."""
    return config.role or config.module.rsplit(".", 1)[-1]


class RealTime:
    """The clock and the waiting of the backends whose programs are real processes: the
    monotonic clock they stamp their lines with, and ``select`` on their pipes."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, programs: Sequence[Program], timeout: float) -> None:
        # a pipe at end-of-file is always "readable": those have no descriptor, or this spins
        fds = [fd for fd in (p.fileno() for p in programs) if fd is not None]
        if fds:
            select.select(fds, [], [], max(0.0, timeout))
        else:
            time.sleep(max(0.0, timeout))


def get_backend(name: str, images: dict[str, str] | None = None) -> Backend:
    if name == "docker":
        from simulator.world.backends.docker import Docker  # noqa: PLC0415 (the SDK: 0.3 s)

        return Docker(images)
    if name == "fake":
        raise BackendError("the fake backend is natsim's own test double: a fake kernel "
                           "never gives a user's verdict (use namespaces or docker)")
    from simulator.world.backends.netns import Namespaces  # noqa: PLC0415

    return Namespaces()
