"""The reference natsim is checked against: the kernel's own connection tracking.

The same reuse-after-idle client (``simulator.workloads.pool_client``, the pool server on
the other side) runs twice: once through a middle namespace where Linux forwards with
conntrack (the recipe below, also in the README: ``nf_conntrack_tcp_timeout_established``
lowered to 4 s, ``nf_conntrack_tcp_loose`` 0 so that a mid-stream packet of a forgotten
flow is INVALID, and INVALID packets dropped, or rejected with ``tcp reset``), and once
through natsim with the same timeout (400 model s at speed 100) and the same late rule.
The per-request outcomes must be the same: this is how we know natsim's verdict is the one a
real stateful middlebox gives, for the silent drop and for the RST.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from simulator.core.configs import PoolClientConfig, PoolServerConfig, encode
from simulator.core.messages import Kind, Message
from simulator.core.retransmission import Retransmission, at_speed, world_sysctls
from simulator.runs.runner import run_scenario
from simulator.spec.scenario import parse_scenario
from simulator.world import topology
from tests.integration.conftest import OURS

pytestmark = pytest.mark.integration

SPEED = 100.0
ESTABLISHED = 4
"""The middle's ``nf_conntrack_tcp_timeout_established`` (wall s): 400 model s."""
REUSE = 500.0
"""Model seconds between the two requests on the pooled connection."""
RULES = """
table inet natsim_ref {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ct state new tcp flags & (syn | ack) == syn accept
    ct state invalid %s
  }
}
"""
LATE = {"drop": "drop", "rst": "reject with tcp reset"}


End = tuple[str, str, str, str]
"""(interface on the middle, host address, its gateway on the middle, the far network)."""


@contextmanager
def reference_path(prefix: str, ends: tuple[End, End], prefixlen: int, rules: str,
                   middle: Mapping[str, int | str], hosts: Mapping[str, int | str] | None = None
                   ) -> Iterator[tuple[str, str]]:
    """client -- middle (the kernel forwards, conntrack tracks, ``rules`` filter) --
    server: three namespaces named from ``prefix``, removed however the block ends."""
    client, mid, server = (f"{prefix}-{x}" for x in ("c", "m", "s"))
    try:
        for name in (client, mid, server):
            netns.create(name)
            if hosts:
                topology.write_sysctls(name, hosts)
        for ns, (ifname, address, gateway, far) in zip((client, server), ends, strict=True):
            with IPRoute(netns=ns) as ipr:
                ipr.link("add", ifname="eth0", kind="veth",
                         peer={"ifname": ifname, "net_ns_fd": mid})
                index = ipr.link_lookup(ifname="eth0")[0]
                ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
                ipr.link("set", index=index, state="up")
                ipr.route("add", dst=far, gateway=gateway)
            with IPRoute(netns=mid) as ipr:
                index = ipr.link_lookup(ifname=ifname)[0]
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
                ipr.link("set", index=index, state="up")
        subprocess.run(["ip", "netns", "exec", mid, "nft", "-f", "-"], check=True,
                       input=rules, text=True)
        topology.write_sysctls(mid, middle)
        yield client, server
    finally:
        for name in (client, mid, server):
            if name in netns.listnetns():
                for pid in topology.pids_in(name):
                    subprocess.run(["kill", "-9", str(pid)], check=False)
                netns.remove(name)


@pytest.fixture
def reference(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """client -- middle (the kernel forwards, conntrack tracks) -- server; its late rule
    is the test's parameter."""
    tag = request.node.callspec.id
    assert shutil.which("nft"), "the reference needs nft: apt-get install nftables"
    ends = (("inside", "198.18.1.10", "198.18.1.1", "198.19.0.0/16"),
            ("outside", "198.19.1.10", "198.19.1.1", "198.18.0.0/16"))
    with reference_path(f"{OURS}ref{tag}", ends, 24, RULES % LATE[tag], {
            "net.ipv4.ip_forward": 1, "net.netfilter.nf_conntrack_tcp_loose": 0,
            "net.netfilter.nf_conntrack_tcp_timeout_established": ESTABLISHED}) as (c, s):
        kernel = {f"net.ipv4.{k}": v
                  for k, v in world_sysctls(at_speed(Retransmission(), SPEED)).items()}
        for ns in (c, s):
            topology.write_sysctls(ns, kernel)
        yield c, s


def _outcome(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """The client's outcome, and how long (wall s) its last attempt waited."""
    out, _ = proc.communicate(timeout=60)
    waited = 0.0
    for line in out.splitlines():
        msg = Message.from_line(line, "client")
        if "waited" in msg.data:
            waited = float(str(msg.data["waited"]))
        if msg.kind == Kind.OUTCOME and msg.outcome is not None:
            return msg.outcome, waited
    raise AssertionError(f"no outcome:\n{out}")


def _through_the_kernel(client: str, server: str) -> tuple[str, float]:
    serving = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, "-m", "simulator.workloads.pool_server",
         "--config", encode(PoolServerConfig(port=8080, delay=0.005, delay_label="0.5 s",
                                             answer="OK", limit=60))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert serving.stdout is not None
        assert "listening" in serving.stdout.readline()
        asking = subprocess.Popen(
            ["ip", "netns", "exec", client, sys.executable, "-m",
             "simulator.workloads.pool_client", "--config", encode(PoolClientConfig(
                 host="198.19.1.10", port=8080, request="GET /pooled", at=(0.0, REUSE / SPEED),
                 pool=1, retry=1, timeout=18.0, keepalive="off"))],
            stdout=subprocess.PIPE, text=True)
        return _outcome(asking)
    finally:
        serving.kill()
        serving.communicate()


@pytest.mark.parametrize("reference", ["drop", "rst"], indirect=True)
def test_natsim_and_the_kernels_conntrack_agree_on_each_request(
        reference: tuple[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    late = request.node.callspec.id
    kernel, waited = _through_the_kernel(*reference)
    scenario = parse_scenario({
        "appliance": {"name": "linux-conntrack", "tcp_idle_timeout": ESTABLISHED * SPEED,
                      "late_from_inside": late, "late_from_outside": late},
        "client": {"requests": [0, REUSE], "retry": 1, "timeout": 1800, "keepalive": "off"},
        "server": {"delay": 0.5},
        "expect": {"client": ["answer", "reset+answer" if late == "rst" else
                              "retransmit_timeout"],
                   "server": ["delivered", "delivered"] if late == "rst" else ["delivered"]},
    }, "kernel-differential", f"conntrack-{late}")
    out = io.StringIO()
    result = run_scenario(scenario, SPEED, tmp_path / "natsim", out)
    print(f"{late}: kernel conntrack {kernel!r}, natsim {result.client!r}")
    assert result.client == kernel, out.getvalue()
    assert (result.client, result.server) == (scenario.expect_client, scenario.expect_server)
    if late == "drop":  # the hang lasts as long behind both, within one RTO cap
        ours = next(e for e in result.events if e.kind == "retransmit_timeout").t - REUSE
        cap = at_speed(Retransmission(), SPEED).rto_max * SPEED
        print(f"the hang: {waited * SPEED:.0f} model s behind conntrack, {ours:.0f} behind "
              "natsim")
        assert ours == pytest.approx(waited * SPEED, abs=cap)
