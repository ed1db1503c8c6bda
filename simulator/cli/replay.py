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
from pathlib import Path

import yaml

from simulator.core.appliances import Appliance, ApplianceError, get_appliance
from simulator.core.packets import ip_from_str
from simulator.core.replay import KILLED, Connection, Fate, Replay
from simulator.core.session import TimelineEvent
from simulator.dataplane.capture import CaptureStats, read
from simulator.spec.fields import ScenarioError
from simulator.support.results import Folder

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
        description="Replay every IPv4 TCP and UDP packet of a pcap/pcapng capture, at its "
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
        if wanted is None:
            ihl = (packet[0] & 15) * 4
            if len(packet) >= max(20, ihl) + 14 and packet[9] == 6 \
                    and packet[ihl + 13] & 0x12 == 0x02:
                wanted = bytes(packet[12:16] if side == "inside" else packet[16:20])
            else:
                continue
        if packet[12:16] == wanted or packet[16:20] == wanted:
            yield ts, packet


def run(args: argparse.Namespace) -> int:
    appliance = _appliance(args)
    stats = CaptureStats()
    replay = Replay(appliance, max_connections=args.max_connections)
    started = time.perf_counter()
    replay.feed_all(_of_host(read(args.capture, stats), args.host, args.side))
    seconds = time.perf_counter() - started
    conns = sorted(replay.connections.values(), key=lambda c: c.first)
    listed = conns if args.all else [c for c in conns if c.fate is not Fate.UNTOUCHED
                                     or c.captured_rsts or c.retransmits_after_gap]
    shown = listed if args.all else listed[:SHOWN]
    summary = replay.summary()
    if replay.over_cap:
        stats.skipped[f"of connections past --max-connections {args.max_connections:,}"] += \
            replay.over_cap
    if args.json:
        print(json.dumps({"capture": str(args.capture), "appliance": appliance.to_record(),
                          "side": args.side, "packets": stats.packets,
                          "skipped": dict(stats.skipped), "seconds": round(seconds, 3),
                          "summary": summary, "connections_not_listed": len(listed) - len(shown),
                          "connections": [c.to_dict() for c in shown]}, indent=2))
    else:
        _print(args, appliance.title, appliance.tcp_idle_timeout, stats, shown, summary,
               len(conns), seconds, len(listed) - len(shown))
    if args.pictures is not None:
        _draw(args.pictures, [c for c in conns if c.fate in KILLED][:PICTURES],
              appliance.tcp_idle_timeout)
    return 0


def _print(args: argparse.Namespace, title: str, timeout: float, stats: CaptureStats,
           shown: list[Connection], summary: dict[str, int], total: int,
           seconds: float, rest: int) -> None:
    out = sys.stdout
    skipped = ", ".join(f"{n:,} {why}" for why, n in stats.skipped.items())
    out.write(f"{args.capture}: {stats.packets:,} IPv4 packets"
              f"{f' (skipped: {skipped})' if skipped else ''}, {total:,} connection(s), "
              f"through {title} (idle timeout {timeout:g} s), capture taken on the "
              f"{'client' if args.side == 'inside' else 'server'}'s side; "
              f"{stats.packets / max(seconds, 1e-9):,.0f} packets/s\n")
    for conn in shown:
        out.write(f"\n  {conn.name}  ({conn.packets} packets, "
                  f"{conn.first:.1f}-{conn.last:.1f} s)\n")
        out.write(f"    longest idle gap {conn.longest_gap:.1f} s, from {conn.gap_at:.1f} s\n")
        if conn.probes:
            late = [t for t, gap in conn.probes if gap >= timeout]
            out.write(f"    keepalive probes: {len(conn.probes)}, "
                      + (f"{len(late)} too late (after {timeout:g} s idle)" if late
                         else "each in time") + "\n")
        out.write(f"    verdict: {_verdict(conn)}\n")
        for line in conn.explanations():
            out.write(f"    {line}\n")
    if rest:
        out.write(f"\n  ... {rest:,} more connection(s), counted in the summary (--all lists "
                  "every one)\n")
    out.write("\nsummary: " + (", ".join(f"{n} {fate}" for fate, n in summary.items() if n)
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


def _draw(path: Path, killed: list[Connection], timeout: float) -> None:
    with Folder.create(path, reuse=True) as folder:
        _draw_into(folder, killed, timeout)
    print(f"pictures: {path}/", file=sys.stderr)


def _draw_into(folder: Folder, killed: list[Connection], timeout: float) -> None:
    from simulator.views.timeline import draw  # noqa: PLC0415 (matplotlib: 0.5 s)

    for i, conn in enumerate(killed):
        events = [TimelineEvent(conn.first, conn.first, "client", "connected",
                                f"{conn.name}")]
        events += [TimelineEvent(t, t, "client", "keepalive", "keepalive probe")
                   for t, _ in conn.probes]
        if conn.expired_at is not None:
            events.append(TimelineEvent(conn.expired_at, conn.expired_at, "middlebox",
                                        "flow_expired", "expired", {"flow": 1}))
        if conn.late_at is not None:
            events.append(TimelineEvent(conn.late_at, conn.late_at, conn.late_from,
                                        "data", f"late packet from the {conn.late_from}"))
        for t, to in conn.appliance_rsts:
            events.append(TimelineEvent(t, t, "middlebox", "rst_sent", f"RST to the {to}",
                                        {"flow": 1, "side": "inside" if to == "client"
                                         else "outside"}))
        draw(sorted(events, key=lambda e: e.t), timeout, 1.0,
             f"replay: {conn.name}", folder, f"flow{i + 1}")

