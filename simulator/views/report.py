"""Showing a run: timeline lines for a terminal (plain and coloured), settings, result.json.

The timeline itself (model time, order, verdict) is the session's
(:mod:`simulator.core.session`); this module only formats it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.text import Text

from simulator.core.jsonvalue import JsonObject, number
from simulator.core.session import Judgement, RunSession, TimelineEvent
from simulator.spec.compression import Plan
from simulator.spec.scenario import Scenario
from simulator.support.results import Folder


def _unsigned_zero(x: float, digits: int) -> float:
    """``x`` rounded as printed, with -0.0 made 0.0: an event a few milliseconds before the
    request reads "0.0", not "-0.0"."""
    return round(x, digits) + 0.0


def format_event(ev: TimelineEvent) -> str:
    return (f"{_unsigned_zero(ev.t, 1):9.1f} {_unsigned_zero(ev.wall, 2):8.2f}  "
            f"{ev.source:<9}  {ev.text}")


SOURCE_STYLES = {"client": "cyan", "server": "magenta", "middlebox": "yellow"}
BAD = {"flow_expired", "rst_sent", "reset", "timeout", "keepalive_failed", "unacknowledged",
       "dropped", "port_allocation_error"}
GOOD = {"answer", "delivered", "keepalive"}


def styled_event(ev: TimelineEvent) -> Text:
    """The same line as :func:`format_event`, coloured for a terminal (rich)."""
    line = Text()
    line.append(f"{_unsigned_zero(ev.t, 1):9.1f} ", style="bold")
    line.append(f"{_unsigned_zero(ev.wall, 2):8.2f}  ", style="dim")
    line.append(f"{ev.source:<9}  ", style=SOURCE_STYLES.get(ev.source, ""))
    style = "bold red" if ev.kind in BAD else "bold green" if ev.kind in GOOD else ""
    line.append(ev.text, style=style)
    return line


TIMELINE_HEADER = f"{'model s':>9} {'wall s':>8}  {'who':<9}  what"


def write_result(out: Folder, data: JsonObject) -> None:
    out.write("result.json", json.dumps(data, indent=2) + "\n")


def print_settings(out: TextIO, settings: list[JsonObject]) -> None:
    """The compressed settings, with the effective model value of every rounded one."""
    for row in settings:
        if "model_count" in row:  # tcp_retries2: a count the world changes (retransmission)
            out.write(f"    {row['setting']:<44} {row['model_count']} -> {row['count']} (the "
                      f"kernel gives up after about {row['give_up_model_s']:g} model s)\n")
            continue
        if "count" in row:
            out.write(f"    {row['setting']:<44} {row['count']} (a count: not scaled)\n")
            continue
        note = ""
        if abs(number(row, "effective_model_s") - number(row, "model_s")) > 1e-9 \
                and not row["kernel_whole_seconds"]:
            note = f"  -> really {row['effective_model_s']:g} model s"
        if row["kernel_whole_seconds"] and abs(number(row, "effective_model_s")
                                               - number(row, "model_s")) > 1e-9:
            note = f"  -> really {row['effective_model_s']:g} model s (whole wall seconds)"
        out.write(f"    {row['setting']:<44} {row['model_s']:>7g} model s = "
                  f"{row['wall_s']:.3g} wall s{note}\n")


# -- a run's result, whichever driver carried it out (runner.py, backends/fake.py) ----------


@dataclass
class RunResult:
    scenario: Scenario
    plan: Plan
    results_dir: Path
    judgement: Judgement
    events: list[TimelineEvent]
    counters: dict[str, int]
    wall_seconds: float

    @property
    def client(self) -> str:
        return self.judgement.client

    @property
    def server(self) -> str:
        return self.judgement.server

    @property
    def error(self) -> str | None:
        """Why the run has no verdict (the middlebox died or hung): then it is an ERROR,
        never a PASS or FAIL, whatever the client and server said."""
        return self.judgement.error

    @property
    def passed(self) -> bool:
        return self.judgement.passed

    @property
    def verdict(self) -> str:
        return str(self.judgement.verdict)

    def kinds(self, source: str) -> list[str]:
        return [e.kind for e in self.events if e.source == source]


def header_text(s: Scenario, p: Plan, run_id: str) -> str:
    out = io.StringIO()
    w = out.write
    w(f"natsim: scenario {s.name} ({s.source}) - run {run_id}\n")
    if s.description:
        w(f"  {s.description}\n")
    if s.proxy is not None:
        w(f"  in the appliance's place: {s.proxy} (a real L4 proxy), timeout client and "
          f"server {s.appliance.tcp_idle_timeout:g} s ({s.appliance.title}'s idle timeout)\n")
    for a in () if s.proxy is not None else s.chain or (s.appliance,):
        w(f"  appliance: {a.title} (idle timeout {a.tcp_idle_timeout:g} s, "
          f"late packet from client: {a.late_from_inside}, "
          f"from server: {a.late_from_outside}"
          f"{', RST to both ends at expiry' if a.on_expiry == 'rst_both' else ''})\n")
    for event in s.events:
        w(f"  path event: {event.describe()}\n")
    w(f"  speed {p.speed:g}: 1 wall second = {p.speed:g} model seconds\n")
    print_settings(out, p.settings())
    for note in p.notes:
        w(f"  note: {note}\n")
    w(f"  expected: client {s.expect_client}, server {s.expect_server}\n\n")
    w(TIMELINE_HEADER + "\n")
    return out.getvalue()


def header_record(s: Scenario, p: Plan, run_id: str) -> JsonObject:
    return {"kind": "header", "scenario": s.name, "run_id": run_id, "speed": p.speed,
            "description": s.description, "settings": p.settings(),
            "path_events": [e.to_record() for e in s.events], "proxy": s.proxy,
            "expected": {"client": s.expect_client, "server": s.expect_server}}


def result_document(session: RunSession, s: Scenario, p: Plan, run_id: str, wall: float,
                    metrics: JsonObject) -> JsonObject:
    """``result.json``: the session's judgement and timeline, with the scenario around it."""
    pred = p.prediction
    return session.document(
        scenario=s.name, source=s.source, run_id=run_id, speed=p.speed,
        appliance={"name": s.appliance.name, "title": s.appliance.title,
                   **s.appliance.to_record()},
        path=[a.name for a in s.chain or (s.appliance,)], settings=p.settings(),
        path_events=[{**e.to_record(), "describe": e.describe()} for e in s.events],
        proxy=s.proxy,
        predicted={"client": pred.client, "server": pred.server,
                   "expires_at": pred.expires_at, "story": pred.story},
        wall_seconds=round(wall, 3), metrics=metrics)


SHOWN_COUNTERS = ("IdleTimeoutCount", "RstSent", "PacketsDropCount", "KeepaliveProbes")
PATH_COUNTERS = ("FlowsLostOnRestart", "BlackholeDrops", "DeregistrationTerminations")
SHOWN_IF_ANY = ("ApplianceKeepalives", "ErrorPortAllocation", "RejectedConnectionCount",
                "RejectedFlowCount", "MalformedPackets")


def summary_text(result: RunResult, pictures: list[str], stderr_tail: list[str]) -> str:
    """What a person reads after the timeline: outcomes, counters, why, where, verdict."""
    s, j, counters = result.scenario, result.judgement, result.counters
    out = io.StringIO()
    w = out.write
    w("\n")
    w(f"  client: {j.client:<16} (expected {s.expect_client})\n")
    w(f"  server: {j.server:<16} (expected {s.expect_server})\n")
    if s.proxy is not None:  # the watcher's counts, per link
        w(f"  {s.proxy} (seen on its links): " + (", ".join(
            f"{k} {v}" for k, v in sorted(counters.items())) or "nothing") + "\n")
    else:
        shown = [*SHOWN_COUNTERS, *(k for k in (*SHOWN_IF_ANY, *PATH_COUNTERS)
                                    if k in counters)]
        w("  middlebox: " + ", ".join(f"{k} {counters.get(k, 0)}" for k in shown) + "\n")
    w("  why (the analytic model): " + "; ".join(result.plan.prediction.story) + "\n")
    if j.error is None and not j.model_agrees:
        w(f"  THE MODEL DISAGREES: it predicted client {j.predicted[0]}, server "
          f"{j.predicted[1]} (the model or the emulation is wrong: please report it)\n")
    files = [*(["index.html"] if (result.results_dir / "index.html").exists() else []),
             "result.json", *(["capture.pcap"] if (result.results_dir / "capture.pcap")
                              .exists() else []), *pictures, "logs/"]
    w(f"  results: {result.results_dir}/ ({', '.join(files)})\n")
    if j.error is not None:
        w(f"  {j.error}; its stderr ends with:\n")
        for text in stderr_tail or ["(nothing)"]:
            w(f"    {text}\n")
    return out.getvalue()


def closing_line(result: RunResult) -> str:
    wall = result.wall_seconds
    if result.error is not None:
        return f"ERROR: no verdict: {result.error} (logs/middlebox.stderr; {wall:.1f} s wall)"
    return (f"{result.verdict}: {'outcome as expected' if result.passed else 'outcome differs'}"
            f" ({wall:.1f} s wall)")
