"""What the root network namespace looks like, to prove that the suite leaves it as it was.

natsim promises never to touch the host's network; the Docker tests start an engine, which by
default adds a bridge, iptables chains and ``ip_forward=1``. A snapshot here is the state that
matters (links, addresses, routes, rules, the forwarding and bridge sysctls, firewall rules),
with the parts that move on their own left out (counters, lifetimes, link statistics).
Reading it with ``ip``/``iptables-save``/``nft`` is fine in tests: nothing is configured.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SYSCTL_DIRS = ("/proc/sys/net/ipv4/conf/all", "/proc/sys/net/ipv4/conf/default",
               "/proc/sys/net/ipv6/conf/all", "/proc/sys/net/bridge")
SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/ip_local_port_range",
           "/proc/sys/net/ipv4/tcp_keepalive_time", "/proc/sys/net/ipv4/tcp_keepalive_intvl",
           "/proc/sys/net/ipv4/tcp_keepalive_probes")
_COUNTERS = re.compile(r"\[\d+:\d+\]|counter packets \d+ bytes \d+|valid_lft \S+|"
                       r"preferred_lft \S+")


def _run(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return _COUNTERS.sub("", out.stdout)


def _firewall() -> list[str]:
    """Rules and non-default policies only: an empty table that a tool merely listed (and so
    loaded) is the same firewall as none."""
    lines = []
    for line in _run("iptables-save").splitlines() + _run("ip6tables-save").splitlines():
        if line.startswith("-A") or (line.startswith(":") and " ACCEPT" not in line
                                     and " -" not in line):
            lines.append(line.strip())
    for line in _run("nft", "list", "ruleset").splitlines():
        text = line.strip()
        if text and not text.startswith(("table ", "chain ", "type ", "}", "policy accept")):
            lines.append(text)
    return sorted(lines)


def _sysctls() -> dict[str, str]:
    values = {}
    paths = [Path(p) for p in SYSCTLS]
    for folder in SYSCTL_DIRS:
        if Path(folder).is_dir():
            paths += sorted(p for p in Path(folder).iterdir() if p.is_file())
    for path in paths:
        try:
            values[str(path)] = path.read_text().strip()
        except OSError:  # write-only or absent (a module not loaded)
            continue
    return values


_DOCKER_NETWORK = re.compile(r"\bbr-[0-9a-f]{12}\b|\bveth[0-9a-f]{7}\b")


def snapshot(docker_networks: bool = True) -> dict[str, object]:
    """The state that matters. ``docker_networks=False`` leaves out the bridges (and their
    addresses and routes) of user-defined Docker networks: a Docker-backed run in another
    terminal makes those while ``make test``, which uses no Docker, is running."""
    def keep(lines: list[str]) -> list[str]:
        return lines if docker_networks else [x for x in lines if not _DOCKER_NETWORK.search(x)]

    links = [re.sub(r"\s+", " ", line.split("link/")[0]) for line in
             _run("ip", "-o", "link", "show").splitlines()]
    return {
        "links": sorted(keep([re.sub(r"^\d+: ", "", line) for line in links])),
        "addresses": sorted(keep([re.sub(r"^\d+: ", "", line) for line in
                                  _run("ip", "-o", "addr", "show").splitlines()])),
        "routes": sorted(keep(_run("ip", "route", "show", "table", "all").splitlines()
                              + _run("ip", "-6", "route", "show", "table", "all").splitlines())),
        "rules": sorted(_run("ip", "rule").splitlines() + _run("ip", "-6", "rule").splitlines()),
        "sysctls": _sysctls(),
        "firewall": _firewall(),
    }


def differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """Human-readable differences, empty when the host is as it was."""
    out = []
    for key, old in before.items():
        new = after[key]
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    out.append(f"{key}: {name}: {old.get(name)!r} -> {new.get(name)!r}")
        elif isinstance(old, list) and isinstance(new, list):
            out += [f"{key}: gone: {x}" for x in old if x not in new]
            out += [f"{key}: new: {x}" for x in new if x not in old]
    return out
