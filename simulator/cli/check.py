"""``natsim check``: a prediction from the analytic model alone, nothing runs.

Three questions: a scenario's outcome (``natsim check NAME``); will this client survive a
slow answer (``--idle``); will this pool survive reusing a connection after an idle spell
(``--reuse-after``). Each answer that is a failure comes with the fix, and the exit status
says which it was (0 survives or agrees, 1 fails or disagrees).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from simulator.core.advice import LINUX_DEFAULT_TIME, check, check_reuse
from simulator.core.appliances import Appliance, caveats, get_appliance
from simulator.core.pool_model import PoolModelError
from simulator.core.profiles import ClientProfile, get_profile
from simulator.spec.compression import nominal_prediction
from simulator.spec.fields import number
from simulator.spec.scenario import ScenarioError, load_scenario

EXIT_MISMATCH = 1
"""The exit status of a prediction that fails, or that disagrees with its scenario."""


CHECK_FLAGS = (("idle", "--idle"), ("timeout", "--timeout"),
               ("client_timeout", "--client-timeout"), ("reuse_after", "--reuse-after"))
"""The numbers ``natsim check`` takes, each in model seconds and greater than 0."""


def _check_args(args: argparse.Namespace) -> None:
    """Refuse what ``natsim check`` would otherwise answer wrongly or silently ignore."""
    for attr, flag in (*CHECK_FLAGS, ("keepalive_time", "--keepalive-time")):
        value = getattr(args, attr)
        if value is not None:
            number("natsim check", flag, value)  # > 0, finite, within the model's range
    if args.scenario:
        given = [flag for attr, flag in CHECK_FLAGS if getattr(args, attr) is not None]
        given += ["--client-profile"] * (args.client_profile is not None)
        given += ["--appliance"] * (args.appliance is not None)
        given += ["--keepalive-time"] * (args.keepalive_time is not None)
        if given:
            raise ScenarioError("natsim check", given[0], "a scenario brings its own client, "
                                "appliance and wait: give a SCENARIO or these options, not "
                                "both")


def cmd_check(args: argparse.Namespace) -> int:
    out = sys.stdout
    _check_args(args)
    if args.scenario:
        s = load_scenario(args.scenario)
        pred = nominal_prediction(s)
        out.write(f"{s.name}: {s.path_title}; shortest idle timeout "
                  f"{s.appliance.tcp_idle_timeout:g} s; the server answers after "
                  f"{s.server_delay:g} s; the client waits up to {s.client_timeout:g} s\n")
        out.write(f"  predicted: client {pred.client} at {pred.client_at:g} s, server "
                  f"{pred.server}\n")
        out.write("  why: " + "; ".join(pred.story) + "\n")
        if s.proxy is not None:
            out.write(f"  no keepalive setting keeps the connection alive: {s.proxy} "
                      "counts only the data it relays (an application heartbeat)\n")
        elif s.appliance.keepalive_refreshes:
            out.write(f"  keepalive idle times below {pred.latest_keepalive_idle:g} s keep "
                      "the flow alive\n")
        else:
            out.write(f"  no keepalive setting keeps the flow alive: {s.appliance.title} "
                      "counts only data (an application heartbeat)\n")
        agrees = pred.outcome() == (s.expect_client, s.expect_server)
        out.write(f"  the scenario expects client {s.expect_client}, server {s.expect_server}: "
                  f"{'the model agrees' if agrees else 'THE MODEL DISAGREES'}\n")
        # as for a profile: 0 only when the client survives (every request answered in the
        # end), and never when the file and the model disagree
        survives = all(o.split("+")[-1] == "answer" for o in pred.client.split(", "))
        out.write(f"  {'SURVIVES' if survives else 'FAILS'}\n")
        return 0 if agrees and survives else EXIT_MISMATCH
    if args.reuse_after is not None:
        return _check_reuse(args, out)
    if args.idle is None:
        raise ScenarioError("natsim check", "", "give a SCENARIO, or --idle SECONDS (a slow "
                            "answer) or --reuse-after SECONDS (a pooled connection) with "
                            "--client-profile and --appliance")
    keepalive_time = LINUX_DEFAULT_TIME if args.keepalive_time is None else args.keepalive_time
    appliance, profile = _subject(args, "linux-so-keepalive")
    advice = check(appliance, profile, args.idle, args.client_timeout,
                   sysctl_time=keepalive_time)
    pred = advice.prediction
    out.write(f"{profile.title} ({profile.name}) behind {appliance.title} "
              f"(idle timeout {appliance.tcp_idle_timeout:g} s), waiting {args.idle:g} s "
              f"for an answer:\n")
    ka = ("no TCP keepalive" if advice.keepalive_idle is None
          else f"first keepalive probe after {advice.keepalive_idle:g} s idle")
    source = profile.source
    if profile.keepalive == "os" and keepalive_time != LINUX_DEFAULT_TIME:
        # one statement: the host's sysctl as given, not the profile's default text
        source = (f"SO_KEEPALIVE with the host's net.ipv4.tcp_keepalive_time = "
                  f"{keepalive_time:g} s (--keepalive-time)")
    out.write(f"  client keepalive: {ka} ({source})\n")
    _caveats(appliance, out)
    verdict = "SURVIVES" if advice.survives else "FAILS"
    out.write(f"  {verdict}: client {pred.client} at {pred.client_at:g} s, server "
              f"{pred.server}\n")
    out.write("  why: " + "; ".join(pred.story) + "\n")
    for i, fix in enumerate(advice.fixes):
        out.write(f"  {'fix: ' if i == 0 else '     '}{fix}\n")
    return 0 if advice.survives else EXIT_MISMATCH


def _caveats(appliance: Appliance, out: TextIO) -> None:
    """Where the answer leans on a catalogue value that rests on one source."""
    for note in caveats(appliance, tcp=True):
        out.write(f"  caveat, {appliance.name} {note}\n")


def _subject(args: argparse.Namespace, default_profile: str
             ) -> tuple[Appliance, ClientProfile]:
    """The appliance (default nat-gw, its timeout overridden by --timeout) and the
    client profile a question is about."""
    try:
        appliance = get_appliance(args.appliance or "nat-gw")
        profile = get_profile(args.client_profile or default_profile)
    except KeyError as exc:
        raise ScenarioError("natsim check", "", str(exc.args[0])) from None
    if args.timeout is not None:
        appliance = appliance.with_overrides({"tcp_idle_timeout": args.timeout})
    return appliance, profile


def _check_reuse(args: argparse.Namespace, out: TextIO) -> int:
    """``natsim check --reuse-after S``: the pool question."""
    if args.idle is not None:
        raise ScenarioError("natsim check", "--idle", "give --idle (a slow answer) or "
                            "--reuse-after (a pooled connection), not both")
    appliance, profile = _subject(args, "requests-urllib3")
    keepalive_time = LINUX_DEFAULT_TIME if args.keepalive_time is None else args.keepalive_time
    try:
        advice = check_reuse(appliance, profile, args.reuse_after,
                             args.client_timeout or 1800.0, keepalive_time)
    except PoolModelError as exc:
        raise ScenarioError("natsim check", "", str(exc)) from None
    pred = advice.prediction
    version = f", {profile.version}" if profile.version else ""
    out.write(f"{profile.title} ({profile.name}{version}) behind {appliance.title} (idle "
              f"timeout {appliance.tcp_idle_timeout:g} s): a pooled connection answered at "
              f"0 s, reused after {args.reuse_after:g} s idle:\n")
    out.write(f"  client: {profile.source}\n")
    _caveats(appliance, out)
    reused = pred.requests[-1]
    verdict = "SURVIVES" if advice.survives else "FAILS"
    took = "at once" if reused.took < 1 else f"after {reused.took:.1f} s"
    out.write(f"  {verdict}: the reused request: {reused.text}, {took}\n")
    out.write("  why: " + "; ".join(pred.story) + "\n")
    for i, fix in enumerate(advice.fixes):
        out.write(f"  {'fix: ' if i == 0 else '     '}{fix}\n")
    return 0 if advice.survives else EXIT_MISMATCH
