"""Running a scenario: build the world, start the processes, watch, judge, tear down.

The order matters and is always the same: namespaces, then the middlebox (waits until its
sockets are bound), then the server (waits until it listens), then the client. The runner
reads every process's JSON lines as they come and prints them as a timeline in model time,
with a progress line while nothing happens (a compressed 900-second wait is still half a
minute of silence). Whatever happens -- success, an exception, Ctrl-C, SIGTERM -- the
``finally`` clause kills the processes and removes the namespaces; each child also gets
``PR_SET_PDEATHSIG`` so that it dies with the runner if the runner is killed outright, and
``natsim cleanup`` removes what such a crash leaves.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from rich.console import Console

from simulator import interrupts, results, topology
from simulator.backends import Backend, get_backend
from simulator.core.metrics import cloud_metrics, namespace_of
from simulator.report import (
    TIMELINE_HEADER,
    Timebase,
    TimelineEvent,
    format_event,
    print_settings,
    styled_event,
    write_result,
)
from simulator.scenario import Plan, Scenario
from simulator.scenario import plan as make_plan
from simulator.world import appliance_overrides, middlebox_config

READY_TIMEOUT = 15.0
STALL_AFTER = 5.0
"""Wall seconds without a heartbeat after which a middlebox counts as hung (it beats every
0.5 s from its own loop)."""
HOLD = 0.25
"""Wall seconds an event waits before printing, so that lines from three processes print in
model-time order."""

_PR_SET_PDEATHSIG = 1


class RunError(RuntimeError):
    """The run could not be carried out (not a verdict): a process failed to start, ..."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    stdout: IO[bytes]
    buffer: bytes = b""
    lines: list[dict[str, Any]] = field(default_factory=list)
    eof: bool = False
    stop: Callable[[], None] | None = None
    """How to ask the program to stop, when SIGTERM to ``popen`` would not reach it (a
    container's main process, whose log ``popen`` follows)."""

    def read_lines(self) -> list[dict[str, Any]]:
        """Whatever complete JSON lines are available now (never blocks)."""
        fresh: list[dict[str, Any]] = []
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
        for raw in complete:
            if raw.strip():
                try:
                    fresh.append(json.loads(raw))
                except json.JSONDecodeError:
                    fresh.append({"source": self.role, "kind": "output",
                                  "text": raw.decode(errors="replace")})
        self.lines += fresh
        return fresh


@dataclass
class RunResult:
    scenario: Scenario
    plan: Plan
    results_dir: Path
    client: str
    server: str
    events: list[TimelineEvent]
    counters: dict[str, int]
    wall_seconds: float
    error: str | None = None
    """Why the run has no verdict (the middlebox died or hung): then it is an ERROR, never
    a PASS or FAIL, whatever the client and server said."""

    @property
    def passed(self) -> bool:
        return self.error is None and (self.client, self.server) == (
            self.scenario.expect_client, self.scenario.expect_server)

    @property
    def verdict(self) -> str:
        return "ERROR" if self.error is not None else "PASS" if self.passed else "FAIL"

    def kinds(self, source: str) -> list[str]:
        return [e.kind for e in self.events if e.source == source]


def default_results_dir(name: str, run_id: str) -> Path:
    return results.default_dir(name, run_id)


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
        self.results_dir = results_dir or default_results_dir(scenario.name, self.run_id)
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty()
        # colours only for a person at a terminal; files and pipes get plain text
        self.console = Console(file=self.out, highlight=False) if self.tty else None
        self.procs: list[Proc] = []
        self.timebase = Timebase(self.plan.speed)
        self._pending: list[dict[str, Any]] = []
        self._printed: list[TimelineEvent] = []
        self._status_shown = False
        self._last_print = time.monotonic()
        self._last_status = 0.0
        self._last_beat = time.monotonic()
        self.middlebox_error: str | None = None

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, role: str, ns: str, args: list[str], argv: list[str] | None = None,
               stop: Callable[[], None] | None = None) -> Proc:
        """Start ``python -m ARGS`` inside host ``ns`` (or exactly ``argv``), reading its
        JSON lines from a pipe."""
        command = argv if argv is not None else self.backend.command(ns, args)
        logs = self.results_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with (logs / f"{role}.stderr").open("wb") as stderr:
            popen = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                # the runner is single-threaded, so preexec_fn is safe here; it is the only
                # way to set PR_SET_PDEATHSIG in the child before it execs
                preexec_fn=_die_with_parent,  # noqa: PLW1509
                cwd=Path(__file__).resolve().parent.parent)
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)
        proc = Proc(role, popen, popen.stdout, stop=stop)
        self.procs.append(proc)
        return proc

    def _wait_ready(self, proc: Proc, kind: str) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            interrupts.check()
            for line in proc.read_lines():
                if line.get("kind") == kind:
                    return line
            if proc.popen.poll() is not None:
                proc.read_lines()
                break
            select.select([proc.stdout], [], [], 0.05)
        log = (self.results_dir / "logs" / f"{proc.role}.stderr").read_text()[-2000:]
        raise RunError(f"the {proc.role} did not start (no '{kind}' line within "
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

    # -- live timeline --------------------------------------------------------------------

    def _take(self, proc: Proc) -> None:
        for line in proc.read_lines():
            if line.get("kind") == "heartbeat":
                self._last_beat = time.monotonic()
                continue
            if line.get("kind") in ("ready", "stopped"):
                continue
            if proc.role.startswith("server") and proc.role != "server":
                line["source"] = proc.role  # which backend said it
            if line.get("source") == "client" and line.get("kind") in ("request_sent",
                                                                      "load_start"):
                self.timebase.t0 = float(line["mono"])
            self._pending.append(line)

    def _release(self, everything: bool = False) -> None:
        """Print the held events whose time is at least HOLD wall seconds old, in order.

        Lines from three processes arrive through three pipes; holding each one until its
        own timestamp is HOLD old lets a slightly later line with an earlier time go first.
        """
        if self.timebase.t0 is None:
            if not everything:
                return
            # the client never sent its request: start the axis at the first line
            self.timebase.t0 = min((float(line["mono"]) for line in self._pending
                                    if "mono" in line), default=time.monotonic())
        cutoff = (time.monotonic() - HOLD - self.timebase.t0) * self.plan.speed
        events, keep = [], []
        for line in self._pending:
            t = self.timebase.model(line)
            if everything or t <= cutoff:
                events.append(TimelineEvent(t, self.timebase.wall(t), str(line.get("source")),
                                            str(line.get("kind", "")), str(line.get("text", "")),
                                            line))
            else:
                keep.append(line)
        self._pending = keep
        if not events:
            return
        events.sort(key=lambda e: e.t)
        self._clear_status()
        for ev in events:
            if ev.kind != "outcome":
                if self.jsonl:
                    self.out.write(json.dumps(ev.to_dict()) + "\n")
                elif self.console is not None:
                    self.console.print(styled_event(ev), soft_wrap=True)
                else:
                    self.out.write(format_event(ev) + "\n")
        self.out.flush()
        self._printed += events
        self._last_print = time.monotonic()
        self._last_status = 0.0

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    def _status(self) -> None:
        if (self.jsonl or self.timebase.t0 is None
                or time.monotonic() - self._last_status < 0.2):
            return
        self._last_status = time.monotonic()
        model_now = (time.monotonic() - self.timebase.t0) * self.plan.speed
        limit = self.plan.client_timeout.model
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
        self.results_dir = results.prepare(self.results_dir)
        started = time.monotonic()
        self._header()
        with interrupts.handled():
            try:
                interrupts.check()  # one swallowed while natsim was starting up
                backends = max(a.backends for a in self.scenario.chain or
                               (self.scenario.appliance,))
                vip = next((a.vip for a in self.scenario.chain if a.backends > 1), None)
                addresses = self.scenario.load.addresses if self.scenario.load else 1
                world = self.backend.build(self.run_id, self._wall_sysctls(), backends, vip,
                                           addresses, self.results_dir)
                interrupts.check()
                self._start(world)
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
        self._release(everything=True)
        return self._finish(time.monotonic() - started)

    def _wall_sysctls(self) -> dict[str, int]:
        out = {}
        for key, value in self.plan.sysctls.items():
            out[key] = value if isinstance(value, int) else int(value.wall)
        return out

    def _start(self, world: topology.World) -> None:
        p, s = self.plan, self.scenario
        chain = [a.with_overrides({"backend_ips": [b.ip for b in world.backends]})
                 if a.backends > 1 else a for a in s.chain or (s.appliance,)]
        # a capacity run's capture would hold every handshake of thousands of connections
        pcap = None if s.load is not None else self.results_dir / "capture.pcap"
        mbox_cfg = middlebox_config(world, chain, p.speed, pcap, None,
                                    self.results_dir / "metrics.jsonl",
                                    sample_every=max(0.5, p.client_timeout.model / 200))
        mbox_cfg["heartbeat"] = True
        argv, stop = self.backend.middlebox(world, mbox_cfg, self.results_dir / "middlebox.json")
        mbox = self._spawn("middlebox", world.mbox_ns, [], argv, stop)
        ready = self._wait_ready(mbox, "ready")
        self.timebase.mbox_origin = float(ready["origin"])
        self._last_beat = time.monotonic()

        answer_after = p.server_delay.wall
        if s.load is not None:
            server_args = ["simulator.workloads.load", "server", "--config", json.dumps(
                {"port": s.server_port, "expected": s.load.connections,
                 "duration": self._load_wall() + 3.0})]
            client_args = ["simulator.workloads.load", "client", "--config", json.dumps(
                {"host": "server", "port": s.server_port, "connections": s.load.connections,
                 "rate": s.load.rate, "hold": s.load.hold / p.speed,
                 "connect_timeout": s.load.connect_timeout / p.speed,
                 "addresses": [topology.client_address(i) for i in range(s.load.addresses)]})]
        elif s.protocol == "udp":
            server_args = ["simulator.workloads.udp", "server", "--config", json.dumps(
                {"port": s.server_port, "delay": answer_after,
                 "delay_label": f"{s.server_delay:g} s",
                 "wait_limit": p.client_timeout.wall + 1.0})]
            client_args = ["simulator.workloads.udp", "client", "--config", json.dumps(
                {"host": "server", "port": s.server_port, "timeout": p.client_timeout.wall,
                 "heartbeat": p.heartbeat.wall if p.heartbeat is not None else None})]
        else:
            server_args = ["simulator.workloads.server", "--config", json.dumps(
                {"port": s.server_port, "delay": answer_after,
                 "delay_label": f"{s.server_delay:g} s",
                 "answer": "HTTP/1.1 200 OK (the slow answer)",
                 "wait_limit": max(1.0, p.client_timeout.wall - answer_after + 1.0)})]
            client_cfg: dict[str, Any] = {"host": "server", "port": s.server_port,
                                          "request": s.request,
                                          "timeout": p.client_timeout.wall,
                                          "keepalive": s.keepalive.mode}
            if p.keepalive_idle is not None and p.keepalive_interval is not None:
                client_cfg.update(idle=int(p.keepalive_idle.wall),
                                  interval=int(p.keepalive_interval.wall),
                                  count=p.keepalive_count)
            client_args = ["simulator.workloads.client", "--config", json.dumps(client_cfg)]
        for i, backend in enumerate(world.backends):
            server = self._spawn("server" if i == 0 else f"server{i}", backend.ns, server_args)
            self._wait_ready(server, "ready")
        self._spawn("client", world.client_ns, client_args)

    def _load_wall(self) -> float:
        """Wall seconds a load scenario's client runs: opening at its wall-clock rate, then
        the compressed connect timeout and hold."""
        load = self.scenario.load
        assert load is not None
        return load.connections / load.rate + (load.connect_timeout + load.hold) / \
            self.plan.speed

    def _watch(self) -> None:
        """Until client and server have both finished (bounded by their own limits)."""
        workloads = [proc for proc in self.procs if proc.role != "middlebox"]
        limit = time.monotonic() + 15.0 + (self._load_wall() if self.scenario.load is not None
                                           else self.plan.client_timeout.wall)
        while time.monotonic() < limit:
            interrupts.check()
            for proc in self.procs:
                self._take(proc)
            self._release()
            self.middlebox_error = self._middlebox_trouble()
            if self.middlebox_error is not None:
                return
            if all(proc.popen.poll() is not None for proc in workloads):
                for proc in workloads:
                    self._take(proc)
                self.middlebox_error = self._middlebox_trouble()
                return
            self._status()
            # a pipe at end-of-file is always "readable": leave those out, or this spins
            select.select([p.stdout for p in self.procs if not p.eof], [], [], 0.1)
        raise RunError("the client and server did not finish within their own time limits")

    def _middlebox_trouble(self) -> str | None:
        """Why the middlebox can no longer be trusted (exited, or its loop stopped beating),
        or None while it is alive and well."""
        mbox = next((p for p in self.procs if p.role == "middlebox"), None)
        if mbox is None:
            return None
        self._take(mbox)
        code = mbox.popen.poll()
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            return f"the middlebox {how} during the run"
        silent = time.monotonic() - self._last_beat
        if silent > STALL_AFTER:
            return f"the middlebox stopped responding (no heartbeat for {silent:.1f} s wall)"
        return None

    def _middlebox_stderr(self, lines: int = 12) -> list[str]:
        path = self.results_dir / "logs" / "middlebox.stderr"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return []
        return text.strip().splitlines()[-lines:]

    def _header(self) -> None:
        s, p = self.scenario, self.plan
        w = self.out.write
        if self.jsonl:
            w(json.dumps({"kind": "header", "scenario": s.name, "run_id": self.run_id,
                          "speed": p.speed, "description": s.description,
                          "settings": p.settings(),
                          "expected": {"client": s.expect_client, "server": s.expect_server}})
              + "\n")
            self.out.flush()
            return
        w(f"natsim: scenario {s.name} ({s.source}) - run {self.run_id}\n")
        if s.description:
            w(f"  {s.description}\n")
        for a in s.chain or (s.appliance,):
            w(f"  appliance: {a.title} (idle timeout {a.tcp_idle_timeout:g} s, "
              f"late packet from client: {a.late_from_inside}, "
              f"from server: {a.late_from_outside}"
              f"{', RST to both ends at expiry' if a.on_expiry == 'rst_both' else ''})\n")
        w(f"  speed {p.speed:g}: 1 wall second = {p.speed:g} model seconds\n")
        print_settings(self.out, p.settings())
        for note in p.notes:
            w(f"  note: {note}\n")
        w(f"  expected: client {s.expect_client}, server {s.expect_server}\n\n")
        w(TIMELINE_HEADER + "\n")
        self.out.flush()

    def _outcome(self, role: str) -> str:
        """What the client (or the server that got the connection) reported."""
        outcomes = [str(line["outcome"]) for proc in self.procs
                    if proc.role == role or (role == "server" and proc.role.startswith(role))
                    for line in proc.lines if line.get("kind") == "outcome"]
        served = [o for o in outcomes if o not in ("no_client", "no_request")]
        if served or outcomes:
            return (served or outcomes)[0]
        return "no outcome (process did not report one)"

    def _metrics(self) -> tuple[str, list[dict[str, Any]]]:
        """The sampled counters, renamed for the cloud namespace, on the report's time axis."""
        name = self.scenario.appliance.name
        path = self.results_dir / "metrics.jsonl"
        samples = []
        if path.exists() and self.timebase.t0 is not None:
            for raw in path.read_text().splitlines():
                line = json.loads(raw)
                t = self.timebase.model({"source": "middlebox", "t": line["t"]})
                samples.append({"t": round(t, 3), **cloud_metrics(name, line["counters"])})
        return namespace_of(name), samples

    def _finish(self, wall: float) -> RunResult:
        events = sorted(self._printed, key=lambda e: e.t)
        counters: dict[str, int] = {}
        for proc in self.procs:
            for line in proc.lines:
                if line.get("kind") == "stopped":
                    counters = dict(line.get("counters", {}))
        result = RunResult(self.scenario, self.plan, self.results_dir, self._outcome("client"),
                           self._outcome("server"), events, counters, wall,
                           self.middlebox_error)
        last_error = self._middlebox_stderr() if result.error is not None else []
        s, pred = self.scenario, self.plan.prediction
        from simulator.timeline import draw, draw_metrics  # noqa: PLC0415 (matplotlib: 0.5 s)

        pictures = draw(events, s.appliance.tcp_idle_timeout, self.plan.speed,
                        f"{s.name}: {s.description}", self.results_dir / "timeline")
        namespace, samples = self._metrics()
        if samples:
            pictures += draw_metrics(samples, namespace, self.plan.speed, s.name,
                                     self.results_dir / "metrics")
        write_result(self.results_dir / "result.json", {
            "scenario": s.name,
            "source": s.source,
            "run_id": self.run_id,
            "speed": self.plan.speed,
            "appliance": {"name": s.appliance.name, "title": s.appliance.title,
                          **appliance_overrides(s.appliance)},
            "path": [a.name for a in s.chain or (s.appliance,)],
            "settings": self.plan.settings(),
            "expected": {"client": s.expect_client, "server": s.expect_server},
            "outcome": {"client": result.client, "server": result.server},
            "predicted": {"client": pred.client, "server": pred.server,
                          "expires_at": pred.expires_at, "story": pred.story},
            "verdict": result.verdict,
            "middlebox": {"healthy": result.error is None, "error": result.error,
                          "stderr_tail": last_error},
            "wall_seconds": round(wall, 3),
            "counters": counters,
            "metrics": {"namespace": namespace, "samples": samples},
            "events": [e.to_dict() for e in events],
        })
        w = self.out.write
        if self.jsonl:
            w(json.dumps({"kind": "verdict", "verdict": result.verdict, "error": result.error,
                          "client": result.client, "server": result.server,
                          "story": pred.story, "results": str(self.results_dir),
                          "wall_seconds": round(wall, 3)}) + "\n")
            self.out.flush()
            return result
        w("\n")
        w(f"  client: {result.client:<16} (expected {s.expect_client})\n")
        w(f"  server: {result.server:<16} (expected {s.expect_server})\n")
        interesting = ["IdleTimeoutCount", "RstSent", "PacketsDropCount", "KeepaliveProbes"]
        interesting += [k for k in ("ApplianceKeepalives", "ErrorPortAllocation",
                                    "RejectedConnectionCount") if k in counters]
        w("  middlebox: " + ", ".join(f"{k} {counters.get(k, 0)}" for k in interesting) + "\n")
        w("  why (the analytic model): " + "; ".join(pred.story) + "\n")
        w(f"  results: {self.results_dir}/ (result.json, capture.pcap, "
          f"{', '.join(p.name for p in pictures)}, logs/)\n")
        if result.error is not None:
            w(f"  {result.error}; its stderr ends with:\n")
            for text in last_error or ["(nothing)"]:
                w(f"    {text}\n")
            closing = (f"ERROR: no verdict: {result.error} (logs/middlebox.stderr; "
                       f"{wall:.1f} s wall)")
        else:
            closing = (f"{result.verdict}: "
                       f"{'outcome as expected' if result.passed else 'outcome differs'} "
                       f"({wall:.1f} s wall)")
        if self.console is not None:
            self.console.print(closing, style="bold green" if result.passed else "bold red")
        else:
            w(closing + "\n")
        self.out.flush()
        return result


def run_scenario(scenario: Scenario, speed: float | None = None,
                 results_dir: Path | None = None, out: TextIO | None = None,
                 jsonl: bool = False) -> RunResult:
    return Runner(scenario, speed, results_dir, out, jsonl).run()
