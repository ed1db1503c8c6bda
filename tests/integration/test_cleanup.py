"""Nothing is left behind: not after a normal run, not after Ctrl-C, not after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from simulator.core.plan import world_plan
from simulator.world import topology
from tests.integration.conftest import natsim_namespaces

REPO = Path(__file__).resolve().parents[2]


def _as_from_a_terminal() -> None:
    # A test run started in the background (`cmd &` in a script) inherits SIGINT ignored,
    # and Python keeps an ignored SIGINT ignored: give the run the disposition it has when a
    # person starts it at a terminal, where Ctrl-C is what these tests imitate.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(runs: list[subprocess.Popen[str]], tmp_path: Path,
              own_group: bool = False) -> subprocess.Popen[str]:
    """``natsim run nat-gw``; with ``own_group`` in a process group of its own, as a
    terminal's foreground job is (Ctrl-C there signals the whole group)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "run", "nat-gw", "--speed", "35",
         "--results", str(tmp_path / f"r{len(runs)}")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        process_group=0 if own_group else None,
        preexec_fn=_as_from_a_terminal)  # noqa: PLW1509 (pytest's main thread)
    runs.append(proc)
    return proc


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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until_running(proc: subprocess.Popen[str]) -> str:
    """Wait until the run's client workload is up; return the run id.

    The runner itself visits each namespace while it builds the world (to write sysctls), so
    "a process in the client namespace" is not enough: look for the client program.
    """
    found: list[str] = []

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[0]
        for ns in natsim_namespaces():
            if ns.endswith("-client") and any("simulator.workloads.client" in _cmdline(p)
                                              for p in topology.pids_in(ns)):
                run_id = topology._run_id_of(ns)
                assert run_id is not None
                found.append(run_id)
                return True
        return False
    wait_for(ready)
    return found[0]


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    """Runs started by a test; any still alive at the end are interrupted and reaped."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_ctrl_c_removes_namespaces_and_processes(runs: list[subprocess.Popen[str]],
                                                 tmp_path: Path) -> None:
    proc = start_run(runs, tmp_path)
    run_id = wait_until_running(proc)
    assert run_processes(f"natsim-{run_id}")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not [ns for ns in natsim_namespaces() if run_id in ns]
    assert not (topology.REGISTRY / f"{run_id}.json").exists()
    assert not list(topology.ETC_NETNS.glob(f"natsim-{run_id}-*"))


def test_sigterm_is_handled_like_ctrl_c(runs: list[subprocess.Popen[str]],
                                        tmp_path: Path) -> None:
    proc = start_run(runs, tmp_path)
    run_id = wait_until_running(proc)
    proc.terminate()
    proc.communicate(timeout=20)
    assert not [ns for ns in natsim_namespaces() if run_id in ns]


def test_after_a_crash_children_die_and_cleanup_removes_only_our_leftovers(
        runs: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    bystander = "natsim-bystander"  # looks like ours but is not a run's namespace name
    netns.create(bystander)
    try:
        proc = start_run(runs, tmp_path)
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
        assert bystander in natsim_namespaces(topology.PREFIX)
    finally:
        netns.remove(bystander)


def test_cleanup_spares_a_live_run(runs: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    proc = start_run(runs, tmp_path)
    run_id = wait_until_running(proc)
    result = subprocess.run([sys.executable, "-m", "simulator", "cleanup"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert f"kept run {run_id}" in result.stdout
    assert len([ns for ns in natsim_namespaces() if run_id in ns]) == 3


def test_world_has_no_route_out_and_no_private_addresses() -> None:
    run_id = topology.new_run_id()
    world = topology.build_world(world_plan(run_id, {"tcp_keepalive_time": 7200,
                                                     "tcp_keepalive_intvl": 75,
                                                     "tcp_keepalive_probes": 9}))
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


@pytest.mark.parametrize("to_group", [False, True], ids=["runner", "group"])
@pytest.mark.parametrize("delay", [0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
def test_ctrl_c_at_any_moment_of_start_up_leaves_nothing(
        runs: list[subprocess.Popen[str]], tmp_path: Path, delay: float,
        to_group: bool) -> None:
    """Interrupt while the world is being built or the processes are starting: the runner
    alone (``kill -INT``), or its whole process group as a terminal's Ctrl-C does (then the
    helpers pyroute2 forks while it creates the namespaces get it too)."""
    proc = start_run(runs, tmp_path, own_group=to_group)
    time.sleep(delay)
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    # 130: natsim caught it; -2 (killed by SIGINT) or 1: it came while Python was still
    # importing natsim, before anything was built
    assert proc.returncode in (130, -signal.SIGINT, 1), output
    assert "PASS" not in output and "FAIL" not in output, output  # the run did stop
    assert not natsim_namespaces(), output
