"""One driver for every world: build it, start its programs in order, watch them, tear down.

A scenario run (:mod:`simulator.runs.runner`) is this driver plus a script and a verdict;
``natsim up`` (:mod:`simulator.world.live`) is the same driver left running; the unit
suite drives whole scenarios through it on the fake backend. What it guarantees, whatever
the backend:

* **Order.** The middlebox first, until it says ``ready`` (its sockets are bound: nothing
  crosses the world before); then each server until it listens; then the client. A program
  that does not say ``ready`` in time stops the run with its stderr's last lines; a
  middlebox that dies or hangs on the way is :class:`MiddleboxFailedError` (an ERROR run,
  never a verdict).
* **Liveness.** The middlebox beats every 0.5 s wall while the run goes on; an exit or a
  silence of :data:`STALL_AFTER` makes the world untrustworthy (:meth:`trouble`).
* **Teardown.** Every program asked to stop, read to the end while it stops (a process
  blocked on a full pipe never exits), killed if it will not, and the world destroyed.

Times are the backend's (:meth:`Backend.now`): ``time.monotonic()`` for real programs,
virtual seconds for the fake network.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from simulator.core.configs import MiddleboxConfig, ProgramConfig
from simulator.core.messages import Kind, Message, Role
from simulator.core.plan import WorldPlan
from simulator.support import interrupts, results
from simulator.world import topology
from simulator.world.backends import Backend
from simulator.world.process import Program, ended

READY_TIMEOUT = 15.0
"""Wall seconds a program has to say ``ready``."""
STALL_AFTER = 5.0
"""Wall seconds without a heartbeat after which a middlebox counts as hung (it beats every
0.5 s from its own loop)."""
STOP_GRACE = 5.0
"""Wall seconds programs have to stop when asked, before they are killed."""


class StartError(RuntimeError):
    """A program did not start (not a verdict); the message says which, and why."""


class MiddleboxFailedError(Exception):
    """The middlebox died or hung before the run could start: the run is an ERROR (a
    verdict without a working middlebox would mean nothing), with its reason."""


class WorldDriver:
    """The lifecycle of one world on one backend; its results folder holds the logs."""

    def __init__(self, backend: Backend, folder: results.Folder) -> None:
        self.backend = backend
        self.folder = folder
        self.world: topology.World | None = None
        self.plan: WorldPlan | None = None
        self.programs: list[Program] = []
        self.middlebox: Program | None = None
        self.last_beat = 0.0
        self._logs: results.Folder | None = None

    # -- the stages, in order -------------------------------------------------------------

    def build(self, plan: WorldPlan) -> topology.World:
        self.plan = plan
        self.world = self.backend.build(plan, self.folder.path)
        return self.world

    def start_middlebox(self, config: MiddleboxConfig,
                        detached: bool = False) -> tuple[Message, list[Message]]:
        """The dataplane, until it says ``ready``; its ready line and what it said after.
        ``detached``: it outlives this process, its lines in ``events.jsonl``."""
        assert self.world is not None, "build() first"
        files = None
        if detached:
            files = (self.folder.open("events.jsonl", "wb"), self.folder.reader("events.jsonl"))
        stderr_name = "middlebox.stderr" if detached else None
        with self._stderr(Role.MIDDLEBOX, stderr_name) as stderr:
            program = self.backend.middlebox(self.world, config,
                                             self.folder.path / "middlebox.json", stderr,
                                             detached=files)
        if files is not None:
            files[0].close()
        self.middlebox = program
        self.programs.append(program)
        ready, after = self.wait_ready(program)
        self.last_beat = self.backend.now()
        return ready, after

    def start_program(self, role: str, host: str, config: ProgramConfig,
                      wait: bool = True) -> tuple[Program, Message | None, list[Message]]:
        """A program in ``host``, as ``role``; with ``wait``, until it says ``ready``. As
        ``middlebox`` (the L4-proxy contrast stands where the dataplane would), it is
        watched as the middlebox is."""
        with self._stderr(role) as stderr:
            program = self.backend.start(host, config, stderr)
        program.role = role
        self.programs.append(program)
        if role == Role.MIDDLEBOX:
            self.middlebox = program
        if not wait:
            return program, None, []
        ready, after = self.wait_ready(program)
        self.last_beat = self.backend.now()
        return program, ready, after

    def wait_ready(self, program: Program) -> tuple[Message, list[Message]]:
        """``program``'s ready line, and what it said right after it in the same read (a
        client's first attempt); what it said before is not part of the story."""
        deadline = self.backend.now() + READY_TIMEOUT
        while self.backend.now() < deadline:
            interrupts.check()
            messages = program.read()
            index = next((i for i, m in enumerate(messages) if m.kind == Kind.READY), None)
            if index is not None:
                return messages[index], messages[index + 1:]
            if program.poll() is not None:
                program.read()
                break
            self.backend.wait([program], 0.05)
        if program is self.middlebox:
            code = program.poll()
            how = (ended(code) if code is not None else
                   f"gave no 'ready' line within {READY_TIMEOUT:g} s (stopped or hung)")
            raise MiddleboxFailedError(f"the middlebox {how} before the run could start")
        raise StartError(f"the {program.role} did not start (no 'ready' line within "
                         f"{READY_TIMEOUT:g} s). Its stderr ends with:\n"
                         f"{self.stderr_tail(program.role)}")

    def attach(self, attached: bool) -> None:
        """Take the client's interface away, or give it back (a late attach)."""
        assert self.world is not None and self.plan is not None
        self.backend.attach(self.world, self.plan.client, attached)

    # -- while it runs --------------------------------------------------------------------

    def now(self) -> float:
        return self.backend.now()

    def take(self) -> Iterator[tuple[Program, Message]]:
        """Everything every program said since last time; the middlebox's heartbeats are
        noted here and not passed on."""
        for program in self.programs:
            for msg in program.read():
                if msg.kind == Kind.HEARTBEAT and program is self.middlebox:
                    self.last_beat = self.backend.now()
                    continue
                yield program, msg

    def wait(self, timeout: float) -> None:
        self.backend.wait(self.programs, timeout)

    def trouble(self) -> str | None:
        """Why the middlebox can no longer be trusted (it exited, or its loop stopped
        beating), or None while it is alive and well. Read everything it said first."""
        if self.middlebox is None:
            return None
        code = self.middlebox.poll()
        if code is not None:
            return f"the middlebox {ended(code)} during the run"
        silent = self.backend.now() - self.last_beat
        if silent > STALL_AFTER:
            return f"the middlebox stopped responding (no heartbeat for {silent:.1f} s wall)"
        return None

    # -- the end --------------------------------------------------------------------------

    def stop_all(self) -> list[tuple[Program, Message]]:
        """Ask every program to stop, read them while they do, kill the ones that will not;
        everything they said on the way."""
        for program in self.programs:
            program.stop()
        said = []
        deadline = self.backend.now() + STOP_GRACE
        while self.backend.now() < deadline and any(p.poll() is None for p in self.programs):
            said += list(self.take())
            self.backend.wait(self.programs, 0.02)
        for program in self.programs:
            if program.poll() is None:
                program.kill()
        said += list(self.take())
        return said

    def destroy(self) -> None:
        """Remove the world (once: a second call only closes what is still open); the
        programs' pipes are closed (a middlebox left running keeps its own files)."""
        for program in self.programs:
            program.close()
        run_id = self.world.run_id if self.world is not None else \
            self.plan.run_id if self.plan is not None else None  # build failed half way
        self.world = self.plan = None
        if run_id is not None:
            self.backend.destroy(run_id)
        if self._logs is not None:
            self._logs.close()
            self._logs = None

    def stderr_tail(self, role: str, chars: int = 2000) -> str:
        return (self.logs().read_text(f"{role}.stderr") or "")[-chars:]

    def logs(self) -> results.Folder:
        if self._logs is None:
            self._logs = self.folder.sub("logs")
        return self._logs

    def _stderr(self, role: str, name: str | None = None) -> IO[bytes]:
        """A program's stderr: ``logs/ROLE.stderr`` (or ``name`` in the results folder)."""
        folder = self.folder if name else self.logs()
        file: IO[bytes] = folder.open(name or f"{role}.stderr", "wb")
        return file
