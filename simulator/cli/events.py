"""``natsim events [--name W] [--follow] [--json]``: what a live world's middlebox has done,
in model time, and (with ``--follow``) what it does next, as it happens.

The middlebox writes every event to the world's ``events.jsonl`` (the same lines a scenario
run's timeline is made of); ``status`` shows the flow table as it is now, and forgets a flow
as soon as it is gone, while ``events`` keeps the story: the flow created, its expiry, the
RST to a late packet. ``--follow`` stops by itself when the world is taken down.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from simulator.support.tail import LineTail
from simulator.world.live import WORLD_NAME_HELP, LiveWorld

POLL = 0.2
"""Wall seconds between two looks at the file while following."""
QUIET = ("ready", "stopped")
"""The middlebox's own start and stop lines: not events of the world."""


def line_of(event: dict[str, object]) -> str:
    """One event as the timeline prints it: model seconds, who, what."""
    t = event.get("t")
    stamp = f"{float(t):9.1f}" if isinstance(t, int | float) else " " * 9
    return f"{stamp}  {event.get('source', '')!s:<10} {event.get('text', '')}"


def _lines(path: Path, follow: bool, live: LiveWorld) -> Iterator[str]:
    """The file's complete lines, then (following) each new one until the world is down."""
    tail = LineTail(path)
    while True:
        yield from tail.new_lines()
        if not follow:
            return
        if not LiveWorld.state_file(live.name).exists() or not live.alive():
            return  # taken down (or its middlebox died): nothing more will come
        time.sleep(POLL)


GONE_KEPT = 10.0
"""Wall seconds ``natsim status`` keeps showing a flow after it is gone (expired, reset):
at speed 100 a flow expires 3.5 wall s after it went quiet, and was gone from the table
before anyone could look."""
TAIL = 1 << 20
"""Bytes of ``events.jsonl`` read for them: the recent events of a long-lived world."""


def recently_gone(live: LiveWorld, now: float, table: set[int]) -> list[dict[str, object]]:
    """The flows gone within the last :data:`GONE_KEPT` wall seconds (model time ``now``)
    and no longer in the flow table: each with its addresses (from its creation, if that is
    in the tail read) and the event that ended it."""
    path = Path(live.results_dir) / "events.jsonl"
    if not path.exists():
        return []
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - TAIL))
        lines = f.read().decode(errors="replace").splitlines()[1:]  # the first may be cut
    created: dict[int, dict[str, object]] = {}
    ended: dict[int, dict[str, object]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        flow, kind = event.get("flow"), event.get("kind")
        if not isinstance(flow, int) or flow in table:
            continue
        if kind == "flow_created":
            created[flow] = event
        elif kind == "flow_expired" or (kind == "flow_closed" and
                                        "removed" in str(event.get("text"))):
            ended[flow] = event
    since = now - GONE_KEPT * live.speed
    return [{**created.get(flow, {}), "flow": flow, "ended": event}
            for flow, event in sorted(ended.items())
            if isinstance(event.get("t"), int | float) and float(event["t"]) >= since]  # type: ignore[arg-type]


def gone_lines(live: LiveWorld, snap: dict[str, Any]) -> list[str]:
    """``natsim status``'s rows for the flows gone lately, marked GONE, with what ended
    them, in the table's columns."""
    now = float(snap["t"])
    rows = []
    for g in recently_gone(live, now, {int(f["flow"]) for f in snap["flows"]}):
        ended = g["ended"]
        assert isinstance(ended, dict)
        cols = [f"{g.get(k, '?')!s:<21}" for k in ("client", "server", "public")]
        rows.append(f"  #{g['flow']!s:<4} {g.get('proto', '?')!s:<5} {' '.join(cols)} GONE "
                    f"{now - float(ended['t']):.0f} s ago: {ended.get('text', '')}")
    return rows


def show(live: LiveWorld, follow: bool, as_json: bool, out: TextIO) -> int:
    path = Path(live.results_dir) / "events.jsonl"
    try:
        for raw in _lines(path, follow, live):
            event = json.loads(raw)
            if event.get("kind") in QUIET:
                continue
            out.write((raw if as_json else line_of(event)) + "\n")
            out.flush()
    except KeyboardInterrupt:  # following ends with Ctrl-C: not an error
        return 0
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    live = LiveWorld.load(args.name)
    if not args.json and not args.follow:
        print(f"world {live.name}: {live.appliance.get('title', '?')}, speed {live.speed:g}; "
              f"model seconds since the world came up", file=sys.stderr)
    return show(live, args.follow, args.json, sys.stdout)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("events", help="a live world's events so far (and --follow them)",
                        description="Print what the middlebox of a live world has done, in "
                                    "model seconds: flows created, expired, reset. --follow "
                                    "keeps printing as it happens, until the world is down.")
    ev.add_argument("--name", default=None, help=WORLD_NAME_HELP)
    ev.add_argument("--follow", "-f", action="store_true",
                    help="keep printing new events as they happen (Ctrl-C to stop)")
    ev.add_argument("--json", action="store_true",
                    help="the events as JSON lines, one per event, as the middlebox wrote them")
    ev.set_defaults(func=cmd_events)
