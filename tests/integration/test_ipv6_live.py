"""IPv6 for real: the NAT64 scenario's frames on the wire, real clients over NAT64, and the
kernel's own IPv6 connection tracking as the reference natsim is checked against.

* The NAT64 scenario: the client's side of the capture is IPv6 (ethertype 0x86DD, the
  client's 2001:db8:1::10 to 64:ff9b::c613:10a), the server's side IPv4 from the public
  address, the name came from DNS64, and the model agrees with the run.
* curl -6 and Node's default agent through a NAT64 world, with three answers that must
  agree as in ``test_real_clients.py``: the real client, the emulation, the model.
* The differential: client -- middle (the kernel forwards IPv6, conntrack tracks it with
  ``nf_conntrack_tcp_timeout_established`` lowered to 2 s and INVALID dropped) -- server,
  and the same through natsim's ``linux-conntrack`` at 200 model s on an ``ip: 6`` world:
  curl with and without keepalive must meet the same fate behind both.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.runs.runner import run_scenario
from simulator.spec.scenario import load_scenario
from tests.integration.conftest import OURS
from tests.integration.test_kernel_differential import LATE, RULES, reference_path
from tests.integration.test_real_clients import (
    CLIENT_TIMEOUT,
    NODE_AGENT,
    SPEED,
    WALL_LIMIT,
    agree,
    needs,
    slow_server,
)

pytestmark = pytest.mark.integration

C6, S6, SERVER4, PUBLIC = "2001:db8:1::10", "64:ff9b::c613:10a", "198.19.1.10", "203.0.113.1"


def test_the_nat64_scenario_is_ipv6_inside_and_ipv4_outside(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_scenario(load_scenario("nat-gw-nat64"), 100.0, tmp_path / "r", out)
    print(out.getvalue())
    assert (result.client, result.server) == ("timeout", "reset")
    assert (result.client, result.server) == result.plan.prediction.outcome()
    text = out.getvalue()
    assert f"api.internal -> {S6} (DNS64, from {SERVER4})" in text
    assert f"[{C6}]" in text and "RST sent back to the server" in text
    frames = rdpcap(str(tmp_path / "r" / "capture.pcap"))
    tcp6 = [f for f in frames if IPv6 in f and TCP in f]
    tcp4 = [f for f in frames if IP in f and TCP in f and f[TCP].dport in (8080, 1024)]
    assert tcp6 and all(f[Ether].type == 0x86DD for f in tcp6)
    assert {(f[IPv6].src, f[IPv6].dst) for f in tcp6} <= {(C6, S6), (S6, C6)}
    assert {(f[IP].src, f[IP].dst) for f in tcp4 if f[TCP].dport == 8080} == {(PUBLIC, SERVER4)}
    # the request crossed translated: the same payload on both sides
    request6 = next(bytes(f[TCP].payload) for f in tcp6 if bytes(f[TCP].payload))
    assert any(bytes(f[TCP].payload) == request6 for f in tcp4)


# -- real clients through NAT64 -------------------------------------------------------------


@needs("curl")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED, ip="nat64")
@pytest.mark.parametrize("profile,args", [
    ("curl-default", []),  # curl's own 60 s keepalive, translated like any packet
    ("curl-no-keepalive", ["--no-keepalive"]),
])
def test_curl_over_nat64(natsim_world: NatsimWorld, profile: str, args: list[str]) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", ["curl", "-6", "-sS", "-m", f"{CLIENT_TIMEOUT:g}", *args,
                                       "http://server:8080/"], timeout=WALL_LIMIT)
    created = [e for e in natsim_world.events() if e.get("kind") == "flow_created"]
    assert created and all(f"[{C6}]" in str(e.get("client")) for e in created), created
    agree(natsim_world, profile, done.returncode == 0 and "slow answer" in done.stdout)


@needs("node")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED, ip="nat64")
def test_node_default_agent_over_nat64(natsim_world: NatsimWorld) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", ["node", "-e", NODE_AGENT % (CLIENT_TIMEOUT * 1000)],
                            timeout=WALL_LIMIT)
    assert any(f"[{C6}]" in str(e.get("client")) for e in natsim_world.events())
    agree(natsim_world, "node-http-agent", done.returncode == 0)


# -- the kernel's IPv6 conntrack as the reference --------------------------------------------

ESTABLISHED = 2
"""The middle's ``nf_conntrack_tcp_timeout_established`` (wall s): 200 model s at 100."""
ANSWER_AFTER = 2.5
"""Wall seconds the server thinks (250 model s): past the timeout."""
CURL = {"keepalive": ["--keepalive-time", "1"], "none": ["--no-keepalive"]}
"""In wall seconds in both worlds: a probe each 100 model s, or none."""


@pytest.fixture
def reference6(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """client -- middle (the kernel forwards IPv6, conntrack tracks it) -- server."""
    assert shutil.which("nft"), "the reference needs nft: apt-get install nftables"
    ends = (("inside", "2001:db8:1::10", "2001:db8:1::1", "2001:db8:2::/64"),
            ("outside", "2001:db8:2::10", "2001:db8:2::1", "2001:db8:1::/64"))
    with reference_path(
            f"{OURS}ref6{request.node.callspec.id}", ends, 64, RULES % LATE["drop"], {
                "net.ipv6.conf.all.forwarding": 1, "net.netfilter.nf_conntrack_tcp_loose": 0,
                "net.netfilter.nf_conntrack_tcp_timeout_established": ESTABLISHED},
            hosts={"net.ipv6.conf.all.accept_dad": 0,
                   "net.ipv6.conf.default.accept_dad": 0}) as path:
        yield path


def _curl(run: list[str], how: str) -> int:
    """curl's exit status against a server that answers after ANSWER_AFTER wall seconds."""
    return subprocess.run([*run, "curl", "-6", "-sS", "-o", "/dev/null", "-m", "4", *CURL[how],
                           "http://[2001:db8:2::10]:8080/"], capture_output=True, text=True,
                          timeout=30, check=False).returncode


def _slow_server(run: list[str]) -> subprocess.Popen[bytes]:
    serving = subprocess.Popen([*run, sys.executable, "-m", "simulator.workloads.slow_http",
                                "--port", "8080", "--delay", str(ANSWER_AFTER), "--bind", "::"],
                               stdout=subprocess.PIPE)
    assert serving.stdout is not None and b"listening" in serving.stdout.readline()
    return serving


@needs("curl")
@pytest.mark.natsim(appliance={"name": "linux-conntrack", "tcp_idle_timeout": ESTABLISHED * 100},
                    speed=100, ip="6", wall_time=True)
@pytest.mark.parametrize("reference6", ["keepalive", "none"], indirect=True)
def test_natsim_and_the_kernels_ipv6_conntrack_agree(
        reference6: tuple[str, str], natsim_world: NatsimWorld,
        request: pytest.FixtureRequest) -> None:
    how = request.node.callspec.id
    client, server = reference6
    serving = _slow_server(["ip", "netns", "exec", server])
    try:
        kernel = _curl(["ip", "netns", "exec", client], how)
    finally:
        serving.kill()
        serving.communicate()
    # the same, wall clock and all, through natsim: curl's timers mean the same in both
    natsim_world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                                  "--port", "8080", "--delay", str(ANSWER_AFTER),
                                  "--bind", "::"])
    natsim_world.wait_for_port("server", 8080)
    done = natsim_world.run("client", ["curl", "-6", "-sS", "-o", "/dev/null", "-m", "4",
                                       *CURL[how], "http://[2001:db8:2::10]:8080/"],
                            timeout=30)
    ours, expired = done.returncode, "flow_expired" in natsim_world.kinds()
    print(f"{how}: curl exit {kernel} behind the kernel's conntrack, {ours} behind natsim")
    assert ours == kernel, done.stderr
    assert (kernel == 0) is (how == "keepalive")  # the probes kept it, or the answer was lost
    assert expired is (how == "none")
