"""The ``natsim`` command line.

Exit status: 0 when a run's outcome is the one its scenario expects, 1 when it differs,
2 for a bad scenario file or option (the message names the file and field), 3 when the
machine lacks something a run needs (root, the ``ip`` command), 4 when a run has no verdict
because its middlebox died or hung (ERROR), 5 when ``natsim exec --model-time`` was asked
to run a program that cannot run on the world's clock (a static or Go binary), 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from simulator.cli import check as check_cli
from simulator.cli import control as control_cli
from simulator.cli import events as events_cli
from simulator.cli import replay as replay_cli
from simulator.cli import status as status_cli
from simulator.core.appliances import CATALOGUE, Appliance, ApplianceError, caveats, get_appliance
from simulator.core.plan import IP_MODES
from simulator.core.profiles import PROFILES
from simulator.dataplane import packet_loop
from simulator.dataplane.capture import CaptureError
from simulator.runs import matrix
from simulator.runs.runner import RunError, run_scenario
from simulator.spec.compression import SpeedError, max_safe_speed, nominal_prediction
from simulator.spec.scenario import (
    LINUX_KEEPALIVE_DEFAULTS,
    ScenarioError,
    load_scenario,
    scaled,
    scenario_names,
)
from simulator.support import interrupts
from simulator.support.results import ResultsError
from simulator.support.results import base as results_base
from simulator.views.demo import STORY_NAMES, run_demo
from simulator.world import docker_host, modeltime, rootless, topology
from simulator.world.backends import BackendError
from simulator.world.backends.docker import docker_leftovers
from simulator.world.driver import StartError
from simulator.world.live import ROLES, WORLD_NAME_HELP, LiveWorld, WorldError

EXIT_MISMATCH = check_cli.EXIT_MISMATCH
EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_ERROR, EXIT_INTERRUPTED = 2, 3, 4, 130
EXIT_NO_MODEL_TIME = 5


def _cmd_run(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    if args.scale is not None:
        scenario = scaled(scenario, args.scale)
    if args.backend is not None:
        scenario = replace(scenario, backend=args.backend)
    result = run_scenario(scenario, args.speed, args.results, jsonl=args.jsonl)
    if result.error is not None:
        return EXIT_ERROR
    return 0 if result.passed else EXIT_MISMATCH


def _cmd_matrix(args: argparse.Namespace) -> int:
    return matrix.main(args)


def _cmd_replay(args: argparse.Namespace) -> int:
    return replay_cli.run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    page = None
    if args.html is not None:
        page = Path(args.html) if args.html else \
            results_base() / f"demo-{args.story}-{time.strftime('%Y%m%dT%H%M%S')}.html"
    return run_demo(args.speed, args.width, story=args.story, page=page)


def _cmd_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    out.write("Scenarios (natsim run NAME):\n")
    names = scenario_names()
    wide = max(len(n) for n in names)  # the columns hold for the longest name
    scenarios = [load_scenario(name) for name in names]
    paths = ["+".join(a.name for a in s.chain) if len(s.chain) > 1 else s.appliance.name
             for s in scenarios]
    path_wide = max(len(p) for p in paths)
    for name, s, path in zip(names, scenarios, paths, strict=True):
        agrees = nominal_prediction(s).outcome() == (s.expect_client, s.expect_server)
        out.write(f"  {name:<{wide}} {path:<{path_wide}} expect client {s.expect_client}, "
                  f"server {s.expect_server}; speed {s.speed:g} (safe up to "
                  f"{max_safe_speed(s):g}){'' if agrees else '  [model disagrees]'}\n")
        if s.description:
            out.write(f"  {'':<{wide}} {s.description.splitlines()[0]}\n")
    out.write("\nClient profiles (scenario field client.profile; natsim check "
              "--client-profile):\n")
    for profile in PROFILES.values():
        timing = ("no keepalive" if profile.keepalive == "off" else
                  "SO_KEEPALIVE, OS timing" if profile.keepalive == "os" else
                  f"keepalive {profile.idle}/{profile.interval}/{profile.count}")
        real = (f"; run for real in the suite: {profile.real_client}" if profile.real_client
                else "; not run for real here (model only)")
        out.write(f"  {profile.name:<30} {profile.title}: {timing}{real}\n")
    out.write("\nAppliances (scenario field appliance.name):\n")
    wide = max(len(a) for a in CATALOGUE)
    for appliance in CATALOGUE.values():
        out.write(f"  {appliance.name:<{wide}} {appliance.title}: TCP idle timeout "
                  f"{appliance.tcp_idle_timeout:g} s, UDP {appliance.udp_idle_timeout:g} s; "
                  f"late packet from client: {appliance.late_from_inside}, from server: "
                  f"{appliance.late_from_outside}\n")
        for note in caveats(appliance):
            out.write(f"  {'':<{wide}}   caveat, {note}\n")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    topology.check_privileges()
    removed, skipped = topology.cleanup(force=args.force)
    removed += docker_leftovers(keep=set(skipped))
    for run_id in modeltime.segment_run_ids() - set(skipped):
        if topology.RUN_ID_RE.fullmatch(run_id):
            removed += modeltime.remove_segment(run_id)
    for name in LiveWorld.names():  # worlds whose middlebox died with nothing left to run
        live = LiveWorld.load(name)
        if live.run_id not in skipped:
            live.forget()
            removed.append(f"world {name}")
    for item in removed:
        print(f"removed {item}")
    for run_id in skipped:
        print(f"kept run {run_id}: its natsim process is still running (use --force)")
    if not removed and not skipped:
        print("nothing to clean up")
    return 0


def _appliance_from_args(args: argparse.Namespace) -> tuple[Appliance, float, dict[str, int]]:
    if args.scenario:
        s = load_scenario(args.scenario)
        appliance, speed, sysctls = s.appliance, s.speed, dict(s.sysctls)
        args.ip = args.ip or s.ip
    else:
        try:
            appliance = get_appliance(args.appliance)
        except KeyError as exc:
            raise ScenarioError("--appliance", "", str(exc.args[0])) from None
        speed, sysctls = 35.0, dict(LINUX_KEEPALIVE_DEFAULTS)
    overrides: dict[str, object] = {}
    if args.timeout is not None:
        overrides["tcp_idle_timeout"] = args.timeout
        overrides["udp_idle_timeout"] = args.timeout
    if args.late_from_outside is not None:
        overrides["late_from_outside"] = args.late_from_outside
    if args.speed is not None:
        speed = args.speed
    return appliance.with_overrides(overrides), speed, sysctls


def _cmd_up(args: argparse.Namespace) -> int:
    appliance, speed, sysctls = _appliance_from_args(args)
    live = LiveWorld.up(args.name, appliance, speed, sysctls, results_dir=args.results,
                        backend=args.backend, capture=not args.no_capture, ip=args.ip or "4")
    timeout = appliance.tcp_idle_timeout
    print(f"world {live.name} is up (run {live.run_id}): {appliance.title}, idle timeout "
          f"{timeout:g} model s = {live.wall(timeout):.3g} wall s at speed {speed:g}")
    kind = "container" if live.backend == "docker" else "namespace"
    print(f"  client  {live.addresses['client']:<14} {kind} {live.namespaces['client']}")
    print(f"  server  {live.addresses['server']:<14} {kind} {live.namespaces['server']}"
          f"   (the client reaches it as `server`)")
    print(f"  NAT     {live.addresses['nat']:<14} (the server sees the client as this address)")
    for role, values in live.sysctls.items():
        shown = ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in values.items())
        print(f"  {role} sysctls (wall s, compressed {speed:g}x): {shown}")
    name_opt = "" if args.name == "default" else f" --name {args.name}"
    print(f"run programs:  natsim exec{name_opt} server -- python3 -m http.server 8080")
    print(f"               natsim exec{name_opt} client -- curl http://server:8080/")
    print(f"watch:         natsim status{name_opt}        remove: natsim down{name_opt}")
    if live.libraries is not None:
        print(f"programs you exec run on the world's clock: their timeouts, sleeps and "
              f"keepalive are model seconds (1 wall s = {speed:g} model s; --wall-time to "
              "opt out)")
    else:
        print(f"natsim: warning: programs you exec run in wall time: {live.no_model_time}; "
              f"divide their timeouts and keepalive by {speed:g} yourself", file=sys.stderr)
    if live.uncompressed_retransmissions:
        print(f"natsim: warning: the kernels retransmit on the wall clock "
              f"({live.uncompressed_retransmissions}): a request a silent appliance drops "
              f"is given up after 924 wall s, not 924 model s", file=sys.stderr)
    print(f"{'capture and events' if not args.no_capture else 'events'}: "
          f"{live.results_dir}/")
    return 0


def _cmd_exec(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise WorldError("nothing to run: natsim exec HOST -- COMMAND [ARGS...]")
    live = LiveWorld.load(args.name)
    health = live.health()
    if health is not None:
        print(f"natsim: warning: world {live.name}: {health}; nothing crosses it now "
              f"(`natsim down --name {live.name}`, then `natsim up` again)", file=sys.stderr)
    model_time = not args.wall_time
    if model_time:
        why = live.why_not_model_time(argv[0])
        if why is not None:
            if args.model_time:
                print(f"natsim: error: {why}; it cannot run in model time: "
                      f"{modeltime.ADVICE}", file=sys.stderr)
                return EXIT_NO_MODEL_TIME
            print(f"natsim: warning: {why}: it runs in wall time, its own timeouts and "
                  f"keepalive unscaled ({live.speed:g} times too slow for this world); "
                  f"{modeltime.ADVICE}", file=sys.stderr)
            model_time = False
    command, env = live.program(args.host, argv, model_time, verbose=args.verbose)
    if args.verbose:
        print(f"natsim: {' '.join(argv)} in {args.host}, "
              + (f"in model time (speed {live.speed:g}; its clock, sleeps and socket timers "
                 "compressed)" if model_time else "in wall time"), file=sys.stderr)
    code = _run_passing_signals(command, env)  # exit status and output pass through unchanged
    after = live.health()
    if after is not None:  # dead before it started, or died while it ran
        when = "it was so before the command started" if health is not None \
            else "it died while the command ran"
        print(f"natsim: error: world {live.name}: {after}; {when}, so what the command saw "
              "proves nothing", file=sys.stderr)
        return EXIT_ERROR
    return code


def _run_passing_signals(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``command`` as a child and return its exit status as a shell would (128+N for a
    signal). Ctrl-C and Ctrl-\\ reach it from the terminal (same process group), so natsim
    ignores them meanwhile; SIGTERM and SIGHUP sent to natsim are passed on."""
    child = subprocess.Popen(command, env=env)
    passed = {signal.SIGTERM, signal.SIGHUP}
    old = {sig: signal.signal(sig, lambda n, _f: child.send_signal(n)) for sig in passed}
    old.update({sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGQUIT)})
    try:
        code = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _cmd_down(args: argparse.Namespace) -> int:
    names = LiveWorld.names() if args.all else [LiveWorld.load(args.name).name]
    unreported = []
    for name in names:
        live = LiveWorld.load(name)
        final = live.down()
        if final is None:
            unreported.append(name)
        kept = "capture and events" if (Path(live.results_dir) / "capture.pcap").exists() \
            else "events"
        print(f"world {name} removed; its {kept} are in {live.results_dir}/")
        done = replay_cli.print_world_verdicts(live, sys.stdout)
        replay_cli.write_world_page(live, done, final, sys.stdout)
    if not names:
        print("no world is up")
    for name in unreported:
        print(f"natsim: error: world {name}: its middlebox gave no final report when asked to "
              "stop (it had died, was stopped or hung): what the world showed before cannot "
              "be trusted", file=sys.stderr)
    return EXIT_ERROR if unreported else 0


def build_parser() -> argparse.ArgumentParser:
    # long: a declarative list of every command and option, in the order `--help` shows
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
    run.add_argument("--backend", choices=("namespaces", "docker"), default=None,
                     help="where the hosts live (default: the scenario's, else namespaces); "
                          "docker needs a running engine and `make image`")
    run.add_argument("--scale", type=float, default=None, metavar="F",
                     help="capacity scenarios only: run at F (0-1] of the real numbers, "
                          "limits, connections and expected counts alike (0.1: seconds "
                          "instead of minutes)")
    run.add_argument("--jsonl", action="store_true",
                     help="print JSON lines (header, events, verdict) instead of text")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="narrated teaching run: three scenarios side by side "
                                       "(a slow answer, or --story idle-pool)")
    demo.add_argument("--story", choices=STORY_NAMES, default="slow-answer",
                      help="slow-answer (default): nat-gw, nat-gw-keepalive and an L4 proxy; "
                           "idle-pool: a pooled connection reused after 400 s idle behind a "
                           "NAT Gateway (RST), a GWLB (silent drop) and with keepalive")
    demo.add_argument("--speed", type=float, default=None, metavar="K",
                      help="time compression for the three runs (default: the story's, 35 "
                           "for slow-answer, about 30 s; 40 for idle-pool, about 40 s)")
    demo.add_argument("--width", type=int, default=None,
                      help="terminal width (default: the terminal's)")
    demo.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                      help="also write the stories side by side on one page, with one play "
                           "and step control (default PATH: demo-STORY-TIME.html in the "
                           "results folder)")
    demo.set_defaults(func=_cmd_demo)

    chk = sub.add_parser(
        "check", help="predict an outcome without running anything (the analytic model)",
        description="Predict a scenario's outcome, or answer: will this client survive a "
                    "wait of --idle seconds behind this appliance? And if not, the fix.")
    chk.add_argument("scenario", nargs="?", help="a scenario to predict")
    chk.add_argument("--client-profile", default=None, metavar="PROFILE",
                     help="a client profile from `natsim list` (default linux-so-keepalive)")
    chk.add_argument("--appliance", default=None, help="catalogue name (default nat-gw)")
    chk.add_argument("--idle", type=float, metavar="S",
                     help="how long the server stays silent before answering (seconds)")
    chk.add_argument("--timeout", type=float, metavar="S",
                     help="override the appliance's idle timeout")
    chk.add_argument("--client-timeout", type=float, metavar="S",
                     help="how long the client waits (default: 900 s, or longer than --idle)")
    chk.add_argument("--reuse-after", type=float, metavar="S",
                     help="the pool question: a connection answered, then idle S seconds, "
                          "then reused (default profile requests-urllib3)")
    chk.add_argument("--keepalive-time", type=float, default=None, metavar="S",
                     help="the client host's net.ipv4.tcp_keepalive_time (default 7200)")
    chk.set_defaults(func=check_cli.cmd_check)

    lst = sub.add_parser("list", help="list scenarios and appliances")
    lst.set_defaults(func=_cmd_list)

    clean = sub.add_parser("cleanup", help="remove namespaces and processes left by earlier "
                                           "runs (only natsim's, only of runs no longer alive)")
    clean.add_argument("--force", action="store_true",
                       help="also remove the worlds of runs that are still alive")
    clean.set_defaults(func=_cmd_cleanup)

    up = sub.add_parser("up", help="build a world and leave it running for your own programs",
                        description="Build client, middlebox and server namespaces and leave "
                                    "the middlebox running in the background.")
    up.add_argument("scenario", nargs="?", help="take appliance, speed and sysctls from a "
                                                "scenario (otherwise --appliance)")
    up.add_argument("--appliance", default="nat-gw", help="catalogue name (default nat-gw)")
    up.add_argument("--timeout", type=float, metavar="S",
                    help="override the idle timeout (model seconds)")
    up.add_argument("--late-from-outside", choices=("rst", "drop"),
                    help="what a late packet from the server gets (default: the appliance's)")
    up.add_argument("--speed", type=float, metavar="K", help="time compression (default 35)")
    up.add_argument("--name", default="default", help="world name, to have several up at once")
    up.add_argument("--ip", choices=IP_MODES, default=None,
                    help="the hosts' family: 4 (default), 6 (both IPv6-only, a transparent "
                         "appliance), nat64 (an IPv6-only client, the IPv4 server behind "
                         "the NAT Gateway's NAT64 as 64:ff9b::c613:10a) or dualstack (an "
                         "IPv6-only client to nlb-dualstack's IPv6 address, an IPv4 target)")
    up.add_argument("--backend", choices=("namespaces", "docker"), default="namespaces",
                    help="hosts as network namespaces (default) or Docker containers "
                         "(`make image` first)")
    up.add_argument("--results", type=Path, default=None, metavar="DIR",
                    help="where the world writes its capture, events and status (a new or "
                         "empty folder of yours; default: results/world-NAME-TIME-RUN/)")
    up.add_argument("--no-capture", action="store_true",
                    help="write no capture.pcap: hot established flows then take the "
                         "dataplane's compiled fast path (for heavy traffic)")
    up.set_defaults(func=_cmd_up)

    ex = sub.add_parser("exec", help="run a command inside a host of a live world",
                        description="Run COMMAND inside HOST, on the world's compressed clock "
                                    "(its timeouts, sleeps and socket keepalive in model "
                                    "seconds); its output and exit status pass through "
                                    "unchanged.",
                        usage="natsim exec [--name NAME] [--wall-time | --model-time] [-v] "
                              "HOST -- COMMAND [ARGS...]")
    ex.add_argument("--name", default=None, help=WORLD_NAME_HELP)
    clock = ex.add_mutually_exclusive_group()
    clock.add_argument("--wall-time", action="store_true",
                       help="run COMMAND on the wall clock (its timers then need dividing by "
                            "the speed)")
    clock.add_argument("--model-time", action="store_true",
                       help="insist on model time: a program that cannot run in it (static, "
                            "Go) is refused with exit status 5 instead of run in wall time")
    ex.add_argument("-v", "--verbose", action="store_true",
                    help="say how COMMAND runs, and each socket timer scaled for it")
    ex.add_argument("host", choices=ROLES)
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ex.set_defaults(func=_cmd_exec)

    st = sub.add_parser("status", help="live flow table of the worlds that are up")
    st.add_argument("--name", default=None)
    st.add_argument("--prometheus", action="store_true",
                    help="print the cloud-named metrics in Prometheus text format instead")
    st.add_argument("--watch", action="store_true",
                    help="redraw it in place every wall second until Ctrl-C")
    st.set_defaults(func=status_cli.run)

    down = sub.add_parser("down", help="remove a live world")
    down.add_argument("--name", default=None, help=WORLD_NAME_HELP)
    down.add_argument("--all", action="store_true", help="remove every world that is up")
    down.set_defaults(func=_cmd_down)

    events_cli.add_parser(sub)
    control_cli.add_parsers(sub)
    replay_cli.add_parser(sub)
    matrix.add_parser(sub)
    sub.choices["matrix"].set_defaults(func=_cmd_matrix)
    sub.choices["replay"].set_defaults(func=_cmd_replay)

    mbox = sub.add_parser("middlebox", help="(internal) the dataplane, run inside its namespace")
    mbox.add_argument("--config", required=True, help="JSON file written by the runner")
    return parser


ROOTLESS_COMMANDS = {_cmd_run, _cmd_demo}
"""What runs as an ordinary user, in a user namespace of its own (``rootless.py``): the
commands whose world lives and dies with the command."""
SESSION_COMMANDS = {_cmd_up, _cmd_exec, status_cli.run, _cmd_down, _cmd_cleanup}
"""As an ordinary user, these share one long-lived namespace per user (a session), so
that ``exec`` finds the world ``up`` left."""


def console() -> int:
    """The ``natsim`` command: Ctrl-C is recorded from the start
    (:mod:`simulator.support.interrupts`).

    Not in :func:`main`, which tests call in-process: pytest keeps its own handlers.
    """
    interrupts.install()
    return main()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["middlebox"]:  # its options belong to the dataplane's own parser
        return packet_loop.main(argv[1:])
    if argv[:1] in (["docker-middlebox"], ["docker-host"]):  # in containers (docker_host.py)
        return docker_host.main(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if rootless.needed() and args.func in ROOTLESS_COMMANDS:
            rootless.enter()
        elif rootless.needed() and args.func in SESSION_COMMANDS:
            rootless.enter_session(create=args.func is _cmd_up)
        code = int(args.func(args))
        if rootless.active() and args.func in SESSION_COMMANDS and not LiveWorld.names():
            rootless.end_session()
        return code
    except rootless.RootlessError as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (ScenarioError, SpeedError) as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (WorldError, ApplianceError, ResultsError, CaptureError) as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (topology.TopologyError, RunError, StartError, BackendError) as exc:
        print(f"natsim: error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print("\nnatsim: interrupted; namespaces and processes removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `natsim ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_MISMATCH
