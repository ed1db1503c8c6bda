"""``natsim expire [FLOW] | restart | replace | blackhole SECONDS [--name W]``: a live world's
path events,
now (Toxiproxy-style, but the appliance's own events: ``simulator/dataplane/control.py``)."""

from __future__ import annotations

import argparse

from simulator.core.path_events import PathKind
from simulator.world.live import WORLD_NAME_HELP, LiveWorld

WHAT = {PathKind.RESTART: "restarts: its flow table is lost",
        PathKind.REPLACE: "is replaced: flows lost, new public addresses",
        PathKind.BLACKHOLE: "drops every packet, silently",
        PathKind.EXPIRE: "forgets {which}, as at its idle timeout"}


def cmd_path_event(args: argparse.Namespace) -> int:
    live = LiveWorld.load(args.name)
    kind = PathKind(args.command)
    duration = getattr(args, "seconds", None)
    flow = getattr(args, "flow", None)
    live.path_event(kind, duration, flow)
    how_long = f" for {duration:g} model s" if duration is not None else ""
    which = f"flow #{flow}" if flow is not None else "every flow"
    print(f"world {live.name}: the {live.appliance.get('title', 'appliance')} "
          f"{WHAT[kind].format(which=which)}{how_long}, now (natsim events shows it)")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < 1e6:  # NaN fails too
        raise argparse.ArgumentTypeError(f"a positive number of model seconds, not {text}")
    return value


def _flow(text: str) -> int:
    try:
        value = int(text.removeprefix("#"))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"a flow's number as natsim status shows it (#3 or "
                                         f"3), not {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for kind, help_text in ((PathKind.EXPIRE, "a live world's appliance forgets a flow now "
                                               "(every flow without FLOW), as at its idle "
                                               "timeout: the next packet meets the late-"
                                               "packet rule"),
                            (PathKind.RESTART, "a live world's appliance restarts now (its "
                                                "flow table is lost)"),
                            (PathKind.REPLACE, "a live world's NAT is replaced now (flows "
                                                "lost, new public addresses)"),
                            (PathKind.BLACKHOLE, "a live world's path drops every packet for "
                                                  "SECONDS model seconds, from now")):
        cmd = sub.add_parser(str(kind), help=help_text, description=help_text + ".")
        if kind is PathKind.BLACKHOLE:
            cmd.add_argument("seconds", type=_seconds, metavar="SECONDS",
                             help="how long, in model seconds")
        if kind is PathKind.EXPIRE:
            cmd.add_argument("flow", type=_flow, nargs="?", default=None, metavar="FLOW",
                             help="the flow's number, as natsim status shows it (#3 or 3)")
        cmd.add_argument("--name", default=None, help=WORLD_NAME_HELP)
        cmd.set_defaults(func=cmd_path_event)
