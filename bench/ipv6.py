"""``make bench``'s IPv6 rows: the same comparison over IPv6, in two ``ip: 6`` worlds.

* **userspace**: natsim's dataplane with the EC2 security group's rules
  (``ec2-sg-conntrack``: IPv6 flows tracked as they are, no translation; the kernel has no
  NAT64 of its own to compare a NAT Gateway with);
* **kernel**: the middle namespace forwards IPv6 with conntrack tracking every flow
  (an nftables ``ct state`` rule), its established-TCP timeout at 350 s.

An IPv6 world's hosts have checksum and segmentation offloads off (``core/plan.py``: the
dataplane then handles complete, MTU-sized frames), in both worlds alike, so these rows
compare with each other, not with the IPv4 rows, whose hosts keep veth's offloads.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from pyroute2 import IPRoute

from bench.run import (
    NAT_TIMEOUT,
    BenchError,
    Side,
    row,
    small_packets,
    start_dataplane,
    stop_dataplane,
    throughput,
    two_worlds,
)
from simulator.core import plan
from simulator.world import topology

TRACK = """table inet natsim_bench6 {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state new accept
  }
}
"""


def make_kernel_router6(side: Side) -> None:
    """IPv6 forwarding and conntrack in the middle namespace (pyroute2 + nftables)."""
    world = side.world
    ifnames = (world.mbox_inside_if, world.mbox_outside_if)
    topology.write_sysctls(world.mbox_ns, {
        "net.ipv6.conf.all.disable_ipv6": 0,
        **{f"net.ipv6.conf.{i}.disable_ipv6": 0 for i in ifnames},
        **{f"net.ipv6.conf.{i}.accept_dad": 0 for i in ifnames}})
    with IPRoute(netns=world.mbox_ns) as ipr:
        for ifname, address in zip(ifnames, (plan.CLIENT_GW6, plan.SERVER_GW6), strict=True):
            ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=address,
                     prefixlen=plan.PREFIXLEN6)
    # the hosts' neighbour entries name the dataplane's MAC, which is this interface's own
    topology.write_sysctls(world.mbox_ns, {
        "net.ipv6.conf.all.forwarding": 1,
        "net.netfilter.nf_conntrack_tcp_timeout_established": NAT_TIMEOUT})
    out = subprocess.run(["ip", "netns", "exec", world.mbox_ns, "nft", "-f", "-"],
                         input=TRACK, text=True, capture_output=True, check=False)
    if out.returncode != 0:
        raise BenchError(f"nftables IPv6 tracking failed: {out.stderr.strip()}")


def ipv6_rows(seconds: float) -> list[dict[str, Any]]:
    """Bulk TCP and 64-byte UDP over IPv6, natsim beside the kernel."""
    print("  IPv6 worlds (ip: 6, offloads off in both) ...", flush=True)
    with TemporaryDirectory(prefix="natsim-bench6-") as tmp, \
            two_worlds("6", make_kernel_router6) as (user, kern):
        start_dataplane(user, Path(tmp), appliance_name="ec2-sg-conntrack")
        try:
            bulk = throughput(user, seconds), throughput(kern, seconds)
            small = small_packets(user, seconds), small_packets(kern, seconds)
        finally:
            stop_dataplane(user)
    return [row("IPv6: bulk TCP throughput, one stream", "Gbit/s", *bulk),
            row("IPv6: small packets, 64-byte UDP", "kpps", *small)]
