"""``make bench``: the userspace middlebox against the kernel's own forwarding, side by side.

Two worlds of the same shape are built at once (client, middlebox, server namespaces, same
addresses, same veths with the same offloads):

* **userspace**: natsim's dataplane (AF_PACKET, the engine, NAT GW rules) in the middle;
* **kernel**: the middle namespace forwards with ``ip_forward=1``, conntrack and an nftables
  source NAT to the same public address, with conntrack's established-TCP timeout set to the
  NAT Gateway's 350 s: the equivalent idle-timeout setup. Both NAT to the same two public
  addresses.

Each measurement runs in one world and then the other, with the same programs (iperf3, the
natsim load generator), and the table gives both figures and their ratio. Wall-clock numbers
vary with what else the machine does; the ratio of two runs made moments apart is the figure
to compare (the README records one run and the command).

What is measured:

* bulk TCP throughput (iperf3, one stream) and small-packet rate (iperf3 UDP, 64-byte
  payloads, as fast as the sender can);
* new connections per second (the load generator opens connections as fast as it can and
  holds them);
* concurrent flows held (100,000 by default) and memory per flow: the dataplane's resident
  memory with and without the flows; for the kernel, conntrack's slab object size;
* expiry precision: with every one of those flows in the table, the dataplane resets both
  ends at each idle deadline (``on_expiry: rst_both``) and records how late after the
  deadline each RST left, in wall milliseconds (p50/p99), in each of ``--runs`` runs (3 by
  default: the tail must hold in every run), while a bulk TCP transfer crosses the same
  dataplane (``--bulk`` seconds). The kernel sends nothing at expiry, so this one has no
  kernel column;
* a million flows held by the engine alone (``bench/held.py``: synthetic SYNs in a fresh
  interpreter; real sockets for a million connections would measure the kernel), and the
  memory each takes there.

Every row says how many runs stand behind its figure; ``--json FILE`` writes the rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from bench.held import PUBLIC_IPS, rss_kib
from simulator.core import plan
from simulator.core.appliances import get_appliance
from simulator.core.configs import LoadClientConfig, LoadServerConfig, encode, module_args
from simulator.support import interrupts
from simulator.support.results import new_file, write_private
from simulator.world import topology
from simulator.world.backends import host_command
from simulator.world.backends.netns import Namespaces

ROOT = Path(__file__).resolve().parent.parent
NAT_TIMEOUT = 350


class BenchError(RuntimeError):
    """Something the benchmark needs is missing; the message says what to install."""


@dataclass
class Side:
    """One of the two worlds and what runs in it."""

    label: str
    world: topology.World
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dataplane: subprocess.Popen[bytes] | None = None
    events: Path | None = None
    source: str = plan.client_address(2)
    """The client address iperf3 binds to (an IPv6 world's client has one address)."""

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(host_command("namespaces", ns, argv), cwd=ROOT, **kw)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, argv: list[str], timeout: float) -> str:
        out = subprocess.run(host_command("namespaces", ns, argv), cwd=ROOT, timeout=timeout,
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise BenchError(f"{self.label}: {' '.join(argv[:3])} failed: {out.stderr[-500:]}")
        return out.stdout

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self.dataplane = None


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise BenchError(f"`{tool}` is needed: apt-get install {package}")


# -- the two middles -------------------------------------------------------------------------


def start_dataplane(side: Side, tmp: Path, speed: float = 1.0,
                    reset_at_expiry: bool = False, appliance_name: str = "nat-gw") -> Path:
    """natsim's dataplane with NAT GW rules (or another appliance's); returns its status
    file.

    Its events go to a file, not a pipe: nobody reads a pipe while the bench runs, and a
    dataplane blocked on a full pipe stops forwarding.
    """
    appliance = get_appliance(appliance_name)
    if appliance.nat:
        appliance = appliance.with_overrides({"public_ips": PUBLIC_IPS})
    if reset_at_expiry:
        appliance = appliance.with_overrides({"on_expiry": "rst_both"})
    stamp = time.monotonic_ns()
    status = tmp / f"status-{stamp}.json"
    inside, outside = side.world.ports()
    cfg = plan.middlebox_config([appliance], speed, inside, outside, status=str(status))
    write_private(tmp / "middlebox.json", encode(cfg))
    argv = Namespaces().command(side.world.mbox_ns, ["simulator", "middlebox", "--config",
                                                     str(tmp / "middlebox.json")])
    events = tmp / f"events-{stamp}.jsonl"
    with events.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL)
    side.procs.append(proc)
    side.dataplane = proc
    side.events = events
    deadline = time.monotonic() + 15
    while '"ready"' not in events.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"the dataplane did not start: {events.read_text()[-500:]}")
        time.sleep(0.05)
    return status


def stop_dataplane(side: Side) -> dict[str, Any]:
    """SIGTERM the dataplane and return its last line (counters, expiry lateness)."""
    proc = side.dataplane
    assert proc is not None and side.events is not None
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    side.procs.remove(proc)
    side.dataplane = None
    last: dict[str, Any] = {}
    for line in side.events.read_text().splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("kind") == "stopped":
                last = event
    return last


def make_kernel_router(side: Side) -> None:
    """Forwarding, conntrack and source NAT in the middle namespace (pyroute2 + nftables)."""
    world = side.world
    with IPRoute(netns=world.mbox_ns) as ipr:
        for ifname, address in ((world.mbox_inside_if, plan.CLIENT_GW),
                                (world.mbox_outside_if, plan.SERVER_GW)):
            index = ipr.link_lookup(ifname=ifname)[0]
            ipr.addr("add", index=index, address=address, prefixlen=plan.PREFIXLEN)
    topology.write_sysctls(world.mbox_ns, {"net.ipv4.ip_forward": 1})
    rules = (f"table ip natsim_bench {{\n  chain post {{\n"
             f"    type nat hook postrouting priority 100;\n"
             f'    oifname "{world.mbox_outside_if}" '
             f"snat to {PUBLIC_IPS[0]}-{PUBLIC_IPS[-1]}\n  }}\n}}\n")
    out = subprocess.run(["ip", "netns", "exec", world.mbox_ns, "nft", "-f", "-"],
                         input=rules, text=True, capture_output=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"nftables source NAT failed: {out.stderr.strip()}")
    topology.write_sysctls(world.mbox_ns, {
        "net.netfilter.nf_conntrack_tcp_timeout_established": NAT_TIMEOUT})


# -- measurements ----------------------------------------------------------------------------


def iperf(side: Side, args: list[str], seconds: float) -> dict[str, Any]:
    server = side.popen(side.world.server_ns, ["iperf3", "-s", "-1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        out = side.run(side.world.client_ns, ["iperf3", "-c", side.world.server_ip, "-J",
                                              "-B", side.source,
                                              "-t", f"{seconds:g}", *args], seconds + 30)
    finally:
        server.wait(10)
        side.procs.remove(server)
    result: dict[str, Any] = json.loads(out)
    return result


def throughput(side: Side, seconds: float) -> float:
    """Bulk TCP, one stream: Gbit/s received."""
    end = iperf(side, [], seconds)["end"]
    return float(end["sum_received"]["bits_per_second"]) / 1e9


def small_packets(side: Side, seconds: float) -> float:
    """64-byte UDP payloads as fast as the sender goes: thousand packets/s received."""
    total = iperf(side, ["-u", "-l", "64", "-b", "0"], seconds)["end"]["sum"]
    received = total["packets"] - total["lost_packets"]
    return float(received) / float(total["seconds"]) / 1000


def load(side: Side, connections: int, rate: float, hold: float, addresses: list[int],
         during_hold: Any = None) -> tuple[dict[str, int], float]:
    """The natsim load generator, one client and server pair per client address, each pair
    to its own server port (one destination per pair, so that neither NAT runs out of
    ports towards one destination); returns the summed counts and the wall seconds it took
    worker 0 of the first pair to open its share."""
    share = -(-connections // len(addresses))
    servers, clients = [], []
    for n in range(len(addresses)):
        mine = min(share, connections - n * share)
        server = side.popen(side.world.server_ns, [
            sys.executable, "-m", *module_args(LoadServerConfig(
                port=9000 + n, duration=mine / rate * len(addresses) + hold + 60,
                expected=mine))], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert server.stdout is not None
        server.stdout.readline()  # ready
        servers.append(server)
    started = time.monotonic()
    for n, address in enumerate(addresses):
        mine = min(share, connections - n * share)
        clients.append(side.popen(side.world.client_ns, [
            sys.executable, "-m", *module_args(LoadClientConfig(
                host=side.world.server_ip, port=9000 + n, connections=mine,
                rate=rate / len(addresses), hold=hold, connect_timeout=3,
                addresses=(plan.client_address(address),)))],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    opened = 0.0
    counts: dict[str, int] = {"established": 0, "timed_out": 0, "failed": 0}
    for client in clients:
        assert client.stdout is not None
        for line in client.stdout:
            event = json.loads(line)
            if event.get("kind") == "load_opened" and not opened:
                opened = time.monotonic() - started
                if during_hold is not None:
                    during_hold()
            if event.get("kind") == "outcome":
                for key in counts:
                    counts[key] += int(event[key])
        client.wait(30)
    for proc in servers:
        proc.terminate()
        proc.wait(30)
    for proc in servers + clients:
        side.procs.remove(proc)
    return counts, opened


def connection_rate(side: Side, connections: int) -> float:
    counts, opened = load(side, connections, 50_000, 1, [3])
    return counts.get("established", 0) / opened if opened else 0.0


def conntrack_count(side: Side) -> int:
    return int(topology.read_sysctl(side.world.mbox_ns, "net.netfilter.nf_conntrack_count"))


def conntrack_object_size() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/slabinfo").read_text().splitlines():
            if line.startswith("nf_conntrack "):
                return int(line.split()[3])
    return None


# -- the whole bench ---------------------------------------------------------------------------


@contextlib.contextmanager
def two_worlds(ip: str = "4", router: Callable[[Side], None] | None = None
               ) -> Iterator[tuple[Side, Side]]:
    """The userspace world and the kernel's (its middle made by ``router``), removed
    however the block ends; ``ip: 6`` worlds for the IPv6 rows (``bench/ipv6.py``)."""
    sides: list[Side] = []
    try:
        for label in ("userspace", "kernel"):
            run_id = topology.new_run_id()
            # client addresses: 0 and 1 for the held flows, 2 for iperf3, 3 for the
            # connection-rate run (ports stay in TIME_WAIT after a run, and the load
            # generator binds its source ports itself); an IPv6 world's client has one
            world = topology.build_world(plan.world_plan(run_id, {}, client_addresses=4, ip=ip))
            sides.append(Side(label, world, source=world.client_ip if ip != "4"
                              else plan.client_address(2)))
        (router or make_kernel_router)(sides[1])
        yield sides[0], sides[1]
    finally:
        # a second Ctrl-C (or the SIGINT that `timeout` passes on) during the teardown
        # left both worlds behind: it lands after it instead
        with interrupts.deferred():
            for side in sides:
                side.stop_all()
                topology.destroy_world(side.world.run_id)


def row(name: str, unit: str, user: float, kernel: float | None, higher_is_better: bool = True,
        runs: int = 1) -> dict[str, Any]:
    """One line of the table; ``runs``: how many runs the figure stands for."""
    ratio = None
    if kernel:
        ratio = user / kernel if higher_is_better else kernel / user if user else None
    return {"measure": name, "unit": unit, "userspace": round(user, 3),
            "kernel": None if kernel is None else round(kernel, 3),
            "ratio": None if ratio is None else round(ratio, 3), "runs": runs}


def figure(value: float) -> str:
    """A table cell: whole numbers with thousands separators (1,000,000, not 1e+06)."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.6g}"


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'measure':<56} {'userspace':>12} {'kernel':>12} {'ratio':>8} {'runs':>5}")
    for r in rows:
        kernel = "-" if r["kernel"] is None else figure(r["kernel"])
        ratio = "-" if r["ratio"] is None else f"{r['ratio'] * 100:.0f}%"
        print(f"{r['measure'] + ' (' + r['unit'] + ')':<56} {figure(r['userspace']):>12} "
              f"{kernel:>12} {ratio:>8} {r.get('runs', 1):>5}")


def held_flows(user: Side, kernel: Side, tmp: Path, flows: int, rate: float, runs: int = 1,
               bulk: float = 0.0) -> list[dict[str, Any]]:
    """Hold ``flows`` at once in both worlds; then let the userspace ones expire with RSTs.

    The time compression makes the 350 s timeout last 15 wall seconds longer than the
    opening phase, so every flow is in the table before the first one expires, and the
    clients hold their connections until the last one has. The userspace part runs
    ``runs`` times (the RST timing must hold in every run, not on average); with ``bulk``
    seconds, a bulk TCP transfer (iperf3) crosses the dataplane while the flows expire, so
    the expiry path and the packet path compete as they do under real traffic.
    """
    opening = flows / rate
    speed = NAT_TIMEOUT / (opening + 15)
    addresses = list(range(-(-flows // 60_000)))
    if len(addresses) > 2:
        raise BenchError(f"--flows {flows}: at most 120,000 (two client addresses)")
    results = [_userspace_flows(user, tmp, flows, rate, speed, opening, addresses, bulk, n)
               for n in range(runs)]
    held: dict[str, float] = {}

    def measure_kernel() -> None:
        time.sleep(1.5)
        held["kernel_flows"] = conntrack_count(kernel) - before

    before = conntrack_count(kernel)  # entries left by the runs before (TIME_WAIT)
    kernel_counts, _ = load(kernel, flows, rate, 2, addresses, measure_kernel)
    print(f"    kernel: {kernel_counts}", flush=True)
    nan = float("nan")
    first = results[0]
    rows = [row("concurrent flows held", "flows", first["flows"], held["kernel_flows"]),
            row("memory per flow", "bytes", first["per_flow"], conntrack_object_size(),
                higher_is_better=False)]
    for n, result in enumerate(results, 1):
        lateness = result["lateness"]
        label = f", run {n} of {runs}" if runs > 1 else ""
        rows.append(row(f"RST after idle deadline, p50{label}", "wall ms",
                        float(lateness.get("p50_ms", nan)), None))
        rows.append(row(f"RST after idle deadline, p99{label}", "wall ms",
                        float(lateness.get("p99_ms", nan)), None))
    if runs > 1:
        worst = max(float(r["lateness"].get("p99_ms", nan)) for r in results)
        rows.append(row("RST after idle deadline, p99, worst run", "wall ms", worst, None,
                        runs=runs))
    if bulk:
        rows.append(row("bulk TCP while the flows expire", "Gbit/s",
                        min(r["bulk_gbps"] for r in results), None, runs=runs))
    return rows


def _userspace_flows(user: Side, tmp: Path, flows: int, rate: float, speed: float,
                     opening: float, addresses: list[int], bulk: float, n: int
                     ) -> dict[str, Any]:
    """One userspace run of :func:`held_flows`: memory, lateness, bulk rate."""
    print(f"  {flows} flows at {rate:g}/s, expiring {NAT_TIMEOUT / speed:.0f} wall s after "
          f"their last packet{', with bulk TCP meanwhile' if bulk else ''} (run {n + 1}) ...",
          flush=True)
    status = start_dataplane(user, tmp, speed=speed, reset_at_expiry=True)
    assert user.dataplane is not None
    time.sleep(1)
    baseline = rss_kib(user.dataplane.pid)
    held: dict[str, float] = {}
    transfer: dict[str, float] = {}

    def bulk_during_expiry() -> None:
        # the first flows expire 15 s after the last ones opened; this starts 1.5 s in
        time.sleep(14.0)
        transfer["gbps"] = throughput(user, bulk)

    def measure_user() -> None:
        time.sleep(1.5)  # the last handshakes, and a fresh status file
        assert user.dataplane is not None
        held["rss"] = rss_kib(user.dataplane.pid)
        held["flows"] = json.loads(status.read_text())["flow_count"]
        if bulk:
            threading.Thread(target=bulk_during_expiry, daemon=True).start()

    counts, _ = load(user, flows, rate, opening + 20, addresses, measure_user)
    stopped = stop_dataplane(user)
    lateness = stopped.get("expiry_lateness", {})
    lost = {k: v for k, v in stopped.get("counters", {}).items() if k.endswith("QueueFullDrops")}
    ended = {k: stopped.get("counters", {}).get(k, 0) for k in (
        "IdleTimeoutCount", "RstFromClient", "RstFromServer", "FinSeen", "LatePackets")}
    print(f"    flows ended: {ended}", flush=True)
    print(f"    connections: {counts}; RSTs at expiry timed: {lateness.get('count', 0)} "
          f"(p99 {lateness.get('p99_ms', float('nan')):.2f} ms); frames the dataplane lost: "
          f"{lost or 'none'}" + (f"; bulk TCP meanwhile {transfer.get('gbps', 0):.2f} Gbit/s"
                                 if bulk else ""), flush=True)
    per_flow = (held["rss"] - baseline) * 1024 / held["flows"] if held["flows"] else 0.0
    return {"flows": held["flows"], "per_flow": per_flow, "lateness": lateness,
            "bulk_gbps": transfer.get("gbps", 0.0)}


def held_by_engine(flows: int) -> list[dict[str, Any]]:
    """The engine alone holding ``flows`` (``bench/held.py``: synthetic SYNs, a fresh
    interpreter, no sockets: a million real connections would measure the kernel)."""
    print(f"  {flows:,} flows held by the engine alone (synthetic SYNs) ...", flush=True)
    out = subprocess.run([sys.executable, "-m", "bench.held", "--flows", str(flows)], cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=600)
    if out.returncode != 0:
        raise BenchError(f"bench.held failed: {out.stderr.strip()[-500:]}")
    result = json.loads(out.stdout)
    print(f"    {result}", flush=True)
    return [row("flows held by the engine alone, synthetic SYNs", "flows", result["flows"],
                None),
            row(f"memory per flow at {result['flows']:,} (engine alone)", "bytes",
                result["bytes_per_flow"], conntrack_object_size(), higher_is_better=False)]


SECTIONS = ("throughput", "packets", "connections", "flows", "held", "ipv6")


def _in_worlds(args: argparse.Namespace, only: set[str]) -> list[dict[str, Any]]:
    """The parts that run in the two worlds, side by side."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natsim-bench-") as tmp_name, \
            two_worlds() as (user, kernel):
        tmp = Path(tmp_name)

        def both(title: str, fn: Any, *fargs: Any) -> tuple[float, float]:
            print(f"  {title} ...", flush=True)
            return fn(user, *fargs), fn(kernel, *fargs)

        # the flows first, on fresh worlds: what the other parts leave behind (sockets in
        # TIME_WAIT, closing connections) would otherwise share the CPU with it
        flow_rows = held_flows(user, kernel, tmp, args.flows, args.rate, args.runs,
                               args.bulk) if "flows" in only else []
        if only & {"throughput", "packets", "connections"}:
            start_dataplane(user, tmp)
            if "throughput" in only:
                rows.append(row("bulk TCP throughput, one stream", "Gbit/s",
                                *both("bulk TCP (iperf3)", throughput, args.seconds)))
            if "packets" in only:
                rows.append(row("small packets, 64-byte UDP", "kpps",
                                *both("small UDP packets (iperf3 -u -l 64)", small_packets,
                                      args.seconds)))
            if "connections" in only:
                rows.append(row("new connections", "per s",
                                *both(f"{args.connections} new connections",
                                      connection_rate, args.connections)))
            stop_dataplane(user)
    return rows + flow_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="per iperf3 run (default 5)")
    parser.add_argument("--flows", type=int, default=100_000,
                        help="concurrent flows to hold (default 100,000)")
    parser.add_argument("--connections", type=int, default=20_000,
                        help="connections for the connection-rate run (default 20,000)")
    parser.add_argument("--rate", type=float, default=4000,
                        help="connections per second while filling the table (default 4,000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of the flows part (the RST timing must hold in each; "
                             "default 3)")
    parser.add_argument("--bulk", type=float, default=10.0,
                        help="seconds of bulk TCP while the flows expire (0: none)")
    parser.add_argument("--held", type=int, default=1_000_000,
                        help="flows the engine alone holds in the held part (default "
                             "1,000,000)")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise BenchError("make bench builds network namespaces: run it as root")
    need("iperf3", "iperf3")
    need("nft", "nftables")
    only = set(args.only or SECTIONS)
    rows: list[dict[str, Any]] = []
    if only - {"held", "ipv6"}:  # the held part needs no worlds, IPv6 has its own
        rows += _in_worlds(args, only)
    if "ipv6" in only:
        from bench.ipv6 import ipv6_rows  # noqa: PLC0415 (it builds on this module)

        rows += ipv6_rows(args.seconds)
    if "held" in only:
        rows += held_by_engine(args.held)
    print_table(rows)
    if args.json:
        with new_file(args.json) as out:  # never through a link (simulator/support/results.py)
            out.write(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("make bench: interrupted; its worlds are removed", file=sys.stderr)
        raise SystemExit(130) from None
