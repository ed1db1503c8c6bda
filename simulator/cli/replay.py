"""``natsim replay CAPTURE --appliance NAME``: the capture through the appliance's rules.

The I/O around :mod:`simulator.core.replay`: read the capture (:mod:`simulator.dataplane.capture`),
keep the packets of the host it was taken on, feed them, print per connection what the
appliance would have done (or JSON), and draw the timelines of the connections it would
have killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import yaml

from simulator.core.appliances import Appliance, ApplianceError, get_appliance
from simulator.core.jsonvalue import Json, JsonObject
from simulator.core.metrics import namespace_of
from simulator.core.packets import IPPROTO_TCP, ip_from_str, parse
from simulator.core.replay import KILLED, Connection, Fate, Replay
from simulator.core.session import TimelineEvent
from simulator.dataplane.capture import CaptureStats, read
from simulator.spec.fields import ScenarioError
from simulator.support.results import Folder
from simulator.views.run_page import write_world_page as write_world_page_file

if TYPE_CHECKING:
    from simulator.world.live import LiveWorld

PICTURES = 5
MAX_CONNECTIONS = 200_000
"""Connections followed by default: about 1.6 KB each, so a few hundred MB at most (a 200 MB
capture of 2 million connections took 3.4 GB before the cap). The rest are counted."""
SHOWN = 50
"""Connections listed one by one before the rest are summarised (``--all`` lists all)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser(
        "replay", help="a real capture through an appliance's rules: which connections it "
                       "would have killed, when, and why",
        description="Replay every IPv4 and IPv6 TCP and UDP packet of a pcap/pcapng capture, "
                    "at its "
                    "captured time, through the appliance's rules (the same engine as a "
                    "run), and report per connection: its longest idle gap, its keepalive "
                    "probes, and the appliance's verdict.")
    rep.add_argument("capture", type=Path, help="a pcap or pcapng file (Ethernet, raw IP, "
                                                "Linux cooked)")
    rep.add_argument("--appliance", required=True, help="catalogue name (natsim list)")
    rep.add_argument("--side", choices=("inside", "outside"), default="inside",
                     help="where the capture was taken: on the client's side of the "
                          "appliance (default) or the server's")
    rep.add_argument("--host", default=None, metavar="ADDRESS",
                     help="keep only this host's packets (default: the first SYN's sender "
                          "for --side inside, its destination for outside); needed when a "
                          "capture holds both sides of a NAT, as natsim's own do")
    rep.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override an appliance field (YAML value), e.g. "
                          "tcp_idle_timeout=1000; repeatable")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.add_argument("--pictures", type=Path, default=None, metavar="DIR",
                     help=f"draw the timelines of up to {PICTURES} killed connections here")
    rep.add_argument("--all", action="store_true",
                     help=f"list every connection, not only those the appliance touched, "
                          f"and not only the first {SHOWN}")
    rep.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                     help=f"connections to follow (default {MAX_CONNECTIONS:,}, a few hundred "
                          "MB); the packets of any beyond are counted, not replayed")


def _appliance(args: argparse.Namespace) -> Appliance:
    if args.max_connections < 1:
        raise ScenarioError("--max-connections", "", f"must be 1 or more, got "
                            f"{args.max_connections}")
    try:
        appliance = get_appliance(args.appliance)
    except KeyError as exc:
        raise ScenarioError("--appliance", "", str(exc.args[0])) from None
    overrides: dict[str, object] = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            raise ScenarioError("--set", field, "give FIELD=VALUE")
        try:
            overrides[field.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ScenarioError("--set", field, f"not a YAML value: {exc}") from None
    try:
        return appliance.with_overrides(overrides)
    except KeyError as exc:
        raise ScenarioError("--set", str(exc.args[0]), "no such appliance field") from None
    except (ApplianceError, TypeError, ValueError) as exc:
        raise ScenarioError("--set", "", str(exc)) from None


def _of_host(packets: Iterator[tuple[float, bytes]], host: str | None, side: str
             ) -> Iterator[tuple[float, bytes]]:
    """Only the capture host's packets (a NAT's capture holds each packet twice)."""
    wanted = ip_from_str(host) if host else None
    for ts, packet in packets:
        ends = _ends(packet)
        if ends is None:
            continue
        src, dst, syn = ends
        if wanted is None:
            if not syn:
                continue
            wanted = src if side == "inside" else dst
        if wanted in (src, dst):
            yield ts, packet


def _ends(packet: bytes) -> tuple[bytes, bytes, bool] | None:
    """(source, destination, a TCP SYN without ACK?) of an IPv4 packet read in place, or of
    an IPv6 one through the parser (its extension headers walked)."""
    if packet[0] >> 4 == 6:
        pkt = parse(packet)
        if pkt is None:
            return None
        return pkt.src, pkt.dst, pkt.proto == IPPROTO_TCP and pkt.flags & 0x12 == 0x02
    ihl = (packet[0] & 15) * 4
    syn = len(packet) >= max(20, ihl) + 14 and packet[9] == 6 \
        and packet[ihl + 13] & 0x12 == 0x02
    return bytes(packet[12:16]), bytes(packet[16:20]), syn


@dataclass
class Replayed:
    """A capture replayed through an appliance's rules: its connections (in the order they
    began) and what reading it counted."""

    capture: Path
    appliance: Appliance
    side: str
    stats: CaptureStats
    connections: list[Connection]
    summary: dict[str, int]
    seconds: float

    def listed(self, every: bool = False) -> list[Connection]:
        """The connections worth a line: those the appliance touched, or whose capture holds
        an RST or a retransmission after a gap (``every``: all)."""
        return self.connections if every else [
            c for c in self.connections
            if c.fate is not Fate.UNTOUCHED or c.captured_rsts or c.retransmits_after_gap]

    def killed(self) -> list[Connection]:
        return [c for c in self.connections if c.fate in KILLED]


def replay_capture(capture: Path, appliance: Appliance, side: str = "inside",
                   host: str | None = None, max_connections: int = MAX_CONNECTIONS
                   ) -> Replayed:
    stats = CaptureStats()
    replay = Replay(appliance, max_connections=max_connections)
    started = time.perf_counter()
    replay.feed_all(_of_host(read(capture, stats), host, side))
    seconds = time.perf_counter() - started
    if replay.over_cap:
        stats.skipped[f"of connections past --max-connections {max_connections:,}"] += \
            replay.over_cap
    return Replayed(capture, appliance, side, stats,
                    sorted(replay.connections.values(), key=lambda c: c.first),
                    replay.summary(), seconds)


def replay_world(live: LiveWorld) -> Replayed | None:
    """A live world's own capture through its appliance's rules, as ``natsim replay`` would
    read it (the client's side): each connection's verdict. None without a capture. Path
    events triggered in the world (restart, blackhole) are not in the rules replayed."""
    capture = Path(live.results_dir) / "capture.pcap"
    if not capture.is_file():
        return None
    record = live.appliance.get("record")
    try:
        appliance = Appliance.from_record(record) if isinstance(record, dict) else \
            get_appliance(str(live.appliance["name"])).with_overrides(
                {"tcp_idle_timeout": live.appliance["tcp_idle_timeout"]})
    except (KeyError, ApplianceError, TypeError, ValueError):
        return None  # a world an older natsim brought up: no verdicts rather than wrong ones
    return replay_capture(capture, appliance, "inside", live.addresses["client"])


def unsafe(done: Replayed) -> list[Connection]:
    """Connections the appliance killed while they were in use: a packet came after the
    expiry and met an RST or silence (an expired connection nobody used again is not)."""
    return [c for c in done.connections if c.fate in (Fate.LATE_RST, Fate.LATE_DROP)]


def print_world_verdicts(live: LiveWorld, out: TextIO) -> Replayed | None:
    """What ``natsim down`` says of a world's connections, and their pictures."""
    done = replay_world(live)
    if done is None:
        out.write("  no per-connection verdicts: the world had no capture (up --no-capture), "
                  "or was brought up by an older natsim that kept no appliance record\n")
        return None
    listed = done.listed()
    out.write(f"  its connections, the capture replayed through {done.appliance.title}'s "
              "rules:\n    ")
    print_replayed(done, listed[:SHOWN], max(0, len(listed) - SHOWN), out, indent="    ")
    if done.killed():
        out.write("  ")
        draw_killed(Path(live.results_dir) / "connections", done, out)
    return done


def write_world_page(live: LiveWorld, done: Replayed | None, final: JsonObject | None,
                     out: TextIO) -> None:
    """The world's ``index.html`` (see :mod:`simulator.views.run_page`), named in ``out``."""
    story = [f"{c.name}: {_verdict(c)}" for c in done.listed()[:SHOWN]] if done else \
        ["no per-connection verdicts (no capture, or no appliance record)"]
    if done is not None:
        story.append("summary: " + (", ".join(f"{n} {fate}" for fate, n in done.summary.items()
                                              if n) or "no connections"))
    counters = final.get("counters") if final is not None else None
    name = str(live.appliance.get("name", ""))
    with Folder.create(Path(live.results_dir), reuse=True) as folder:
        page = write_world_page_file(folder, live.name, live.appliance, live.speed,
                                     live.events(), story,
                                     counters if isinstance(counters, dict) else {},
                                     namespace_of(name) if name else "")
    out.write(f"  page: {page}\n")


def run(args: argparse.Namespace) -> int:
    done = replay_capture(args.capture, _appliance(args), args.side, args.host,
                          args.max_connections)
    listed = done.listed(args.all)
    shown = listed if args.all else listed[:SHOWN]
    if args.json:
        print(json.dumps({"capture": str(args.capture), "appliance": done.appliance.to_record(),
                          "side": args.side, "packets": done.stats.packets,
                          "skipped": dict(done.stats.skipped), "seconds": round(done.seconds, 3),
                          "summary": done.summary,
                          "connections_not_listed": len(listed) - len(shown),
                          "connections": [c.to_dict() for c in shown]}, indent=2))
    else:
        print_replayed(done, shown, len(listed) - len(shown), sys.stdout)
    if args.pictures is not None:
        sys.stdout.flush()  # the report first, then where its pictures are
        draw_killed(args.pictures, done, sys.stderr)
    return 0


def print_replayed(done: Replayed, shown: list[Connection], rest: int, out: TextIO,
                   indent: str = "  ") -> None:
    """The report: a line about the capture, then each shown connection's idle gap, probes
    and verdict, then the summary."""
    stats, timeout = done.stats, done.appliance.tcp_idle_timeout
    skipped = ", ".join(f"{n:,} {why}" for why, n in stats.skipped.items())
    out.write(f"{done.capture}: {stats.packets:,} IP packets"
              f"{f' (skipped: {skipped})' if skipped else ''}, "
              f"{len(done.connections):,} connection(s), through {done.appliance.title} (idle "
              f"timeout {timeout:g} s), capture taken on the "
              f"{'client' if done.side == 'inside' else 'server'}'s side; "
              f"{stats.packets / max(done.seconds, 1e-9):,.0f} packets/s\n")
    for conn in shown:
        out.write(f"\n{indent}{conn.name}  ({conn.packets} packets, "
                  f"{conn.first:.1f}-{conn.last:.1f} s)\n")
        out.write(f"{indent}  longest idle gap {conn.longest_gap:.1f} s, from "
                  f"{conn.gap_at:.1f} s\n")
        if conn.probes:
            late = [t for t, gap in conn.probes if gap >= timeout]
            out.write(f"{indent}  keepalive probes: {len(conn.probes)}, "
                      + (f"{len(late)} too late (after {timeout:g} s idle)" if late
                         else "each in time") + "\n")
        out.write(f"{indent}  verdict: {_verdict(conn)}\n")
        for line in conn.explanations():
            out.write(f"{indent}  {line}\n")
    if rest:
        out.write(f"\n{indent}... {rest:,} more connection(s), counted in the summary (--all "
                  "lists every one)\n")
    out.write(f"\n{indent[:-2]}summary: "
              + (", ".join(f"{n} {fate}" for fate, n in done.summary.items() if n)
                 or "no connections") + "\n")


def _verdict(conn: Connection) -> str:
    if conn.fate is Fate.UNTOUCHED:
        return "untouched"
    expired = f"expired at {conn.expired_at:.1f} s"
    if conn.fate is Fate.EXPIRED:
        return f"{expired}, silently (nothing came after it in the capture)"
    what = {Fate.LATE_RST: "answered by an RST from the appliance",
            Fate.LATE_DROP: "dropped, nobody told",
            Fate.LATE_PASS: "tracked anew and forwarded"}[conn.fate]
    return f"{expired}; the {conn.late_from}'s packet at {conn.late_at:.1f} s was {what}"


def draw_killed(path: Path, done: Replayed, out: TextIO) -> None:
    """Pictures of the first killed connections, in ``path``; says where."""
    with Folder.create(path, reuse=True) as folder:
        written = _draw_into(folder, done.killed()[:PICTURES], done.appliance.tcp_idle_timeout)
    out.write(f"pictures: {', '.join(str(p) for p in written) or 'none (no connection killed)'}"
              "\n")


def replay_events(conn: Connection, timeout: float) -> list[TimelineEvent]:
    """A replayed connection as the timeline draws a run's flow: its life in the
    appliance's table, its last activity before the longest gap, its probes (each counted
    or too late), the expiry, the late packet and the appliance's RSTs; in capture time."""
    flow: dict[str, Json] = {"flow": 1}
    events = [TimelineEvent(conn.first, conn.first, "middlebox", "flow_created", conn.name,
                            flow)]
    if conn.gap_at > conn.first:
        events.append(TimelineEvent(conn.gap_at, conn.gap_at, "middlebox", "data",
                                    "last packet before the longest gap", flow))
    events += [TimelineEvent(t, t, "middlebox", "keepalive", "keepalive probe",
                             {**flow, "side": "inside", "idle": gap,
                              "refreshed": gap < timeout})
               for t, gap in conn.probes]
    if conn.expired_at is not None:
        events.append(TimelineEvent(conn.expired_at, conn.expired_at, "middlebox",
                                    "flow_expired", "expired", flow))
    if conn.late_at is not None:
        events.append(TimelineEvent(conn.late_at, conn.late_at, "middlebox", "late_packet",
                                    f"late packet from the {conn.late_from}",
                                    {**flow, "sender": conn.late_from}))
    events += [TimelineEvent(t, t, "middlebox", "rst_sent", f"RST to the {to}",
                             {**flow, "side": "inside" if to == "client" else "outside"})
               for t, to in conn.appliance_rsts]
    return sorted(events, key=lambda e: e.t)


def _draw_into(folder: Folder, killed: list[Connection], timeout: float) -> list[Path]:
    from simulator.views.timeline import draw  # noqa: PLC0415 (matplotlib: 0.5 s)

    written: list[Path] = []
    for i, conn in enumerate(killed):
        written += draw(replay_events(conn, timeout), timeout, None, f"replay: {conn.name}",
                        folder, f"flow{i + 1}")
    return written
