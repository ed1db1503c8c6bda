"""``natsim restart | replace | blackhole SECONDS [--name W]``: a live world's path events,
now (Toxiproxy-style, but the appliance's own events: ``simulator/dataplane/control.py``)."""

from __future__ import annotations

import argparse

from simulator.core.path_events import PathKind
from simulator.world.live import WORLD_NAME_HELP, LiveWorld

WHAT = {PathKind.RESTART: "restarts: its flow table is lost",
        PathKind.REPLACE: "is replaced: flows lost, new public addresses",
        PathKind.BLACKHOLE: "drops every packet, silently"}


def cmd_path_event(args: argparse.Namespace) -> int:
    live = LiveWorld.load(args.name)
    kind = PathKind(args.command)
    duration = getattr(args, "seconds", None)
    live.path_event(kind, duration)
    how_long = f" for {duration:g} model s" if duration is not None else ""
    print(f"world {live.name}: the {live.appliance.get('title', 'appliance')} "
          f"{WHAT[kind]}{how_long}, now (natsim events shows it)")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 1e6:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a positive number of model seconds, not {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind, help_text in ((PathKind.RESTART, "a live world's appliance restarts now (its "
                                                "flow table is lost)"),
                            (PathKind.REPLACE, "a live world's NAT is replaced now (flows "
                                                "lost, new public addresses)"),
                            (PathKind.BLACKHOLE, "a live world's path drops every packet for "
                                                  "SECONDS model seconds, from now")):
        cmd = sub.add_parser(str(kind), help=help_text, description=help_text + ".")
        if kind is PathKind.BLACKHOLE:
            cmd.add_argument("seconds", type=_seconds, metavar="SECONDS",
                             help="how long, in model seconds")
        cmd.add_argument("--name", default=None, help=WORLD_NAME_HELP)
        cmd.set_defaults(func=cmd_path_event)
