"""``make bench``'s largest table: the engine alone holds a million flows.

A million real connections would need two million kernel sockets on this two-core machine
(several gigabytes of kernel memory, minutes to open at the dataplane's ~9,000 new
connections a second), and would measure the client and server more than the middlebox. This
measures what the middlebox itself keeps per flow: a fresh interpreter (no other allocations
in its resident memory), the NAT Gateway's engine with the dataplane's garbage-collector
settings, and ``--flows`` SYNs built with :func:`~simulator.core.packets.build_tcp`, each
from its own client address and port, to ``--destinations`` server ports, through two public
addresses (55,000 ports each per destination: 1,000,000 flows need at least ten
destinations). Every SYN goes through :meth:`Middlebox.on_packet` as the dataplane's would;
the figure is the growth of the process's resident memory divided by the flows in the table.

``python -m bench.held --flows N`` prints one JSON object; ``make bench`` runs it as the
``held`` part.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.packets import SYN, build_tcp, ip_from_str
from simulator.core.plan import SERVER_IP
from simulator.dataplane.tuning import steady_under_load

PUBLIC_IPS = ["203.0.113.1", "203.0.113.2"]
"""The NAT's two public addresses, here and in ``bench/run.py`` (on both of its sides): one
address carries at most 55,000 (NAT GW) or 64,512 (Linux) connections to one destination,
and the benches hold 100,000 to one and a million to twenty."""
PORTS_PER_ADDRESS = 60_000
FIRST_PORT = 1024
NAT_PORTS = 55_000
"""Ports one public address has per destination (the NAT Gateway's)."""


def rss_kib(pid: int | str = "self") -> int:
    """A process's resident memory (KiB), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def client(n: int) -> tuple[bytes, int]:
    """Flow ``n``'s source: 198.18.<a>.<b> (a /16 of documentation space), port in order."""
    address, port = divmod(n, PORTS_PER_ADDRESS)
    return ip_from_str(f"198.18.{1 + address // 250}.{1 + address % 250}"), FIRST_PORT + port


def hold(flows: int, destinations: int) -> dict[str, Any]:
    if flows > destinations * NAT_PORTS * len(PUBLIC_IPS):
        raise SystemExit(f"bench.held: {flows} flows need more than {destinations} "
                         f"destinations ({NAT_PORTS:,} ports per public address each)")
    steady_under_load()  # the dataplane's garbage-collector settings
    engine = Middlebox(get_appliance("nat-gw").with_overrides({"public_ips": PUBLIC_IPS}))
    server = ip_from_str(SERVER_IP)
    baseline = rss_kib()
    started = time.monotonic()
    for n in range(flows):
        src, sport = client(n)
        engine.on_packet(build_tcp(src, sport, server, 9000 + n % destinations, n, 0, SYN),
                         Side.INSIDE, 1.0)
        if n % 65_536 == 0:
            gc.collect(1)  # the dataplane's young collections, once a second or so
    took = time.monotonic() - started
    grown = rss_kib() - baseline
    held = len(engine.flows)
    return {"flows": held, "bytes_per_flow": round(grown * 1024 / held, 1) if held else 0.0,
            "resident_mib": round(grown / 1024, 1), "seconds": round(took, 1),
            "flows_per_second": round(held / took) if took else 0,
            "refused": engine.counters.get("ErrorPortAllocation", 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.held", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--destinations", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(hold(args.flows, args.destinations)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
