"""natsim in containers: the entry points the shipped ``docker-compose.yml`` runs.

In a container, Docker owns the network: it makes the interfaces, names them in no
particular order, hands out the addresses and the MACs. So the middlebox container finds
its two sides by address (the client side is 198.18.0.0/16, the server side 198.19.0.0/16),
learns the client's and the server's MACs through its kernel's ARP, and then runs the same
dataplane, engine and catalogue as in namespaces. Its own addresses answer ARP (that is how
client and server reach it) and its kernel does not forward (``ip_forward=0`` in compose),
so every packet of a flow goes through the userspace dataplane alone.

Docker's internal networks let each side see only its own subnet (``core/edge.py``): the
client reaches the server at a virtual address on its own network, and the server sees the
NAT's address as an alias on its own, both answered by the dataplane. So client and server
containers need no route and no capability, and any image can take their place.
``natsim docker-host`` runs the natsim workloads (``--role``), or holds the container up
for the docker backend, which runs its programs with ``docker exec``.

Settings come from the environment (names in ``ENV``), in *model* seconds, with
``NATSIM_SPEED`` converting to wall time, as in a scenario file.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pyroute2 import IPRoute

from simulator.core.appliances import ApplianceError, get_appliance
from simulator.core.configs import ConfigError, MiddleboxConfig, Port, decode, encode
from simulator.core.edge import docker_edge
from simulator.core.messages import Kind, Message, Role
from simulator.core.plan import middlebox_config
from simulator.dataplane import packet_loop as dataplane

ENV = {
    "NATSIM_APPLIANCE": ("nat-gw", "appliance from the catalogue (natsim list)"),
    "NATSIM_TIMEOUT": ("", "idle timeout override, model seconds (empty: the appliance's)"),
    "NATSIM_SPEED": ("35", "time compression: 1 wall second = SPEED model seconds"),
    "NATSIM_CLIENT": ("198.18.1.10", "the client container's address"),
    "NATSIM_SERVER": ("198.19.1.10", "the server container's address"),
    "NATSIM_SERVER_VIP": ("198.18.1.3", "the server's address as the client's network sees "
                                        "it (give the client `server` -> this)"),
    "NATSIM_SERVER_DELAY": ("400", "model seconds the server waits before answering"),
    "NATSIM_CLIENT_TIMEOUT": ("900", "model seconds the client waits for the answer"),
    "NATSIM_KEEPALIVE": ("os", "client keepalive: off, os (SO_KEEPALIVE, timing from the "
                               "container's sysctls), socket (TCP_KEEPIDLE/INTVL/CNT below)"),
    "NATSIM_KEEPALIVE_IDLE": ("", "socket mode: TCP_KEEPIDLE, model seconds"),
    "NATSIM_KEEPALIVE_INTERVAL": ("", "socket mode: TCP_KEEPINTVL, model seconds"),
    "NATSIM_EXPECT": ("", "client only: the outcome expected (answer, timeout, reset); the "
                          "container then exits 0 when it is met and 1 when not"),
}
CLIENT_SIDE = ipaddress.ip_network("198.18.0.0/16")
SERVER_SIDE = ipaddress.ip_network("198.19.0.0/16")
PORT = 8080
READY_FILE = Path("/tmp/natsim-middlebox-ready")
CLIENT_START = 3.0
"""Wall seconds the client workload waits before connecting: probing the server's port
would itself be a connection, and the server workload answers the first one it accepts."""


class DockerSetupError(RuntimeError):
    """The container's network is not what natsim expects; the message says what."""


def env(name: str) -> str:
    return os.environ.get(name, ENV[name][0])


def speed() -> float:
    value = float(env("NATSIM_SPEED"))
    if value <= 0:
        raise DockerSetupError(f"NATSIM_SPEED must be above 0, got {value:g}")
    return value


def wall(model_seconds: str) -> float:
    return float(model_seconds) / speed()


# -- the middlebox container ----------------------------------------------------------------


def interfaces() -> dict[str, tuple[str, str]]:
    """``{"inside"|"outside": (ifname, mac)}``, found by the addresses Docker gave them."""
    found: dict[str, tuple[str, str]] = {}
    with IPRoute() as ipr:
        names = {link["index"]: (link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"))
                 for link in ipr.get_links()}
        for addr in ipr.get_addr(family=socket.AF_INET):
            ip = ipaddress.ip_address(addr.get_attr("IFA_ADDRESS"))
            for side, net in (("inside", CLIENT_SIDE), ("outside", SERVER_SIDE)):
                if ip in net:
                    found[side] = names[addr["index"]]
    missing = {"inside", "outside"} - set(found)
    if missing:
        raise DockerSetupError(
            f"the middlebox container needs an address in {CLIENT_SIDE} (client side) and one "
            f"in {SERVER_SIDE} (server side); none for: {', '.join(sorted(missing))}. Attach "
            "it to both networks of docker-compose.yml")
    return found


def resolve_mac(ip: str, timeout: float = 60.0) -> str:
    """The MAC of a neighbour, through the kernel's ARP (a datagram to the discard port
    makes the kernel ask); waits for the container to come up."""
    deadline = time.monotonic() + timeout
    with IPRoute() as ipr, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not resolved yet (EHOSTUNREACH)
                probe.sendto(b"", (ip, 9))
            for neigh in ipr.get_neighbours(dst=ip):
                mac = neigh.get_attr("NDA_LLADDR")
                if mac and neigh["state"] & 0x02:  # NUD_REACHABLE
                    return str(mac)
            time.sleep(0.3)
    raise DockerSetupError(f"no answer to ARP for {ip} within {timeout:g} s: is that "
                           "container up, with that address?")


def chain_title(cfg: MiddleboxConfig) -> str:
    """The appliances of a runner's dataplane configuration, by name, in order."""
    return f"{'+'.join(a.name for a in cfg.chain)} (from the runner)"


def middlebox_main(argv: list[str]) -> int:
    """``natsim docker-middlebox [--config FILE]``: the dataplane, configured from Docker.

    Without ``--config`` everything comes from the environment (the compose file). With it,
    the file is the runner's dataplane configuration (``backend: docker``): the appliance
    chain, speed, capture, metrics and address aliases are kept, and only what Docker
    decides (interface names, our MACs, the neighbours' MACs) is filled in here.
    """
    parser = argparse.ArgumentParser(prog="natsim docker-middlebox",
                                     description=middlebox_main.__doc__)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    sides = interfaces()
    # the server is up first; the client may start after us (compose waits for our health
    # check), so its MAC is learnt from its first frame (dataplane.py)
    inside = Port(sides["inside"][0], sides["inside"][1], None)
    outside = Port(sides["outside"][0], sides["outside"][1],
                   resolve_mac(env("NATSIM_SERVER")))
    if args.config is not None:
        try:
            cfg = replace(decode(MiddleboxConfig, args.config.read_text()), inside=inside,
                          outside=(outside,))
        except (OSError, ConfigError) as exc:
            raise DockerSetupError(f"{args.config}: {exc}") from None
        title = chain_title(cfg)
    else:
        cfg, title = _config_from_env(inside, outside)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(encode(cfg))
    READY_FILE.touch()  # compose's health check: the client may start
    assert cfg.edge is not None
    aliases = ", ".join(f"{k} for {v}" for k, v in cfg.edge.outside.items())
    print(Message(Role.MIDDLEBOX, Kind.DOCKER,
                  f"{title}, speed {cfg.speed:g}; inside {sides['inside'][0]} (server "
                  f"seen as {next(iter(cfg.edge.inside))}), outside "
                  f"{sides['outside'][0]} (aliases {aliases})").to_line(), flush=True)
    return dataplane.main(["--config", f.name])


def _config_from_env(inside: Port, outside: Port) -> tuple[MiddleboxConfig, str]:
    try:
        appliance = get_appliance(env("NATSIM_APPLIANCE"))
        if env("NATSIM_TIMEOUT"):
            appliance = appliance.with_overrides(
                {"tcp_idle_timeout": float(env("NATSIM_TIMEOUT"))})
    except (ApplianceError, KeyError, ValueError) as exc:
        raise DockerSetupError(f"NATSIM_APPLIANCE / NATSIM_TIMEOUT: {exc}") from None
    cfg = middlebox_config(
        [appliance], speed(), inside, [outside], pcap=os.environ.get("NATSIM_PCAP") or None,
        # each network sees only its own subnet (core/edge.py)
        edge=docker_edge(appliance.public_ips, env("NATSIM_CLIENT"), env("NATSIM_SERVER"),
                         env("NATSIM_SERVER_VIP")))
    title = f"{appliance.title}, idle timeout {appliance.tcp_idle_timeout:g} model s"
    return cfg, title


# -- client and server containers -----------------------------------------------------------


def run_role(role: str) -> int:
    from simulator.workloads import client, report, server  # noqa: PLC0415 (containers only)

    if role == "server":
        delay = wall(env("NATSIM_SERVER_DELAY"))
        outcome = server.run(PORT, delay, "the slow answer", delay + wall(
            env("NATSIM_CLIENT_TIMEOUT")) + 30, f"{env('NATSIM_SERVER_DELAY')} model s")
        report("server", Kind.OUTCOME, outcome, outcome=outcome)
        while True:  # stay up: compose's --abort-on-container-exit waits for the client
            time.sleep(3600)
    time.sleep(CLIENT_START)  # the server container's listener (compose starts it first)
    mode = env("NATSIM_KEEPALIVE")
    idle = env("NATSIM_KEEPALIVE_IDLE")
    interval = env("NATSIM_KEEPALIVE_INTERVAL")
    outcome = client.run("server", PORT, "GET /slow-answer", wall(env("NATSIM_CLIENT_TIMEOUT")),
                         mode, max(1, round(wall(idle))) if idle else None,
                         max(1, round(wall(interval))) if interval else None, None)
    report("client", Kind.OUTCOME, outcome, outcome=outcome)
    expected = env("NATSIM_EXPECT")
    if not expected:
        return 0
    verdict = "PASS" if outcome == expected else "FAIL"
    report("client", Kind.VERDICT, f"{verdict}: {outcome} (expected {expected})",
           verdict=verdict)
    return 0 if verdict == "PASS" else 1


def host_main(argv: list[str]) -> int:
    """``natsim docker-host``: run a workload's role, or hold the container up."""
    parser = argparse.ArgumentParser(
        prog="natsim docker-host", description="In a client or server container behind the "
        "natsim middlebox: run the client or server workload, or, without --role, hold the "
        "container up for programs started with `docker exec` (the docker backend).",
        epilog="environment: " + "; ".join(f"{k} ({v[1]}, default {v[0]!r})"
                                            for k, v in ENV.items()))
    parser.add_argument("--role", choices=("client", "server"), default=None)
    args = parser.parse_args(argv)
    if args.role:
        return run_role(args.role)
    print(json.dumps({"kind": "holding", "text": "holding the container up"}), flush=True)
    while True:
        time.sleep(3600)


def main(which: str, argv: list[str]) -> int:
    try:
        return middlebox_main(argv) if which == "docker-middlebox" else host_main(argv)
    except DockerSetupError as exc:
        print(f"natsim {which}: error: {exc}", file=sys.stderr)
        return 3
