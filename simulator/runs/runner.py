"""Running a scenario: the world driver, the scenario's script, and a verdict.

The world is planned purely (:mod:`simulator.core.plan`), and the one world driver
(:mod:`simulator.world.driver`) applies it on a backend and starts the programs in its
order -- the middlebox (until its sockets are bound), the servers (until they listen), then
the client. The runner adds what makes it a scenario: the programs' typed configurations,
a late attach when the scenario has one, every message fed to the run's
:class:`~simulator.core.session.RunSession` (which owns the timeline, the outcomes and the
verdict), the middlebox's liveness turned into an ERROR run, a progress line while nothing
happens, pictures and files.

Whatever happens -- success, an exception, Ctrl-C, SIGTERM -- the ``finally`` clause kills
the processes and removes the world; each child also gets ``PR_SET_PDEATHSIG`` so that it
dies with the runner if the runner is killed outright, and ``natsim cleanup`` removes what
such a crash leaves.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import TextIO

from rich.console import Console

from simulator.core.configs import DnsConfig, ProxyConfig
from simulator.core.events import EventKind
from simulator.core.jsonvalue import JsonObject, JsonShapeError
from simulator.core.messages import Kind, Message, MiddleboxReady, Role
from simulator.core.metrics import cloud_metrics, namespace_of
from simulator.core.plan import (
    CLIENT_GW,
    CLIENT_IP,
    DNS_NAME,
    SERVER_GW,
    WorldPlan,
    backend_address,
    keepalive_sysctls,
    middlebox_config,
    programs,
    resolves_over_dns,
    world_plan,
)
from simulator.core.session import RunSession, TimelineEvent
from simulator.spec.compression import plan as make_plan
from simulator.spec.scenario import LINUX_KEEPALIVE_DEFAULTS, Scenario
from simulator.support import interrupts, pcap, results
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
from simulator.views.run_page import write_run_page
from simulator.world import topology
from simulator.world.backends import Backend, get_backend
from simulator.world.driver import MiddleboxFailedError, WorldDriver
from simulator.world.process import ended

HOLD = 0.25
"""Wall seconds an event waits before printing, so that lines from three processes print in
model-time order."""

SERVER_GRACE = 0.3
"""Wall seconds a pool server keeps watching after the client finished, before it is
stopped: the client's kernel acknowledges an answer within a round trip."""

__all__ = ["RunError", "RunResult", "Runner", "run_scenario"]


class RunError(RuntimeError):
    """The run could not be carried out (not a verdict): the programs did not finish..."""


class Runner:
    def __init__(self, scenario: Scenario, speed: float | None = None,
                 results_dir: Path | None = None, out: TextIO | None = None,
                 jsonl: bool = False, backend: Backend | None = None,
                 pictures: bool = True) -> None:
        self.jsonl = jsonl
        """Machine-readable output: one JSON object per line (header, events, verdict)."""
        self.scenario = scenario
        self.plan = make_plan(scenario, speed)
        self.run_id = topology.new_run_id()
        self.backend: Backend = backend or get_backend(scenario.backend, scenario.images)
        self.pictures = pictures
        self.results_dir = results_dir or results.default_dir(scenario.name, self.run_id)
        self.folder: results.Folder | None = None
        """The results folder, held open once it is checked (:mod:`simulator.support.results`)."""
        self.driver: WorldDriver | None = None
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty()
        # colours only for a person at a terminal; files and pipes get plain text
        self.console = Console(file=self.out, highlight=False) if self.tty else None
        self.session = RunSession(self.plan.speed,
                                  (scenario.expect_client, scenario.expect_server),
                                  self.plan.prediction.outcome())
        self._status_shown = False
        self._last_print = 0.0
        self._last_status = 0.0
        self._attach_at: float | None = None
        """When (the backend's clock) the client's interface is attached, until it is."""

    def _now(self) -> float:
        assert self.driver is not None
        return self.driver.now()

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
        self._last_print = self._now()
        self._last_status = 0.0

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    def _status(self) -> None:
        now = self._now()
        model_now = self.session.model_now(now)
        if self.jsonl or model_now is None or now - self._last_status < 0.2:
            return
        self._last_status = now
        s = self.scenario
        limit = self.plan.client_timeout.model + s.backoff * (2 ** s.retries - 1) + (
            s.requests[-1] if s.scripted else 0.0)
        text = (f"  ... model {model_now:6.0f} s of up to {limit:g} s "
                f"(wall {model_now / self.plan.speed:5.1f} s, speed {self.plan.speed:g})")
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
            self._status_shown = True
        elif now - self._last_print > 5.0:
            self.out.write(text + "\n")
            self.out.flush()
            self._last_print = now

    # -- the run --------------------------------------------------------------------------

    def run(self) -> RunResult:
        s = self.scenario
        if s.proxy is not None and shutil.which(s.proxy) is None:
            raise RunError(f"{s.name} runs a real {s.proxy}, which is not installed: "
                           f"apt-get install {s.proxy}")
        missing = topology.missing_retransmission_sysctls() \
            if self.plan.retransmission is not None and self.backend.name == "namespaces" \
            else []
        if missing:
            raise RunError(
                f"{s.name} needs {missing[0]} (Linux 6.15 and later) to compress the "
                "kernel's retransmission timer; without it the request would be retransmitted "
                "on the real clock (a 924 s give-up in 924 wall seconds): run it on a newer "
                "kernel.")
        self.folder = results.Folder.create(self.results_dir)
        self.results_dir = self.folder.path
        self.driver = WorldDriver(self.backend, self.folder)
        try:
            return self._run()
        finally:
            self.driver.destroy()  # its logs folder (the world is gone already)
            self.folder.close()

    def _run(self) -> RunResult:
        s, p, driver = self.scenario, self.plan, self.driver
        assert self.folder is not None and driver is not None
        started = driver.now()
        if self.jsonl:
            self.out.write(json.dumps(header_record(s, p, self.run_id)) + "\n")
        else:
            self.out.write(header_text(s, p, self.run_id))
        self.out.flush()
        with interrupts.handled():
            try:
                interrupts.check()  # one swallowed while natsim was starting up
                driver.build(self._world_plan())
                interrupts.check()
                try:
                    self._start()
                except MiddleboxFailedError as exc:
                    self.session.middlebox_failed(str(exc), self._middlebox_stderr())
                else:
                    interrupts.check()
                    self._watch()
            finally:
                try:
                    for program, msg in driver.stop_all():
                        self._feed(program.role, msg)
                finally:
                    driver.destroy()
        self._final_report()
        self._print(self.session.release_all())
        return self._finish(driver.now() - started)

    def _world_plan(self) -> WorldPlan:
        s, p = self.scenario, self.plan
        chain = s.chain or (s.appliance,)
        self.world_plan = world_plan(
            self.run_id, p.wall_sysctls(), max(a.backends for a in chain),
            s.appliance.vip6 if s.ip == "dualstack" else
            next((a.vip for a in chain if a.backends > 1), None),
            s.load.addresses if s.load else 1,
            server_sysctls={**keepalive_sysctls(LINUX_KEEPALIVE_DEFAULTS, p.speed),
                            **p.retransmission_sysctls()},
            nameserver=backend_address(0)[0] if s.attach is not None else None,
            front=CLIENT_GW if s.proxy is not None else None, ip=s.ip)
        return self.world_plan

    def _feed(self, role: str, msg: Message) -> None:
        """One message into the session; a backend after the first says which it is."""
        backend = role.startswith(Role.SERVER) and role != Role.SERVER
        self.session.feed(msg.with_source(role) if backend else msg)

    def _start_middlebox(self) -> None:
        """The dataplane (or, for the L4-proxy contrast, HAProxy and its watcher where the
        dataplane would be), until it is ready."""
        s, p, driver = self.scenario, self.plan, self.driver
        assert driver is not None and driver.world is not None
        world = driver.world
        if s.proxy is not None:
            proxy = ProxyConfig(speed=p.speed, timeout=s.appliance.tcp_idle_timeout,
                                port=s.server_port, front=CLIENT_GW, back=world.backends[0].ip,
                                back_self=SERVER_GW, client=CLIENT_IP,
                                haproxy_cfg=str(self.results_dir / "haproxy.cfg"),
                                pcap=str(self.results_dir / "capture.pcap"))
            _, ready, after = driver.start_program(Role.MIDDLEBOX, world.mbox_ns, proxy)
        else:
            inside, outside = world.ports()
            config = middlebox_config(
                s.chain or (s.appliance,), p.speed, inside, outside,
                # a capacity run's capture would hold every handshake of thousands of
                # connections
                pcap=None if s.load is not None else str(self.results_dir / "capture.pcap"),
                metrics=str(self.results_dir / "metrics.jsonl"),
                sample_every=max(0.5, p.client_timeout.model / 200), heartbeat=True,
                path_events=s.events)
            ready, after = driver.start_middlebox(config)
        assert ready is not None
        try:
            origin = ready.payload(MiddleboxReady).origin
        except JsonShapeError as exc:
            raise MiddleboxFailedError(f"the middlebox's ready line is not natsim's: {exc}"
                                       ) from None
        self.session.middlebox_ready(origin)
        for msg in after:
            self._feed(Role.MIDDLEBOX, msg)

    def _start(self) -> None:
        """The scenario's programs in the driver's order: the middlebox, each server, then
        (after the DNS server and with its interface away, for a late attach) the client."""
        s, p, driver = self.scenario, self.plan, self.driver
        assert driver is not None and driver.world is not None
        world = driver.world
        self._start_middlebox()
        progs = programs(s, p)
        for i, backend in enumerate(world.backends):
            _, _, after = driver.start_program("server" if i == 0 else f"server{i}",
                                               backend.ns, progs.server)
            for msg in after:
                self._feed(Role.SERVER if i == 0 else f"server{i}", msg)
        if resolves_over_dns(s):
            server_name = next((a.vip for a in s.chain or (s.appliance,) if a.backends > 1),
                               world.backends[0].ip)
            driver.start_program(Role.DNS, world.backends[0].ns,
                                 DnsConfig(names={DNS_NAME: server_name},
                                           dns64=s.ip == "nat64"))
        if s.attach is None:
            driver.start_program(Role.CLIENT, world.client_ns, progs.client, wait=False)
            return
        # seed 002: the client starts with no network; its interface comes at attach.at
        driver.attach(False)
        _, started, after = driver.start_program(Role.CLIENT, world.client_ns, progs.client)
        assert started is not None and started.mono is not None
        self.session.pin_zero(started.mono)
        for msg in after:
            self.session.feed(msg)
        self._attach_at = started.mono + s.attach.at / p.speed

    def _attach_due(self) -> None:
        """Bring the client's interface up when its time has come (a late attach)."""
        if self._attach_at is None or self._now() < self._attach_at:
            return
        assert self.driver is not None
        self._attach_at = None
        self.driver.attach(True)
        self.session.feed(Message(Role.PATH, EventKind.PATH_EVENT,
                                  "the client's network interface is attached (link up, "
                                  "routes and neighbour in place)", mono=self._now(),
                                  data={"path_event": "attach"}))

    def _watch(self) -> None:
        """Until client and server have both finished (bounded by their own limits), or the
        middlebox can no longer be trusted."""
        driver = self.driver
        assert driver is not None
        progs = programs(self.scenario, self.plan)
        # a pool server serves until it is stopped, once the client is done (and its last
        # acknowledgement has had SERVER_GRACE to arrive)
        followers = (Role.MIDDLEBOX, Role.DNS, Role.SERVER) if progs.servers_follow_client \
            else (Role.MIDDLEBOX, Role.DNS)
        workloads = [program for program in driver.programs
                     if not program.role.startswith(followers)]
        limit = driver.now() + progs.wall_limit
        done_at: float | None = None
        while driver.now() < limit:
            interrupts.check()
            self._attach_due()
            finished = all(program.poll() is not None for program in workloads)
            if finished and progs.servers_follow_client:
                done_at = driver.now() if done_at is None else done_at
                finished = driver.now() - done_at >= SERVER_GRACE
            for program, msg in driver.take():
                self._feed(program.role, msg)
            self._print(self.session.release(driver.now(), HOLD))
            trouble = driver.trouble()
            if trouble is not None:
                self.session.middlebox_failed(trouble, self._middlebox_stderr())
                return
            if finished:
                return
            self._status()
            wait = 0.1 if self._attach_at is None else \
                min(0.1, max(0.0, self._attach_at - driver.now()))
            driver.wait(wait)
        raise RunError("the client and server did not finish within their own time limits")

    def _final_report(self) -> None:
        """No verdict without the middlebox's own last word: asked to stop at the end, it
        reports its final counters; one that cannot (stopped, hung, killed in the last
        seconds, before the heartbeat check could tell) makes the run an ERROR."""
        assert self.driver is not None
        mbox = self.driver.middlebox
        if self.session.error is not None or self.session.middlebox_final:
            return
        if mbox is None:
            self.session.middlebox_failed("the middlebox never started: nothing the run "
                                          "saw crossed an appliance")
            return
        code = mbox.poll()
        # the driver kills with SIGKILL a middlebox that does not stop when asked
        how = ("did not answer the request to stop (stopped or hung), and was killed"
               if code == -9 else ended(code))
        self.session.middlebox_failed(f"the middlebox gave no final report at the end of the "
                                      f"run: it {how}", self._middlebox_stderr())

    def _middlebox_stderr(self, lines: int = 12) -> list[str]:
        assert self.driver is not None
        text = self.driver.stderr_tail(Role.MIDDLEBOX, 64_000)
        return text.strip().splitlines()[-lines:]

    def _metrics(self) -> list[JsonObject]:
        """The sampled counters, renamed for the cloud namespace, on the report's time axis."""
        name = self.scenario.appliance.name
        assert self.folder is not None
        text = self.folder.read_text("metrics.jsonl")
        samples: list[JsonObject] = []
        if text and self.session.started:
            for raw in text.splitlines():
                line = json.loads(raw)
                t = self.session.timebase.model(Message(Role.MIDDLEBOX, Kind.OUTPUT,
                                                        t=line["t"]))
                samples.append({"t": round(t, 3), **cloud_metrics(name, line["counters"])})
        return samples

    def _align_capture(self) -> None:
        """capture.pcap's times onto the timeline (:mod:`simulator.support.pcap`): the
        dataplane's zero is its start, the timeline's the request."""
        out, timebase = self.folder, self.session.timebase
        assert out is not None
        if not (out.is_file("capture.pcap") and self.session.started
                and timebase.mbox_origin is not None):
            return
        by = timebase.model(Message(Role.MIDDLEBOX, Kind.OUTPUT, t=0.0))
        try:
            with out.reader("capture.pcap") as src, out.open(".capture.pcap.tmp", "wb") as dst:
                pcap.shift_times(src, dst, by)
        except ValueError as exc:  # not ours: leave it as it is, and say so
            out.remove(".capture.pcap.tmp")
            print(f"natsim: {out / 'capture.pcap'} keeps the dataplane's times: {exc}",
                  file=sys.stderr)
            return
        out.rename(".capture.pcap.tmp", "capture.pcap")

    def _draw(self, events: list[TimelineEvent], samples: list[JsonObject]) -> list[Path]:
        s, p, out = self.scenario, self.plan, self.folder
        assert out is not None
        from simulator.views.timeline import (  # noqa: PLC0415 (matplotlib: 0.5 s)
            draw,
            draw_ladder,
            draw_metrics,
        )

        pictures = draw(events, s.appliance.tcp_idle_timeout, p.speed,
                        f"{s.name}: {s.description}", out, "timeline")
        if s.load is None:  # a ladder of 55,000 connections would be a wall
            pictures += draw_ladder(events, s.appliance.tcp_idle_timeout,
                                    f"{s.name}: {s.description}", out, "ladder")
        if samples:
            pictures += draw_metrics(samples, namespace_of(s.appliance.name), p.speed, s.name,
                                     out, "metrics")
        return pictures

    def _finish(self, wall: float) -> RunResult:
        s, p, session = self.scenario, self.plan, self.session
        events = sorted(session.timeline, key=lambda e: e.t)
        result = RunResult(s, p, self.results_dir, session.judge(), events, session.counters,
                           wall)
        out = self.folder
        assert out is not None
        samples = self._metrics()
        self._align_capture()
        pictures = self._draw(events, samples) if self.pictures else []
        document = result_document(session, s, p, self.run_id, wall, {
            "namespace": namespace_of(s.appliance.name), "samples": samples})
        write_result(out, document)
        write_run_page(out, document)
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
                 jsonl: bool = False, backend: Backend | None = None,
                 pictures: bool = True) -> RunResult:
    return Runner(scenario, speed, results_dir, out, jsonl, backend, pictures).run()
