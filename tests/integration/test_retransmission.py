"""The model's retransmission rule against real sockets: a peer that drops everything.

Two client namespaces connect to a peer namespace over veths; once the connections are up,
the peer loses its addresses, so every later segment reaches it and is dropped silently
(a host that does not forward drops a packet for an address it lacks without a word), and
each client's neighbour entry is permanent (no neighbour failure, no EHOSTUNREACH). Each
client then sends and waits: the kernel retransmits until it gives up with ETIMEDOUT, and
that time is compared with :meth:`Retransmission.give_up`. Three clients at once:

* ``tcp_retries2`` 3 with the default timer (the kernel's model timeout: 3.0 s);
* the settings of a world at speed 100 (``tcp_rto_min_us`` 2000, ``tcp_rto_max_ms`` 1200,
  ``tcp_retries2`` as :func:`at_speed` chooses it): the compressed 15-minute hang;
* ``TCP_USER_TIMEOUT`` 2 s, which overrides ``tcp_retries2``.

And keepalive probes into the same silence: ``TCP_USER_TIMEOUT`` replaces their count
(:func:`simulator.core.model.keepalive_give_up`).
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest
from pyroute2 import IPRoute, netns

from simulator.core.retransmission import Retransmission, at_speed, world_sysctls
from simulator.world import topology
from tests.integration.conftest import OURS

pytestmark = pytest.mark.integration

PEER = "peer"
CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9000), timeout=5)
s.settimeout(None)
print("connected", flush=True)
sys.stdin.readline()
if int(sys.argv[2]):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(sys.argv[2]))
start = time.monotonic()
s.send(b"request")
try:
    s.recv(10)
    print("answered", flush=True)
except OSError as exc:
    print(exc.errno, time.monotonic() - start, flush=True)
"""
LISTENER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(8)
print("listening", flush=True)
kept = [s.accept()[0] for _ in range(3)]
time.sleep(120)
"""


def _line(proc: subprocess.Popen[str], limit: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], limit)
    assert ready, "no answer from a program in the test's namespaces"
    return proc.stdout.readline().strip()


def _silence(peer: str) -> None:
    """From now on the peer drops everything, silently: it loses its addresses."""
    with IPRoute(netns=peer) as ipr:
        for i in range(2):
            ipr.addr("del", index=ipr.link_lookup(ifname=f"{PEER}{i}")[0],
                     address=f"198.18.{251 + i}.2", prefixlen=24)


def _timed_out(clients: dict[str, subprocess.Popen[str]], limit: float) -> dict[str, float]:
    """Each client's seconds to ETIMEDOUT (anything else fails the test)."""
    seen = {}
    for name, proc in clients.items():
        code, took = _line(proc, limit).split()
        assert code == "110", f"{name}: errno {code}, not ETIMEDOUT"
        seen[name] = float(took)
    return seen


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    """Two clients and the peer, each client on its own veth (198.18.251/252.0/24)."""
    names = (f"{OURS}rtx-c1", f"{OURS}rtx-c2", f"{OURS}rtx-p")
    try:
        for name in names:
            netns.create(name)
        for i, client in enumerate(names[:2]):
            with IPRoute(netns=client) as ipr:
                ipr.link("add", ifname="eth0", kind="veth",
                         peer={"ifname": f"{PEER}{i}", "net_ns_fd": names[2]})
            with IPRoute(netns=names[2]) as ipr:
                index = ipr.link_lookup(ifname=f"{PEER}{i}")[0]
                ipr.addr("add", index=index, address=f"198.18.{251 + i}.2", prefixlen=24)
                ipr.link("set", index=index, state="up")
                peer_mac = ipr.get_links(index)[0].get_attr("IFLA_ADDRESS")
            with IPRoute(netns=client) as ipr:
                index = ipr.link_lookup(ifname="eth0")[0]
                ipr.addr("add", index=index, address=f"198.18.{251 + i}.1", prefixlen=24)
                ipr.link("set", index=index, state="up")
                ipr.neigh("add", dst=f"198.18.{251 + i}.2", lladdr=peer_mac, ifindex=index,
                          state="permanent")
        yield names
    finally:
        for name in names:
            if name in netns.listnetns():
                for pid in topology.pids_in(name):
                    subprocess.run(["kill", "-9", str(pid)], check=False)
                netns.remove(name)


def test_the_kernel_gives_up_when_the_model_says(namespaces: tuple[str, str, str]) -> None:
    c1, c2, peer = namespaces
    compressed = at_speed(Retransmission(), 100)
    topology.write_sysctls(c1, {"net.ipv4.tcp_retries2": 3})
    topology.write_sysctls(c2, {f"net.ipv4.{k}": v for k, v in world_sysctls(compressed).items()})
    cases = {  # name: (namespace, peer address, TCP_USER_TIMEOUT ms, the model's settings)
        "tcp_retries2 3": (c1, "198.18.251.2", 0, Retransmission(retries2=3)),
        "speed 100": (c2, "198.18.252.2", 0, replace(compressed, rtt=0.0)),
        "TCP_USER_TIMEOUT 2 s": (c1, "198.18.251.2", 2000, Retransmission(user_timeout=2.0)),
    }
    listener = subprocess.Popen(["ip", "netns", "exec", peer, sys.executable, "-c", LISTENER],
                                stdout=subprocess.PIPE, text=True)
    clients = {}
    try:
        assert _line(listener, 10) == "listening"
        for name, (ns, address, user_ms, _) in cases.items():
            clients[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, address,
                 str(user_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert _line(clients[name], 10) == "connected"
        _silence(peer)
        for proc in clients.values():
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        seen = _timed_out(clients, 60)
    finally:
        _stop([listener, *clients.values()])
    for name, (_, _, _, model) in cases.items():
        predicted = model.give_up()
        print(f"{name}: ETIMEDOUT after {seen[name]:.3f} s, the model {predicted:.3f} s")
        # the kernel's RTO is rto_min plus the round trip, rounded up to a timer tick, and
        # a timer fires late by up to its wheel's granularity: within 12 % here
        assert abs(seen[name] - predicted) <= 0.12 * predicted + 0.05, (name, seen, predicted)


PROBER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, int(sys.argv[2]))
if int(sys.argv[3]):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(sys.argv[3]))
s.connect((sys.argv[1], 9000))
heard = time.monotonic()  # the handshake: the last the client hears from the peer
print("connected", flush=True)
try:
    s.recv(10)
except OSError as exc:
    print(exc.errno, time.monotonic() - heard, flush=True)
"""


def test_tcp_user_timeout_replaces_the_keepalive_probe_count(
        namespaces: tuple[str, str, str]) -> None:
    """Keepalive 2/1 s into a peer that drops everything: with TCP_KEEPCNT 4 the kernel
    gives up after 2 + 4 x 1 = 6 s; with TCP_KEEPCNT 9 and TCP_USER_TIMEOUT 3.5 s, at the
    first probe timer past 3.5 s, 4 s: the count ignored (tcp_keepalive_timer), as
    :func:`keepalive_give_up` says."""
    from simulator.core.appliances import LateAction  # noqa: PLC0415
    from simulator.core.model import Exchange, keepalive_give_up  # noqa: PLC0415

    c1, c2, peer = namespaces
    cases = {"TCP_KEEPCNT 4": (c1, "198.18.251.2", 4, 0, None),
             "TCP_USER_TIMEOUT 3.5 s": (c2, "198.18.252.2", 9, 3500, 3.5)}
    listener = subprocess.Popen(["ip", "netns", "exec", peer, sys.executable, "-c", LISTENER],
                                stdout=subprocess.PIPE, text=True)
    clients = {}
    try:
        assert _line(listener, 10) == "listening"
        for name, (ns, address, count, user_ms, _) in cases.items():
            clients[name] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-c", PROBER, address, str(count),
                 str(user_ms)], stdout=subprocess.PIPE, text=True)
            assert _line(clients[name], 10) == "connected"
        _silence(peer)  # before the first probe (2 s)
        seen = _timed_out(clients, 30)
    finally:
        _stop([listener, *clients.values()])
    for name, (_, _, count, _, user) in cases.items():
        ex = Exchange(350.0, LateAction.DROP, LateAction.DROP, 100.0, 100.0, 2.0, 1.0, count,
                      keepalive_user_timeout=user)
        predicted = keepalive_give_up(ex, 2.0)
        print(f"{name}: ETIMEDOUT after {seen[name]:.3f} s, the model {predicted:.3f} s")
        assert abs(seen[name] - predicted) <= 0.3, (name, seen, predicted)
