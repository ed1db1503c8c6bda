"""``natsim status``: the live flow table of the worlds that are up, once or redrawn.

``--watch`` redraws it in place every wall second, for a terminal beside a running client:
the idle bars climb and fall back, flows appear and are forgotten. The whole screen is
worked out first and written at once (no flicker); Ctrl-C ends it with the cursor on a clean
line and exit status 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from typing import Any

from simulator.cli import events as events_cli
from simulator.core.metrics import cloud_metrics, namespace_of, prometheus_text
from simulator.world import modeltime
from simulator.world.live import LiveWorld, WorldError

WATCH_EVERY = 1.0
"""Wall seconds between two redraws."""
CLEAR = "\x1b[H\x1b[2J"
"""Cursor home, clear the screen (a terminal's; a pipe gets a separator line instead)."""


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "watch", False):
        return _print_status(args)
    if args.prometheus:
        raise WorldError("--watch redraws the table for a person: use --prometheus without it")
    tty = sys.stdout.isatty()
    try:
        while True:
            screen = io.StringIO()
            with contextlib.redirect_stdout(screen):
                try:
                    _print_status(args)
                except WorldError as exc:  # the world went down: say so, keep watching
                    print(f"natsim: {exc}")
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write((CLEAR if tty else "\n") +
                             f"natsim status --watch ({stamp}; Ctrl-C to stop)\n" +
                             screen.getvalue())
            sys.stdout.flush()
            time.sleep(WATCH_EVERY)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stdout.flush()
        return 0


def _bar(idle: float, timeout: float, width: int = 20) -> str:
    filled = min(width, int(width * idle / timeout)) if timeout > 0 else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _flow_table(live: LiveWorld, snap: dict[str, Any]) -> None:
    """The live flows, then those gone lately (kept a while, marked: the expiry shows)."""
    if snap["flows"]:
        print(f"  {'flow':<5} {'proto':<5} {'client':<21} {'server':<21} {'public':<21} "
              f"{'state':<12} idle / timeout")
    for f in snap["flows"]:
        print(f"  #{f['flow']:<4} {f['proto']:<5} {f['client']:<21} {f['server']:<21} "
              f"{f['public']:<21} {f['state']:<12} {f['idle']:7.1f} / {f['timeout']:g} s "
              f"{_bar(f['idle'], f['timeout'])}")
    gone = events_cli.gone_lines(live, snap)
    for line in gone:
        print(line)
    if not snap["flows"] and not gone:
        print("  no flows")
    elif snap.get("flow_count", 0) > len(snap["flows"]):
        print(f"  ... and {snap['flow_count'] - len(snap['flows'])} more "
              f"({snap['flow_count']} flows in all)")


def _print_status(args: argparse.Namespace) -> int:
    names = LiveWorld.names() if args.name is None else [args.name]
    if not names:
        print("no world is up (natsim up starts one)")
        return 0
    for name in names:
        live = LiveWorld.load(name)
        health = live.health()
        if health is not None and health.startswith("DEAD"):
            print(f"world {name}: {live.appliance.get('title', '?')}: {health}")
            print(f"  remove it: natsim down --name {name}   (logs: {live.results_dir}/)")
            continue
        snap = live.status()
        if args.prometheus:
            appliance = str(live.appliance["name"])
            sys.stdout.write(prometheus_text(
                cloud_metrics(appliance, snap["counters"]),
                {"world": name, "appliance": appliance, "namespace": namespace_of(appliance)}))
            continue
        stale = f"  ({health})" if health is not None else ""
        app = live.appliance
        print(f"world {name}: {app['title']}, idle timeout {app['tcp_idle_timeout']:g} s, "
              f"speed {live.speed:g}; model time {snap['t']:.1f} s{stale}")
        _flow_table(live, snap)
        shown = ("ActiveConnectionCount", "ConnectionAttemptCount", "IdleTimeoutCount",
                 "RstSent", "PacketsDropCount", "KeepaliveProbes")
        print("  " + ", ".join(f"{k} {snap['counters'].get(k, 0)}" for k in shown))
        rest = {k: v for k, v in sorted(snap["counters"].items()) if k not in shown and v}
        if rest:  # every other counter it keeps, when it has counted anything
            print("  also: " + ", ".join(f"{k} {v}" for k, v in rest.items()))
        for record in live.scaled()[-5:]:
            print(f"  timer scaled (pid {record.get('pid')}): {modeltime.describe(record)}")
        if snap.get("fast_path") is not None:
            print(f"  fast path (no capture): {snap['fast_path']:,} frames of hot flows "
                  "forwarded without the interpreter")
    return 0
