"""The ``natsim`` command line.

Exit status: 0 when a run's outcome is the one its scenario expects, 1 when it differs,
2 for a bad scenario file or option (the message names the file and field), 3 when the
machine lacks something a run needs (root, the ``ip`` command), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulator import dataplane, topology
from simulator.core.appliances import CATALOGUE
from simulator.runner import RunError, run_scenario
from simulator.scenario import (
    ScenarioError,
    SpeedError,
    load_scenario,
    max_safe_speed,
    nominal_prediction,
    scenario_names,
)

EXIT_MISMATCH, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 1, 2, 3, 130


def _cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    result = run_scenario(scenario, args.speed, args.results)
    return 0 if result.passed else EXIT_MISMATCH


def _cmd_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    out.write("Scenarios (natsim run NAME):\n")
    for name in scenario_names():
        s = load_scenario(name)
        agrees = nominal_prediction(s).outcome() == (s.expect_client, s.expect_server)
        out.write(f"  {name:<22} {s.appliance.name:<8} expect client {s.expect_client}, "
                  f"server {s.expect_server}; speed {s.speed:g} (largest safe "
                  f"{max_safe_speed(s):g}){'' if agrees else '  [model disagrees]'}\n")
        if s.description:
            out.write(f"  {'':<22} {s.description.splitlines()[0]}\n")
    out.write("\nAppliances (scenario field appliance.name):\n")
    for appliance in CATALOGUE.values():
        out.write(f"  {appliance.name:<22} {appliance.title}: TCP idle timeout "
                  f"{appliance.tcp_idle_timeout:g} s, UDP {appliance.udp_idle_timeout:g} s; "
                  f"late packet from client: {appliance.late_from_inside}, from server: "
                  f"{appliance.late_from_outside}\n")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    topology.check_privileges()
    removed, skipped = topology.cleanup(force=args.force)
    for item in removed:
        print(f"removed {item}")
    for run_id in skipped:
        print(f"kept run {run_id}: its natsim process is still running (use --force)")
    if not removed and not skipped:
        print("nothing to clean up")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="natsim",
        description="Reproduce what cloud middleboxes (NAT Gateway, ...) do to idle "
                    "connections, with real sockets in network namespaces and compressed time.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario and judge its outcome",
                         description="Build the namespaces, run the scenario's client and "
                                     "server through the middlebox, print a timeline in model "
                                     "seconds and a verdict.")
    run.add_argument("scenario", help="a name from `natsim list`, or a path to a YAML file")
    run.add_argument("--speed", type=float, default=None, metavar="K",
                     help="time compression: 1 wall second = K model seconds "
                          "(default: the scenario's)")
    run.add_argument("--results", type=Path, default=None, metavar="DIR",
                     help="where to write result.json, capture.pcap and logs "
                          "(default: results/NAME-TIME-RUN/)")
    run.set_defaults(func=_cmd_run)

    lst = sub.add_parser("list", help="list scenarios and appliances")
    lst.set_defaults(func=_cmd_list)

    clean = sub.add_parser("cleanup", help="remove namespaces and processes left by earlier "
                                           "runs (only natsim's, only of runs no longer alive)")
    clean.add_argument("--force", action="store_true",
                       help="also remove the worlds of runs that are still alive")
    clean.set_defaults(func=_cmd_cleanup)

    mbox = sub.add_parser("middlebox", help="(internal) the dataplane, run inside its namespace")
    mbox.add_argument("--config", required=True, help="JSON file written by the runner")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["middlebox"]:  # its options belong to the dataplane's own parser
        return dataplane.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ScenarioError, SpeedError) as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (topology.TopologyError, RunError) as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print("\nnatsim: interrupted; namespaces and processes removed", file=sys.stderr)
        return EXIT_INTERRUPTED
