"""Nothing is left behind: not after a normal run, not after Ctrl-C, not after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyroute2 import netns

from simulator import topology
from tests.integration.conftest import natsim_namespaces

REPO = Path(__file__).resolve().parents[2]


def start_run(tmp_path: Path, scenario: str = "nat-gw", speed: str = "35") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "run", scenario, "--speed", speed,
         "--results", str(tmp_path / "r")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def run_processes(ns_prefix: str) -> list[int]:
    return [pid for ns in natsim_namespaces() if ns.startswith(ns_prefix)
            for pid in topology.pids_in(ns)]


def wait_until_running(proc: subprocess.Popen[str]) -> str:
    """Wait until the run's three namespaces exist and the client is up; return the run id."""
    def ready() -> bool:
        spaces = natsim_namespaces()
        ids = {topology._run_id_of(ns) for ns in spaces}
        ids.discard(None)
        return bool(ids) and any(len(topology.pids_in(f"natsim-{i}-client")) > 0 for i in ids)
    wait_for(ready)
    run_ids = {topology._run_id_of(ns) for ns in natsim_namespaces()} - {None}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert run_id is not None
    return run_id


def test_ctrl_c_removes_namespaces_and_processes(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    run_id = wait_until_running(proc)
    assert run_processes(f"natsim-{run_id}")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not [ns for ns in natsim_namespaces() if run_id in ns]
    assert not (topology.REGISTRY / f"{run_id}.json").exists()
    assert not list(topology.ETC_NETNS.glob(f"natsim-{run_id}-*"))


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    run_id = wait_until_running(proc)
    proc.terminate()
    proc.communicate(timeout=20)
    assert not [ns for ns in natsim_namespaces() if run_id in ns]


def test_after_a_crash_children_die_and_cleanup_removes_only_our_leftovers(
        tmp_path: Path) -> None:
    bystander = "natsim-bystander"  # looks like ours but is not a run's namespace name
    netns.create(bystander)
    try:
        proc = start_run(tmp_path)
        run_id = wait_until_running(proc)
        children = run_processes(f"natsim-{run_id}")
        assert children
        proc.kill()  # SIGKILL: no finally clause runs
        proc.communicate(timeout=10)
        # PR_SET_PDEATHSIG takes the middlebox, client and server down with the runner
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in children), 10)
        left = {ns for ns in natsim_namespaces() if run_id in ns}
        assert len(left) == 3
        result = subprocess.run([sys.executable, "-m", "simulator", "cleanup"], cwd=REPO,
                                capture_output=True, text=True, check=True)
        assert f"run {run_id}" in result.stdout
        assert not [ns for ns in natsim_namespaces() if run_id in ns]
        assert bystander in natsim_namespaces()
    finally:
        netns.remove(bystander)


def test_cleanup_spares_a_live_run(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    try:
        run_id = wait_until_running(proc)
        result = subprocess.run([sys.executable, "-m", "simulator", "cleanup"], cwd=REPO,
                                capture_output=True, text=True, check=True)
        assert f"kept run {run_id}" in result.stdout
        assert len([ns for ns in natsim_namespaces() if run_id in ns]) == 3
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_world_has_no_route_out_and_no_private_addresses() -> None:
    run_id = topology.new_run_id()
    world = topology.build_world(run_id, {"tcp_keepalive_time": 7200,
                                          "tcp_keepalive_intvl": 75, "tcp_keepalive_probes": 9})
    try:
        assert topology.read_sysctl(world.mbox_ns, "net.ipv4.ip_forward") == "0"
        assert topology.read_sysctl(world.client_ns, "net.ipv4.tcp_keepalive_time") == "7200"
        for ns in world.namespaces:
            routes = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "route"],
                                    capture_output=True, text=True, check=True).stdout
            assert "default" not in routes
            addrs = subprocess.run(["ip", "netns", "exec", ns, "ip", "-4", "-br", "addr"],
                                   capture_output=True, text=True, check=True).stdout
            for private in (" 10.", " 172.16.", " 192.168."):
                assert private not in addrs
        mbox_addrs = subprocess.run(["ip", "netns", "exec", world.mbox_ns, "ip", "-4", "addr"],
                                    capture_output=True, text=True, check=True).stdout
        assert "inet " in mbox_addrs  # loopback only
        assert "198." not in mbox_addrs and "203.0.113" not in mbox_addrs
    finally:
        topology.destroy_world(run_id)
    assert os.path.exists(f"/run/netns/{world.client_ns}") is False
