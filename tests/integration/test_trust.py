"""Verdicts you can trust, on real namespaces: a dead or hung middlebox is an ERROR, a crafted
frame leaves a live world forwarding, a dead live world says DEAD, a name is held once,
concurrent runs keep their verdicts, and runs killed at any moment leave nothing."""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.world import topology
from simulator.world.live import LiveWorld, call_in
from tests.integration.conftest import OURS, natsim_namespaces
from tests.integration.test_cleanup import wait_for
from tests.unit.test_frames import crafted_syn

REPO = Path(__file__).resolve().parents[2]


def natsim(*args: str, check: bool = False, timeout: float = 90,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=REPO,
                          capture_output=True, text=True, check=check, timeout=timeout,
                          env={**os.environ, **(env or {})})


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "simulator", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def middlebox_pids(results: Path) -> list[int]:
    """The dataplane of the run writing into ``results`` (its config lives there)."""
    marker = str(results / "middlebox.json").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_dead_middlebox_is_an_error_not_a_verdict(tmp_path: Path, how: int) -> None:
    """gwlb expects silence (timeout / unacknowledged): exactly what a dead middlebox gives.
    Killed or hung, the run must not pass."""
    results = tmp_path / "r"
    proc = start("run", "gwlb", "--speed", "100", "--results", str(results))
    wait_for(lambda: bool(middlebox_pids(results)))
    time.sleep(1.0)  # the connection is up, the server is working
    for pid in middlebox_pids(results):
        os.kill(pid, how)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, output
    assert "ERROR" in output and "middlebox" in output and "PASS" not in output
    result = json.loads((results / "result.json").read_text())
    assert result["verdict"] == "ERROR" and result["middlebox"]["healthy"] is False
    assert ("killed" if how == signal.SIGKILL else "stopped responding") in \
        result["middlebox"]["error"]


# -- live worlds ----------------------------------------------------------------------------


def _send_crafted(frame: bytes) -> None:
    """As root in the client's namespace: one frame on eth0 through a packet socket with a
    virtio-net header, as the trust issue found (the kernel passes it on unchecked)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
    sock.bind(("eth0", 0))
    sock.send(frame)
    sock.close()


def _http_get(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return conn.recv(100)


@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_one_crafted_frame_leaves_a_live_world_forwarding(natsim_world: NatsimWorld) -> None:
    natsim_world.start("server", [sys.executable, "-m", "http.server", "8080"])
    natsim_world.wait_for_port("server", 8080)
    mbox_ns = natsim_world.live.namespaces["middlebox"]
    # the frame must reach the middlebox from the client's own veth, with the client's MAC
    mac = natsim_world.run("client", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    peer = natsim_world.run("middlebox", ["cat", "/sys/class/net/inside/address"]).stdout
    frame = crafted_syn()
    frame = frame[:10] + bytes.fromhex(peer.strip().replace(":", "")) + \
        bytes.fromhex(mac.replace(":", "")) + frame[22:]
    call_in(natsim_world.live.namespaces["client"], _send_crafted, (frame,))

    def counted() -> bool:
        return int(natsim_world.live.status()["counters"].get("MalformedPackets", 0)) >= 1
    wait_for(counted, 5)
    assert topology.pids_in(mbox_ns), "the middlebox died"
    assert natsim_world.call("client", _http_get, "server", 8080).startswith(b"HTTP/1.0 200")
    assert natsim_world.live.health() is None


def test_status_says_dead_and_exec_warns_when_the_middlebox_is_gone() -> None:
    name = f"d{secrets.token_hex(3)}"
    up = natsim("up", "--speed", "100", "--name", name)
    assert up.returncode == 0, up.stderr
    try:
        live = LiveWorld.load(name)
        os.kill(live.middlebox_pid, signal.SIGKILL)
        wait_for(lambda: not live.alive(), 5)
        status = natsim("status", "--name", name)
        assert "DEAD" in status.stdout and "killed" in status.stdout, status.stdout
        ran = natsim("exec", "--name", name, "client", "--", "true")
        # warned, run all the same, and no success: what it saw crossed no middlebox
        assert ran.returncode == 4 and "warning" in ran.stderr and "DEAD" in ran.stderr
        assert "so before the command started" in ran.stderr, ran.stderr
    finally:
        down = natsim("down", "--name", name)
    # the world is removed all the same; the exit status says it ended without a report
    assert down.returncode == 4 and "gave no final report" in down.stderr, down.stderr
    assert name not in LiveWorld.names()


def test_a_world_name_is_held_once() -> None:
    name = f"u{secrets.token_hex(3)}"
    procs = [start("up", "--speed", "100", "--name", name) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    try:
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 2], outputs
        assert any("already up" in out for out in outputs), outputs
        # one world, not an orphan beside it
        assert len({ns.rsplit("-", 1)[0] for ns in natsim_namespaces()}) == 1
    finally:
        assert natsim("down", "--name", name).returncode == 0
    assert not natsim_namespaces()


# -- many runs at once, and runs killed at any moment ---------------------------------------


def test_four_concurrent_runs_keep_their_verdicts(tmp_path: Path) -> None:
    names = ["nat-gw", "nat-gw-keepalive", "gwlb", "nlb"]
    procs = {n: start("run", n, "--speed", "60", "--results", str(tmp_path / n))
             for n in names}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}:\n{output}"
        assert json.loads((tmp_path / name / "result.json").read_text())["verdict"] == "PASS"


def _mounts_of(prefix: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if prefix in line]


def kill_at_random(runs: int, seed: int, results: Path) -> list[str]:
    """Start ``natsim run nat-gw`` ``runs`` times, kill each at a random moment with SIGKILL
    or SIGINT or SIGTERM, then ``natsim cleanup``; return what is left of this session's
    runs (namespaces, hosts folders, registry entries, processes, mounts)."""
    rng = random.Random(seed)
    for i in range(runs):
        proc = start("run", "nat-gw", "--speed", "35", "--results", str(results / f"k{i}"))
        time.sleep(rng.uniform(0.05, 2.5))
        proc.send_signal(rng.choice([signal.SIGKILL, signal.SIGINT, signal.SIGTERM]))
        proc.communicate(timeout=60)
    cleaned = natsim("cleanup")
    assert cleaned.returncode == 0, cleaned.stderr
    prefix = OURS
    left = sorted(natsim_namespaces())
    left += [str(p) for p in topology.ETC_NETNS.glob(f"{prefix}*")] \
        if topology.ETC_NETNS.is_dir() else []
    left += [str(p) for p in topology.REGISTRY.glob(f"{prefix[len(topology.PREFIX):]}*.json")]
    left += [f"process {pid}" for pid in middlebox_pids(results)]
    left += _mounts_of(prefix)
    return left


def test_runs_killed_at_random_moments_leave_nothing_after_cleanup(tmp_path: Path) -> None:
    """6 runs in the suite; ``make kill-test`` sets ``NATSIM_KILL_RUNS=100``."""
    runs = int(os.environ.get("NATSIM_KILL_RUNS", "6"))
    seed = int(os.environ.get("NATSIM_KILL_SEED", "3"))
    assert kill_at_random(runs, seed, results=tmp_path) == []


def test_another_natsim_run_on_the_host_is_left_alone(tmp_path: Path) -> None:
    """A run with another prefix (a second terminal, another CI job) is invisible to this
    suite's checks, and ``natsim cleanup`` keeps it while it lives."""
    other = secrets.token_hex(2) + "z"
    proc = start("run", "nat-gw", "--speed", "35", "--results", str(tmp_path / "o"),
                 env={topology.RUN_PREFIX_VAR: other})
    try:
        wait_for(lambda: bool(natsim_namespaces(topology.PREFIX + other)), 20)
        assert not natsim_namespaces()  # ours: none
        cleaned = natsim("cleanup")
        assert f"kept run {other}" in cleaned.stdout, cleaned.stdout
        assert len(natsim_namespaces(topology.PREFIX + other)) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert not natsim_namespaces(topology.PREFIX + other)


@pytest.fixture(autouse=True)
def _sigint_default() -> Iterator[None]:
    # a suite started in the background inherits SIGINT ignored; the children we interrupt
    # must have the disposition a terminal gives them
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)

