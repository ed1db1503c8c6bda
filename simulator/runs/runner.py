"""Running a scenario with real processes: build the world, start them, feed the session.

The runner is a driver. The world is planned purely (:mod:`simulator.core.plan`) and a
backend applies it (namespaces or containers); the runner starts the programs in a fixed
order -- the middlebox (until its sockets are bound), the server (until it listens), then
the client -- reads their JSON lines as typed messages (:mod:`simulator.core.messages`)
and feeds every one to the run's :class:`~simulator.core.session.RunSession`, which owns
the timeline, the outcomes and the verdict. What only a driver can do stays here: the
processes, their liveness (the middlebox included: a dead or hung middlebox makes the run
an ERROR), a progress line while nothing happens, pictures and files.

Whatever happens -- success, an exception, Ctrl-C, SIGTERM -- the ``finally`` clause kills
the processes and removes the world; each child also gets ``PR_SET_PDEATHSIG`` so that it
dies with the runner if the runner is killed outright, and ``natsim cleanup`` removes what
such a crash leaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from rich.console import Console

from simulator.core.events import EventKind
from simulator.core.messages import Kind, Message, Role
from simulator.core.metrics import cloud_metrics, namespace_of
from simulator.core.plan import (
    CLIENT_GW,
    CLIENT_IP,
    DNS_NAME,
    SERVER_GW,
    WorldPlan,
    backend_address,
    keepalive_sysctls,
    programs,
    world_plan,
)
from simulator.core.session import RunSession, TimelineEvent
from simulator.spec.compression import plan as make_plan
from simulator.spec.scenario import LINUX_KEEPALIVE_DEFAULTS, Scenario
from simulator.support import interrupts, results
from simulator.views.report import (
    RunResult,
    closing_line,
    format_event,
    header_record,
    header_text,
    result_document,
    styled_event,
    summary_text,
    write_result,
)
from simulator.world import topology
from simulator.world.backends import Backend, get_backend
from simulator.world.live import middlebox_config

READY_TIMEOUT = 15.0
STALL_AFTER = 5.0
"""Wall seconds without a heartbeat after which a middlebox counts as hung (it beats every
0.5 s from its own loop)."""
HOLD = 0.25
"""Wall seconds an event waits before printing, so that lines from three processes print in
model-time order."""

__all__ = ["RunError", "RunResult", "Runner", "run_scenario"]


class RunError(RuntimeError):
    """The run could not be carried out (not a verdict): a process failed to start, ..."""


def _ended(code: int | None) -> str:
    """How a process ended, from its return code."""
    return f"was killed by signal {-code}" if code is not None and code < 0 else \
        f"exited with status {code}"


class MiddleboxFailedError(Exception):
    """The middlebox died or hung before the run could start: the run is an ERROR (a
    verdict without a working middlebox would mean nothing), with its reason."""


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    stdout: IO[bytes]
    buffer: bytes = b""
    eof: bool = False
    stop: Callable[[], None] | None = None
    """How to ask the program to stop, when SIGTERM to ``popen`` would not reach it (a
    container's main process, whose log ``popen`` follows)."""
    messages: list[Message] = field(default_factory=list)

    def read(self) -> list[Message]:
        """Whatever complete lines are available now, as messages (never blocks)."""
        fd = self.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        fresh = [Message.from_line(raw, self.role) for raw in complete if raw.strip()]
        self.messages += fresh
        return fresh


class Runner:
    def __init__(self, scenario: Scenario, speed: float | None = None,
                 results_dir: Path | None = None, out: TextIO | None = None,
                 jsonl: bool = False) -> None:
        self.jsonl = jsonl
        """Machine-readable output: one JSON object per line (header, events, verdict)."""
        self.scenario = scenario
        self.plan = make_plan(scenario, speed)
        self.run_id = topology.new_run_id()
        self.backend: Backend = get_backend(scenario.backend, scenario.images)
        self.results_dir = results_dir or results.default_dir(scenario.name, self.run_id)
        self.folder: results.Folder | None = None
        """The results folder, held open once it is checked (:mod:`simulator.support.results`)."""
        self._logs: results.Folder | None = None
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty()
        # colours only for a person at a terminal; files and pipes get plain text
        self.console = Console(file=self.out, highlight=False) if self.tty else None
        self.procs: list[Proc] = []
        self.session = RunSession(self.plan.speed,
                                  (scenario.expect_client, scenario.expect_server),
                                  self.plan.prediction.outcome())
        self._status_shown = False
        self._last_print = time.monotonic()
        self._last_status = 0.0
        self._last_beat = time.monotonic()
        self._attach: tuple[float, topology.World] | None = None
        """When (monotonic) and where the client's interface is attached, until it is."""

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, role: str, ns: str, args: list[str], argv: list[str] | None = None,
               stop: Callable[[], None] | None = None) -> Proc:
        """Start ``python -m ARGS`` inside host ``ns`` (or exactly ``argv``), reading its
        JSON lines from a pipe."""
        command = argv if argv is not None else self.backend.command(ns, args)
        with self.logs().open(f"{role}.stderr", "wb") as stderr:
            popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                # the runner is single-threaded, so preexec_fn is safe here; it is the only
                # way to set PR_SET_PDEATHSIG in the child before it execs
                preexec_fn=interrupts.die_with_parent,  # noqa: PLW1509
                cwd=Path(__file__).resolve().parents[2])
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)
        proc = Proc(role, popen, popen.stdout, stop=stop)
        self.procs.append(proc)
        return proc

    def logs(self) -> results.Folder:
        if self._logs is None:
            assert self.folder is not None
            self._logs = self.folder.sub("logs")
        return self._logs

    def _log_tail(self, role: str, chars: int = 2000) -> str:
        return (self.logs().read_text(f"{role}.stderr") or "")[-chars:]

    def _wait_ready(self, proc: Proc) -> Message:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            interrupts.check()
            ready = None
            for msg in proc.read():
                if ready is not None:  # what it said right after (a client's first attempt)
                    self.session.feed(msg)
                elif msg.kind == Kind.READY:
                    ready = msg
            if ready is not None:
                return ready
            if proc.popen.poll() is not None:
                proc.read()
                break
            select.select([proc.stdout], [], [], 0.05)
        if proc.role == Role.MIDDLEBOX:
            code = proc.popen.poll()
            how = (_ended(code) if code is not None else
                   f"gave no 'ready' line within {READY_TIMEOUT:g} s (stopped or hung)")
            raise MiddleboxFailedError(f"the middlebox {how} before the run could start")
        log = self._log_tail(proc.role)
        raise RunError(f"the {proc.role} did not start (no 'ready' line within "
                       f"{READY_TIMEOUT:g} s). Its stderr ends with:\n{log}")

    def _stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                if proc.stop is not None:
                    with contextlib.suppress(Exception):  # already gone: nothing to stop
                        proc.stop()
                else:
                    proc.popen.send_signal(signal.SIGTERM)
        # Keep reading while they finish: a process blocked on a full pipe never exits.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.popen.poll() is None for p in self.procs):
            for proc in self.procs:
                self._take(proc)
            time.sleep(0.02)
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()

    def _take(self, proc: Proc) -> None:
        """Everything ``proc`` said since last time, into the session."""
        for msg in proc.read():
            if msg.kind == Kind.HEARTBEAT:
                self._last_beat = time.monotonic()
                continue
            backend = proc.role.startswith(Role.SERVER) and proc.role != Role.SERVER
            # which backend said it
            self.session.feed(msg.with_source(proc.role) if backend else msg)

    # -- the live timeline ----------------------------------------------------------------

    def _print(self, events: list[TimelineEvent]) -> None:
        if not events:
            return
        self._clear_status()
        for ev in events:
            if self.jsonl:
                self.out.write(json.dumps(ev.to_dict()) + "\n")
            elif self.console is not None:
                self.console.print(styled_event(ev), soft_wrap=True)
            else:
                self.out.write(format_event(ev) + "\n")
        self.out.flush()
        self._last_print = time.monotonic()
        self._last_status = 0.0

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    def _status(self) -> None:
        model_now = self.session.model_now(time.monotonic())
        if self.jsonl or model_now is None or time.monotonic() - self._last_status < 0.2:
            return
        self._last_status = time.monotonic()
        s = self.scenario
        limit = self.plan.client_timeout.model + s.backoff * (2 ** s.retries - 1)
        text = (f"  ... model {model_now:6.0f} s of up to {limit:g} s "
                f"(wall {model_now / self.plan.speed:5.1f} s, speed {self.plan.speed:g})")
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
            self._status_shown = True
        elif time.monotonic() - self._last_print > 5.0:
            self.out.write(text + "\n")
            self.out.flush()
            self._last_print = time.monotonic()

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        s, _p = self.scenario, self.plan
        if s.proxy is not None and shutil.which(s.proxy) is None:
            raise RunError(f"{s.name} runs a real {s.proxy}, which is not installed: "
                           f"apt-get install {s.proxy}")
        self.folder = results.Folder.create(self.results_dir)
        self.results_dir = self.folder.path
        try:
            return self._run()
        finally:
            if self._logs is not None:
                self._logs.close()
            self.folder.close()

    def _run(self) -> RunResult:
        s, p = self.scenario, self.plan
        assert self.folder is not None
        started = time.monotonic()
        if self.jsonl:
            self.out.write(json.dumps(header_record(s, p, self.run_id)) + "\n")
        else:
            self.out.write(header_text(s, p, self.run_id))
        self.out.flush()
        with interrupts.handled():
            try:
                interrupts.check()  # one swallowed while natsim was starting up
                world = self.backend.build(self._world_plan(), self.results_dir)
                interrupts.check()
                try:
                    self._start(world)
                except MiddleboxFailedError as exc:
                    self.session.middlebox_failed(str(exc), self._middlebox_stderr())
                else:
                    interrupts.check()
                    self._watch()
            finally:
                try:
                    self._stop_all()
                    for proc in self.procs:
                        self._take(proc)
                        proc.stdout.close()
                finally:
                    self.backend.destroy(self.run_id)
        self._final_report()
        self._print(self.session.release_all())
        return self._finish(time.monotonic() - started)

    def _world_plan(self) -> WorldPlan:
        s, p = self.scenario, self.plan
        chain = s.chain or (s.appliance,)
        self.world_plan = world_plan(
            self.run_id, p.wall_sysctls(), max(a.backends for a in chain),
            next((a.vip for a in chain if a.backends > 1), None),
            s.load.addresses if s.load else 1,
            server_sysctls=keepalive_sysctls(LINUX_KEEPALIVE_DEFAULTS, p.speed),
            nameserver=backend_address(0)[0] if s.attach is not None else None,
            front=CLIENT_GW if s.proxy is not None else None)
        return self.world_plan

    def _start_proxy(self, world: topology.World) -> None:
        """The L4-proxy contrast: HAProxy and its watcher where the dataplane would be."""
        s, p = self.scenario, self.plan
        topology.give_addresses(world.mbox_ns, {"inside": CLIENT_GW, "outside": SERVER_GW})
        cfg = {"speed": p.speed, "timeout": s.appliance.tcp_idle_timeout, "port": s.server_port,
               "front": CLIENT_GW, "back": world.backends[0].ip, "back_self": SERVER_GW,
               "client": CLIENT_IP, "haproxy_cfg": str(self.results_dir / "haproxy.cfg"),
               "pcap": str(self.results_dir / "capture.pcap")}
        proxy = self._spawn(Role.MIDDLEBOX, world.mbox_ns,
                            ["simulator.dataplane.proxy", "--config", json.dumps(cfg)])
        ready = self._wait_ready(proxy)
        self.session.middlebox_ready(float(ready.data["origin"]))
        self._last_beat = time.monotonic()

    def _start(self, world: topology.World) -> None:
        p, s = self.plan, self.scenario
        if s.proxy is not None:
            self._start_proxy(world)
            progs = programs(s, p)
            server = self._spawn(Role.SERVER, world.backends[0].ns, progs.server)
            self._wait_ready(server)
            self._spawn(Role.CLIENT, world.client_ns, progs.client)
            return
        chain = [a.with_overrides({"backend_ips": [b.ip for b in world.backends]})
                 if a.backends > 1 else a for a in s.chain or (s.appliance,)]
        # a capacity run's capture would hold every handshake of thousands of connections
        pcap = None if s.load is not None else self.results_dir / "capture.pcap"
        mbox_cfg = middlebox_config(world, chain, p.speed, pcap, None,
                                    self.results_dir / "metrics.jsonl",
                                    sample_every=max(0.5, p.client_timeout.model / 200))
        mbox_cfg["heartbeat"] = True
        mbox_cfg["path_events"] = [e.to_record() for e in s.events if not e.on_host]
        argv, stop = self.backend.middlebox(world, mbox_cfg, self.results_dir / "middlebox.json")
        mbox = self._spawn(Role.MIDDLEBOX, world.mbox_ns, [], argv, stop)
        ready = self._wait_ready(mbox)
        self.session.middlebox_ready(float(ready.data["origin"]))
        self._last_beat = time.monotonic()
        progs = programs(s, p)
        for i, backend in enumerate(world.backends):
            server = self._spawn("server" if i == 0 else f"server{i}", backend.ns, progs.server)
            self._wait_ready(server)
        attach = s.attach
        if attach is None:
            self._spawn(Role.CLIENT, world.client_ns, progs.client)
            return
        # seed 002: the client starts with no network; its interface comes at attach.at
        server_name = next((a.vip for a in s.chain or (s.appliance,) if a.backends > 1),
                           world.backends[0].ip)
        dns = self._spawn(Role.DNS, world.backends[0].ns,
                          ["simulator.workloads.dns", "--config",
                           json.dumps({"names": {DNS_NAME: server_name}})])
        self._wait_ready(dns)
        topology.set_client_link(world.client_ns, self.world_plan.client,
                                 world.mbox_inside_mac, attached=False)
        client = self._spawn(Role.CLIENT, world.client_ns, progs.client)
        started = self._wait_ready(client)
        assert started.mono is not None
        self.session.pin_zero(started.mono)
        self._attach = (started.mono + attach.at / p.speed, world)

    def _attach_due(self) -> None:
        """Bring the client's interface up when its time has come (a late attach)."""
        if self._attach is None or time.monotonic() < self._attach[0]:
            return
        world = self._attach[1]
        self._attach = None
        topology.set_client_link(world.client_ns, self.world_plan.client,
                                 world.mbox_inside_mac, attached=True)
        self.session.feed(Message(Role.PATH, EventKind.PATH_EVENT,
                                  "the client's network interface is attached (link up, "
                                  "routes and neighbour in place)", mono=time.monotonic(),
                                  data={"path_event": "attach"}))

    def _watch(self) -> None:
        """Until client and server have both finished (bounded by their own limits), or the
        middlebox can no longer be trusted."""
        workloads = [proc for proc in self.procs if proc.role not in (Role.MIDDLEBOX, Role.DNS)]
        limit = time.monotonic() + programs(self.scenario, self.plan).wall_limit
        while time.monotonic() < limit:
            interrupts.check()
            self._attach_due()
            for proc in self.procs:
                self._take(proc)
            self._print(self.session.release(time.monotonic(), HOLD))
            finished = all(proc.popen.poll() is not None for proc in workloads)
            if finished:
                for proc in workloads:
                    self._take(proc)
            trouble = self._middlebox_trouble()
            if trouble is not None:
                self.session.middlebox_failed(trouble, self._middlebox_stderr())
                return
            if finished:
                return
            self._status()
            # a pipe at end-of-file is always "readable": leave those out, or this spins
            wait = 0.1 if self._attach is None else min(0.1, max(0.0, self._attach[0]
                                                                 - time.monotonic()))
            select.select([p.stdout for p in self.procs if not p.eof], [], [], wait)
        raise RunError("the client and server did not finish within their own time limits")

    def _final_report(self) -> None:
        """No verdict without the middlebox's own last word: asked to stop at the end, it
        reports its final counters; one that cannot (stopped, hung, killed in the last
        seconds, before the heartbeat check could tell) makes the run an ERROR."""
        mbox = next((p for p in self.procs if p.role == Role.MIDDLEBOX), None)
        if mbox is None or self.session.error is not None or self.session.middlebox_final:
            return
        code = mbox.popen.returncode
        # _stop_all kills with SIGKILL a middlebox that does not stop when asked
        how = ("did not answer the request to stop (stopped or hung), and was killed"
               if code == -signal.SIGKILL else _ended(code))
        self.session.middlebox_failed(f"the middlebox gave no final report at the end of the "
                                      f"run: it {how}", self._middlebox_stderr())

    def _middlebox_trouble(self) -> str | None:
        """Why the middlebox can no longer be trusted (exited, or its loop stopped beating),
        or None while it is alive and well."""
        mbox = next((p for p in self.procs if p.role == Role.MIDDLEBOX), None)
        if mbox is None:
            return None
        self._take(mbox)
        code = mbox.popen.poll()
        if code is not None:
            how = _ended(code)
            return f"the middlebox {how} during the run"
        silent = time.monotonic() - self._last_beat
        if silent > STALL_AFTER:
            return f"the middlebox stopped responding (no heartbeat for {silent:.1f} s wall)"
        return None

    def _middlebox_stderr(self, lines: int = 12) -> list[str]:
        text = self._log_tail(Role.MIDDLEBOX, 64_000)
        return text.strip().splitlines()[-lines:]

    def _metrics(self) -> dict[str, Any]:
        """The sampled counters, renamed for the cloud namespace, on the report's time axis."""
        name = self.scenario.appliance.name
        assert self.folder is not None
        text = self.folder.read_text("metrics.jsonl")
        samples = []
        if text and self.session.started:
            for raw in text.splitlines():
                line = json.loads(raw)
                t = self.session.timebase.model(Message(Role.MIDDLEBOX, "", t=line["t"]))
                samples.append({"t": round(t, 3), **cloud_metrics(name, line["counters"])})
        return {"namespace": namespace_of(name), "samples": samples}

    def _finish(self, wall: float) -> RunResult:
        s, p, session = self.scenario, self.plan, self.session
        events = sorted(session.timeline, key=lambda e: e.t)
        result = RunResult(s, p, self.results_dir, session.judge(), events, session.counters,
                           wall)
        from simulator.views.timeline import (  # noqa: PLC0415 (matplotlib: 0.5 s)
            draw,
            draw_ladder,
            draw_metrics,
        )

        out = self.folder
        assert out is not None
        pictures = draw(events, s.appliance.tcp_idle_timeout, p.speed,
                        f"{s.name}: {s.description}", out, "timeline")
        if s.load is None:  # a ladder of 55,000 connections would be a wall
            pictures += draw_ladder(events, s.appliance.tcp_idle_timeout,
                                    f"{s.name}: {s.description}", out, "ladder")
        metrics = self._metrics()
        if metrics["samples"]:
            pictures += draw_metrics(metrics["samples"], metrics["namespace"], p.speed, s.name,
                                     out, "metrics")
        write_result(out, result_document(session, s, p, self.run_id, wall, metrics))
        if self.jsonl:
            self.out.write(json.dumps({
                "kind": "verdict", "verdict": result.verdict, "error": result.error,
                "client": result.client, "server": result.server,
                "model_agrees": result.judgement.model_agrees, "story": p.prediction.story,
                "results": str(self.results_dir), "wall_seconds": round(wall, 3)}) + "\n")
            self.out.flush()
            return result
        self.out.write(summary_text(result, [pic.name for pic in pictures],
                                    session.error_detail))
        closing = closing_line(result)
        if self.console is not None:
            self.console.print(closing, style="bold green" if result.passed else "bold red")
        else:
            self.out.write(closing + "\n")
        self.out.flush()
        return result


def run_scenario(scenario: Scenario, speed: float | None = None,
                 results_dir: Path | None = None, out: TextIO | None = None,
                 jsonl: bool = False) -> RunResult:
    return Runner(scenario, speed, results_dir, out, jsonl).run()
