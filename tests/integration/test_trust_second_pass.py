"""Trust, second pass, on real namespaces: a middlebox stopped in a run's last second, or
killed or stopped before it is ready, makes the run an ERROR; the pytest plugin fails a test
whose world's middlebox died or stalled; ``natsim exec`` exits 4 when the world died while
it ran; an ordinary user who owns the folder a root run writes into cannot steer it; a live
world's lock file goes with it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.fuzz_inputs import conversation, pcap_bytes
from simulator.world.live import WORLDS, LiveWorld
from simulator.world.topology import pids_in
from tests.integration.test_cleanup import wait_for
from tests.integration.test_trust import middlebox_pids, natsim, start

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def test_a_middlebox_stopped_in_the_last_second_is_an_error(tmp_path: Path) -> None:
    """nat-gw at speed 100: the client gives up at 900 model s (9 wall s). The middlebox is
    stopped half a second before: too late for the heartbeat check (5 s of silence), so
    only its missing final report can tell. It used to PASS."""
    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "run", "nat-gw", "--speed",
                             "100", "--results", str(results), "--jsonl"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # the RST to the server (400 model s) sets the clock
        lines.append(line)
        if '"rst_sent"' in line:
            event = json.loads(line)
            time.sleep((900 - float(event["t"])) / 100 - 0.5)
            for pid in middlebox_pids(results):
                os.kill(pid, signal.SIGSTOP)
            break
    output = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 4, output
    result = json.loads((results / "result.json").read_text())
    assert result["verdict"] == "ERROR" and result["middlebox"]["healthy"] is False
    assert result["outcome"] == {"client": "timeout", "server": "reset"}  # what PASSed before
    assert "no final report" in result["middlebox"]["error"]


SITECUSTOMIZE = """
import os, signal
if b"middlebox" in open("/proc/self/cmdline", "rb").read().split(b"\\0")[2:4]:
    os.kill(os.getpid(), signal.{sig})
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGSTOP"], ids=["killed", "stopped"])
def test_a_middlebox_killed_or_stopped_at_start_up_is_an_error(tmp_path: Path,
                                                               sig: str) -> None:
    """The dataplane's interpreter signals itself before it is ready (a ``sitecustomize``
    on its path that acts only in ``python -m simulator middlebox``). It used to exit 3
    ("the machine lacks something") with no result.json."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(sig=sig))
    results = tmp_path / "r"
    done = natsim("run", "gwlb", "--speed", "100", "--results", str(results),
                  env={"PYTHONPATH": f"{hook}:{REPO}"}, timeout=120)
    assert done.returncode == 4, done.stdout + done.stderr
    result = json.loads((results / "result.json").read_text())
    assert result["verdict"] == "ERROR"
    why = "was killed by signal 9" if sig == "SIGKILL" else "gave no 'ready' line"
    assert why in result["middlebox"]["error"] and "before the run could start" in \
        result["middlebox"]["error"]
    assert "ERROR" in done.stdout and "PASS" not in done.stdout


# -- the pytest plugin ----------------------------------------------------------------------

INNER = '''
import os, signal, socket, time
import pytest


def connect(host, port):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"x")
        return s.recv(10)


SERVER = """
import socket
s = socket.create_server(("", 8080))
while True:
    c, _ = s.accept()
    if c.recv(10):
        c.sendall(b"ok")
    c.close()
"""


def times_out(host, port):
    try:
        connect(host, port)
    except OSError:
        return "timeout"
    return "answer"


@pytest.mark.natsim(appliance="nat-gw", speed=50)
def test_live(natsim_world):
    natsim_world.start("server", ["python3", "-c", SERVER])
    natsim_world.wait_for_port("server", 8080)
    assert natsim_world.call("client", connect, "server", 8080) == b"ok"


@pytest.mark.natsim(appliance="nat-gw", speed=50)
def test_killed_mid_test(natsim_world):
    os.kill(natsim_world.live.middlebox_pid, signal.SIGKILL)
    time.sleep(0.5)
    # a test that expects the client to time out: it would pass with nothing forwarding
    assert natsim_world.call("client", times_out, "server", 8080) == "timeout"


@pytest.mark.natsim(appliance="nat-gw", speed=50)
def test_stopped_after_the_last_call(natsim_world):
    assert natsim_world.call("client", times_out, "server", 8081) == "timeout"
    os.kill(natsim_world.live.middlebox_pid, signal.SIGSTOP)
'''


def test_the_plugin_fails_a_test_whose_middlebox_died_or_stalled(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rA", str(tmp_path / "test_inner.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert "PASSED test_inner.py::test_live" in out, out[-4000:]
    assert "FAILED test_inner.py::test_killed_mid_test" in out, out[-4000:]
    assert "DEAD: the middlebox is gone; it was killed by SIGKILL" in out, out[-4000:]
    # the body passed; the teardown found no final report: an error, not a pass
    assert "ERROR test_inner.py::test_stopped_after_the_last_call" in out, out[-4000:]
    assert "PASSED test_inner.py::test_stopped_after_the_last_call" in out
    assert "gave no final report" in out
    assert "1 failed, 2 passed, 2 errors" in out, out[-2000:]  # the killed one's teardown too


# -- live worlds ----------------------------------------------------------------------------


@pytest.fixture
def world() -> Iterator[str]:
    name = f"x{os.urandom(3).hex()}"
    up = natsim("up", "--speed", "100", "--name", name)
    assert up.returncode == 0, up.stderr
    try:
        yield name
    finally:
        natsim("down", "--name", name)
    assert not (WORLDS / f".{name}.lock").exists()  # the lock file goes with the world


def _commands_in(ns: str) -> list[str]:
    names = []
    for pid in pids_in(ns):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def test_exec_exits_4_when_the_world_dies_while_it_runs(world: str) -> None:
    ok = natsim("exec", "--name", world, "client", "--", "sh", "-c", "exit 3")
    assert ok.returncode == 3, ok.stderr  # the program's own status, unchanged
    live = LiveWorld.load(world)
    proc = start("exec", "--name", world, "client", "--", "sleep", "200")  # model s: 2 wall s
    wait_for(lambda: "sleep" in _commands_in(live.namespaces["client"]))  # it runs: now
    os.kill(live.middlebox_pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 4, output
    assert "died while the command ran" in output and "DEAD" in output
    down = natsim("down", "--name", world)
    assert down.returncode == 4 and "gave no final report" in down.stderr, down.stderr


def test_down_is_clean_when_the_middlebox_reports(world: str) -> None:
    assert (WORLDS / f".{world}.lock").exists()
    down = natsim("down", "--name", world)
    assert down.returncode == 0, down.stderr
    assert not (WORLDS / f".{world}.lock").exists()


# -- an ordinary user's folder, root's run --------------------------------------------------

SWAPPER = """
import os, sys, time
shared, victim_capture, victim_log = sys.argv[1:4]
deadline = time.monotonic() + float(sys.argv[4])
n = 0
while time.monotonic() < deadline:
    run = os.path.join(shared, "run")
    try:
        if os.stat(run).st_uid != os.getuid():  # root's new folder: swap it
            n += 1
            os.rename(run, os.path.join(shared, f"old{n}"))
            os.mkdir(run)
            os.symlink(victim_capture, os.path.join(run, "capture.pcap"))
            os.mkdir(os.path.join(run, "logs"))
            os.symlink(victim_log, os.path.join(run, "logs", "middlebox.stderr"))
            print("swapped", flush=True)
    except OSError:
        pass
    time.sleep(0.001)
"""


@pytest.fixture
def shared_by_nobody() -> Iterator[Path]:
    """A folder that the ordinary user ``nobody`` owns, in one that user can reach."""
    top = Path(tempfile.mkdtemp(prefix="natsim-shared-"))
    os.chmod(top, 0o755)
    shared = top / "shared"
    shared.mkdir()
    os.chown(shared, NOBODY, NOBODY)
    try:
        yield shared
    finally:
        shutil.rmtree(top)


def test_a_root_run_refuses_a_folder_an_ordinary_user_can_swap(shared_by_nobody: Path,
                                                                tmp_path: Path) -> None:
    """``nobody`` owns the parent and swaps root's new results folder for one of links (to
    a root-only file, and to a file root would truncate): the run is refused before it
    creates anything, and the files are untouched."""
    victims = Path(tempfile.mkdtemp(prefix="natsim-victims-"))
    try:
        capture, log = victims / "root-only", victims / "precious"
        capture.write_text("secret")
        os.chmod(capture, 0o600)
        log.write_text("precious")
        swapper = subprocess.Popen(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", SWAPPER, str(shared_by_nobody), str(capture), str(log), "20"],
            stdout=subprocess.PIPE, text=True)
        try:
            done = natsim("run", "nat-gw", "--speed", "100", "--results",
                          str(shared_by_nobody / "run"))
        finally:
            swapper.kill()
            swapped, _ = swapper.communicate()
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{shared_by_nobody} belongs to uid {NOBODY}" in done.stderr
        assert capture.read_text() == "secret" and log.read_text() == "precious"
        assert oct(capture.stat().st_mode & 0o777) == "0o600"
        assert not (shared_by_nobody / "run").exists() and "swapped" not in swapped
    finally:
        shutil.rmtree(victims)


@pytest.mark.parametrize("command", [
    ["matrix", "small", "--cell", "0", "--out"],
    ["replay", "CAPTURE", "--appliance", "nat-gw", "--pictures"],
    ["up", "--name", "nobodys", "--results"],
])
def test_every_command_that_writes_refuses_such_a_folder(shared_by_nobody: Path,
                                                        tmp_path: Path,
                                                        command: list[str]) -> None:
    capture = tmp_path / "c.pcap"
    capture.write_bytes(pcap_bytes(conversation()))  # one connection the NAT would kill
    command = [str(capture) if word == "CAPTURE" else word for word in command]
    done = natsim(*command, str(shared_by_nobody / "out"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"belongs to uid {NOBODY}" in done.stderr
    assert not any(shared_by_nobody.iterdir())
