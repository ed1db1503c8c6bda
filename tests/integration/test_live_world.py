"""Live worlds: ``natsim up``/``exec``/``status``/``down`` with a real third-party client
(curl), and the pytest plugin's ``natsim_world`` fixture used by our own tests."""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.world.live import LiveWorld
from tests.unit.helpers import checksums_valid

REPO = Path(__file__).resolve().parents[2]
SPEED = 100  # the NAT Gateway's 350 s last 3.5 wall s


def natsim(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=REPO,
                          capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture
def world_name(tmp_path: Path) -> Iterator[str]:
    """A world brought up through the CLI, with a slow HTTP server answering after 500 s
    (model seconds: `natsim exec` runs it on the world's clock)."""
    name = f"t{secrets.token_hex(3)}"
    up = natsim("up", "--appliance", "nat-gw", "--speed", str(SPEED), "--name", name)
    assert f"world {name} is up" in up.stdout
    server = subprocess.Popen(
        [sys.executable, "-m", "simulator", "exec", "--name", name, "server", "--",
         sys.executable, "-m", "simulator.workloads.slow_http", "--delay", "500"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        yield name
    finally:
        natsim("down", "--name", name, check=False)  # a test may have brought it down
        server.communicate(timeout=10)
    assert name not in LiveWorld.names()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed "
                    "(apt-get install curl; .ci/run installs it)")
def test_curl_with_and_without_keepalive(world_name: str) -> None:
    url = "http://server:8080/"
    # curl as it comes: its keepalive every 60 s (model seconds; the kernel's whole wall
    # second makes it 100), well below 350; -m 1000 is model seconds too
    good = natsim("exec", "--name", world_name, "client", "--", "curl", "-sS", "-m", "1000",
                  url, check=False)
    assert good.returncode == 0, good.stderr
    assert "the slow answer" in good.stdout

    bad = subprocess.Popen(
        [sys.executable, "-m", "simulator", "exec", "--name", world_name, "client", "--",
         "curl", "-sS", "-m", "800", "--no-keepalive", url],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # 200 model s into the wait: the flow is in the table, idle
    status = natsim("status", "--name", world_name).stdout
    assert "ESTABLISHED" in status and "198.18.1.10" in status and "203.0.113.1" in status
    out, err = bad.communicate(timeout=20)
    assert bad.returncode == 28, err  # curl: operation timed out: the answer never came
    assert out == ""
    after = natsim("status", "--name", world_name).stdout
    assert "IdleTimeoutCount 2" in after and "RstSent" in after
    prom = natsim("status", "--name", world_name, "--prometheus").stdout
    assert f'natsim_idletimeoutcount_total{{appliance="nat-gw",namespace="AWS/NATGateway",' \
           f'world="{world_name}"}} 2' in prom
    # down tells each connection's fate from the world's capture, and draws the killed one
    down = natsim("down", "--name", world_name).stdout
    assert "the capture replayed through AWS NAT Gateway's rules" in down, down
    assert "summary: 1 untouched, 1 late-rst" in down, down  # curl's own keepalive saved one
    assert "answered by an RST from the appliance" in down
    pictures = Path(down.split("pictures: ")[1].split(",")[0].strip())
    assert pictures.name == "flow1.svg" and "expired after 350 s idle" in pictures.read_text()
    # and its page: the connections' fates as its story, the late packet and its RST drawn,
    # on the capture's own axis (the fates' times and the frames' agree)
    page = Path(down.split("page: ")[1].split()[0])
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>',
                     page.read_text(), re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert data["verdict"] is None and data["story"][-1] == "summary: 1 untouched, 1 late-rst"
    killed = next(line for line in data["story"] if "answered by an RST" in line)
    at = re.search(r"packet at ([\d.]+) s", killed)
    assert at is not None
    late = float(at.group(1))
    dropped = [f for f in data["frames"] if f["outcome"] == "dropped"]
    assert any(abs(f["t"] - late) < 0.2 and "forgotten at" in f["rule"] for f in dropped), \
        (killed, dropped)
    assert any(f["outcome"] == "made" and "RST sent back" in f["rule"]
               for f in data["frames"])


def test_exec_passes_exit_status_and_output_through(world_name: str) -> None:
    result = natsim("exec", "--name", world_name, "client", "--", "sh", "-c",
                    "echo from-the-client; getent hosts server; "
                    "echo world=$NATSIM_WORLD speed=$NATSIM_SPEED; exit 7", check=False)
    assert result.returncode == 7
    assert "from-the-client" in result.stdout and "198.19.1.10" in result.stdout
    assert f"world={world_name} speed=" in result.stdout  # a script can tell where it runs
    assert "speed=\n" not in result.stdout


def test_errors_name_what_is_wrong(world_name: str) -> None:
    dup = natsim("up", "--name", world_name, check=False)
    assert dup.returncode == 2 and "already up" in dup.stderr
    missing = natsim("exec", "--name", "nosuchworld", "client", "--", "true", check=False)
    assert missing.returncode == 2 and "no world named 'nosuchworld'" in missing.stderr


def _resolve_and_connect(port: int) -> tuple[str, str]:
    with socket.create_connection(("server", port), timeout=60) as sock:
        return sock.getsockname()[0], sock.getpeername()[0]


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_plugin_runs_functions_inside_hosts(natsim_world: NatsimWorld) -> None:
    natsim_world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                                  "--delay", "0"])
    natsim_world.wait_for_port("server", 8080)
    local, peer = natsim_world.call("client", _resolve_and_connect, 8080)
    assert (local, peer) == ("198.18.1.10", "198.19.1.10")
    assert natsim_world.kinds()[:1] == ["flow_created"]
    assert natsim_world.wall(350) == 3.5


@pytest.mark.natsim(appliance="nat-gw", timeout=100, speed=SPEED)
def test_plugin_marker_overrides_the_timeout(natsim_world: NatsimWorld) -> None:
    assert natsim_world.live.appliance["tcp_idle_timeout"] == 100
    with pytest.raises(ConnectionRefusedError):
        natsim_world.call("client", _resolve_and_connect, 9)


def test_several_worlds_at_once() -> None:
    names = [f"m{secrets.token_hex(3)}" for _ in range(2)]
    try:
        for name in names:
            natsim("up", "--speed", "50", "--timeout", "100", "--name", name)
        status = natsim("status").stdout
        for name in names:
            assert f"world {name}:" in status
        # each world is separate: its own namespaces, its own middlebox
        first, second = (LiveWorld.load(n) for n in names)
        assert set(first.namespaces.values()).isdisjoint(second.namespaces.values())
        assert first.alive() and second.alive()
        ambiguous = natsim("exec", "client", "--", "true", check=False)
        assert ambiguous.returncode == 2 and "say which with --name" in ambiguous.stderr
    finally:
        for name in names:
            natsim("down", "--name", name, check=False)
    assert not set(names) & set(LiveWorld.names())


_SINK = """
import hashlib, socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 9100))
listener.listen()
while True:  # the first connection is wait_for_port's
    conn, _ = listener.accept()
    digest, size = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    conn.sendall(f"{size} {digest.hexdigest()}".encode())
    conn.close()
"""


def _send_bulk(megabytes: int) -> tuple[str, str]:
    data = random.Random(7).randbytes(megabytes << 20)
    with socket.create_connection(("server", 9100), timeout=20) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply.decode(), f"{len(data)} {hashlib.sha256(data).hexdigest()}"


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_bulk_transfer_crosses_whole_as_gso_frames(natsim_world: NatsimWorld) -> None:
    """64 KB GSO frames with partial checksums cross the NAT intact, both ways (the ACKs)."""
    natsim_world.start("server", [sys.executable, "-c", _SINK])
    natsim_world.wait_for_port("server", 9100)
    received, sent = natsim_world.call("client", _send_bulk, 16)
    assert received == sent  # every byte arrived, in order
    # status.json is rewritten 4 times a second: wait until it holds the transfer
    deadline = time.monotonic() + 5
    while True:
        counters = natsim_world.live.status()["counters"]
        if counters.get("BytesInFromSource", 0) >= 16 << 20 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    frames, octets = counters["PacketsInFromSource"], counters["BytesInFromSource"]
    # with offloads off (or the frames split) the average would be at most 1,500 bytes
    assert octets / frames > 8000, (frames, octets)
    # Between veths a partial checksum is never computed (the receiver trusts it), so the
    # delivery above cannot show a wrong one; the capture can: it finishes each checksum
    # as the wire would, from the partial value the NAT left behind.
    time.sleep(0.5)  # the dataplane flushes its capture between two polls
    natted = [bytes(p[IP]) for p in rdpcap(str(natsim_world.results_dir / "capture.pcap"))
              if p.haslayer(TCP) and p[IP].src == "203.0.113.1" and len(p[TCP].payload) > 1448]
    assert natted, "no GSO frame from the NAT's public address in the capture"
    assert all(checksums_valid(frame) for frame in natted)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed "
                    "(apt-get install curl; .ci/run installs it)")
def test_events_tell_the_story_and_follow_until_the_world_is_down() -> None:
    """`status` keeps a flow gone moments ago, marked; `natsim events` keeps the whole
    story; `--follow` prints each event as it comes and ends by itself when the world is
    taken down."""
    name = f"e{secrets.token_hex(3)}"
    natsim("up", "--appliance", "nat-gw", "--speed", str(SPEED), "--name", name)
    follower = None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "simulator", "exec", "--name", name, "server", "--",
             sys.executable, "-m", "simulator.workloads.slow_http", "--delay", "500"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        follower = subprocess.Popen(
            [sys.executable, "-m", "simulator", "events", "--name", name, "--follow"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        curl = natsim("exec", "--name", name, "client", "--", "curl", "-sS", "-m", "420",
                      "--no-keepalive", "http://server:8080/", check=False)
        assert curl.returncode == 28, curl.stderr  # timed out: the answer never came
        status = natsim("status", "--name", name).stdout  # the flow is gone, yet shown
        assert "GONE" in status and "expired after 350 s idle" in status, status
        told = natsim("events", "--name", name).stdout
        assert "new TCP flow #1" in told and "expired after 350 s idle" in told, told
        assert "flow_expired" in natsim("events", "--name", name, "--json").stdout
    finally:
        natsim("down", "--name", name)
        server.communicate(timeout=10)
    assert follower is not None
    out, err = follower.communicate(timeout=10)  # it stopped by itself
    assert follower.returncode == 0, err
    assert "expired after 350 s idle" in out and "RST" in out, out


UNSAFE_INNER = '''
import subprocess, sys

import pytest


def slow_server(natsim_world):
    return natsim_world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                                         "--delay", "380"])


@pytest.mark.natsim(appliance="nat-gw", speed=100, fail_on="unsafe")
def test_killed_but_the_test_says_nothing(natsim_world):
    slow_server(natsim_world)
    natsim_world.wait_for_port("server", 8080)
    done = natsim_world.run("client", ["curl", "-sS", "-m", "400", "--no-keepalive",
                                       "http://server:8080/"])
    assert done.returncode == 28  # the test's own assertion holds: only the gate fails it


@pytest.mark.natsim(appliance="nat-gw", speed=100, fail_on="unsafe")
def test_keepalive_survives(natsim_world):
    slow_server(natsim_world)
    natsim_world.wait_for_port("server", 8080)
    done = natsim_world.run("client", ["curl", "-sS", "-m", "400", "http://server:8080/"])
    assert done.returncode == 0
    [conn] = natsim_world.connections()
    assert conn["verdict"] == "untouched" and conn["keepalive_probes"]
'''


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed "
                    "(apt-get install curl; .ci/run installs it)")
def test_plugin_fail_on_unsafe_fails_a_test_whose_connection_was_killed(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(UNSAFE_INNER)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rA", "-p", "no:xdist", str(tmp_path / "test_inner.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    # the killed test's own assertions held; the gate fails it at teardown (an error, as for
    # a middlebox that died), and the run's exit status says so
    assert "2 passed, 1 error" in out and done.returncode == 1, out[-4000:]
    assert "ERROR at teardown of test_killed_but_the_test_says_nothing" in out
    assert "1 connection(s) did not survive AWS NAT Gateway (idle timeout 350 s; " \
           "fail_on='unsafe')" in out, out[-4000:]
    assert "met an RST" in out
