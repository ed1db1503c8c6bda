"""natsim as an ordinary user: a user namespace of its own, and nothing left behind.

These run as an unprivileged user (``make test-rootless``; ``.ci/run`` creates one and runs
them as it). Under root they are skipped with a message saying so: the rest of the suite
covers root, and root cannot show what an ordinary user may do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.rootless,
    pytest.mark.skipif(os.geteuid() == 0, reason="rootless tests need an ordinary user: "
                       "run `make test-rootless` as one (.ci/run does, as natsim-ci)"),
]


def natsim(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def our_natsim_processes(marker: str) -> list[int]:
    """Processes of ours whose command line mentions ``marker`` (a results folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid == os.getuid() and \
                    marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def descendants(root: int) -> set[int]:
    """Every process below ``root`` (by parent pid), alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("name,outcome", [("nat-gw", ("timeout", "reset")),
                                          ("nat-gw-keepalive", ("answer", "delivered")),
                                          ("nat-gw-nat64", ("timeout", "reset"))])
def test_scenario_as_an_ordinary_user(name: str, outcome: tuple[str, str],
                                      tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = natsim("run", name, "--speed", "45", "--results", str(results))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout
    result = json.loads((results / "result.json").read_text())
    assert (result["outcome"]["client"], result["outcome"]["server"]) == outcome
    # written by "root" inside the namespace, owned by the user outside
    assert (results / "result.json").stat().st_uid == os.getuid()
    assert (results / "capture.pcap").stat().st_size > 24
    assert not our_natsim_processes(str(results))


def test_a_killed_run_leaves_nothing(tmp_path: Path) -> None:
    results = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "run", "nat-gw", "--speed",
                             "35", "--results", str(results)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "middlebox" in line and "new TCP flow" in line:
            break
    else:
        pytest.fail("the run never reached the middlebox")
    tree = descendants(proc.pid)
    assert len(tree) >= 3, tree  # the middlebox, the server and the client, at least
    userns = os.readlink(f"/proc/{proc.pid}/ns/user")
    assert userns != os.readlink("/proc/self/ns/user")  # the run has a namespace of its own
    proc.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel must do it all
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in tree if alive(pid)}
    assert not left
    # no process is left in the run's user namespace, so the kernel has freed it, and with
    # it every network and mount namespace the run made (a zombie waiting for init to reap
    # it still names the namespace, but holds none of them)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            with contextlib.suppress(OSError):
                assert os.readlink(entry / "ns" / "user") != userns, \
                    (entry / "cmdline").read_bytes()


def test_up_exec_status_down_as_an_ordinary_user() -> None:
    name = f"r{os.getpid() % 100000}"
    up = natsim("up", "--speed", "100", "--name", name)
    try:
        assert up.returncode == 0, up.stderr
        session = json.loads((Path.home() / ".cache" / "natsim" /
                              "rootless-session.json").read_text())
        assert alive(session["pid"])  # the keeper holds the namespaces between commands
        # a later command finds the world: it joins the same namespaces
        hosts = natsim("exec", "--name", name, "client", "--", "getent", "hosts", "server")
        assert hosts.returncode == 0 and "198.19.1.10" in hosts.stdout, hosts.stderr
        # a program runs on the world's clock here too: 350 model s in about 3.5 wall s
        started = time.monotonic()
        slept = natsim("exec", "--name", name, "client", "--", sys.executable, "-c",
                       "import time; m = time.monotonic(); time.sleep(350); "
                       "print(round(time.monotonic() - m))")
        assert slept.stdout.strip() == "350", slept.stdout + slept.stderr
        assert time.monotonic() - started < 350 / 100 + 10
        status = natsim("status", "--name", name)
        assert f"world {name}:" in status.stdout, status.stderr
    finally:
        down = natsim("down", "--name", name)
    assert down.returncode == 0 and f"world {name} removed" in down.stdout, down.stderr
    # the last world is down: the keeper is gone and the kernel frees the namespaces
    deadline = time.monotonic() + 5
    while alive(session["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(session["pid"])
    assert not (Path.home() / ".cache" / "natsim" / "rootless-session.json").exists()
