"""Programs in model time, on real namespaces: ``natsim exec`` and the plugin run a real
program on the world's compressed clock, its own timers included, with nobody telling it the
speed; every program of a world reads the same clock; what the timer shim scaled is reported;
a program that cannot be compressed is named, never judged silently."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import verify_model_time
from simulator.cli.pytest_plugin import NatsimWorld
from simulator.world.live import LiveWorld
from tests.integration.test_trust import natsim, start

REPO = Path(__file__).resolve().parents[2]
SPEED = 35

CLOCK_SERVER = """
import socket, time
s = socket.create_server(("", 9000))
while True:
    c, _ = s.accept()
    c.sendall(repr(time.time()).encode())
    c.close()
"""
CLOCK_CLIENT = """
import socket, time
with socket.create_connection(("server", 9000), timeout=30) as s:
    theirs = float(s.recv(100))
mine = time.time()
print(theirs, mine)
"""


@pytest.fixture
def world() -> Iterator[str]:
    name = f"m{os.urandom(3).hex()}"
    up = natsim("up", "--speed", str(SPEED), "--name", name)
    assert up.returncode == 0, up.stderr
    run_id = LiveWorld.load(name).run_id
    assert len(list(Path("/dev/shm").glob(f"*natsim_ft_*{run_id}"))) == 2  # the world's clock
    try:
        yield name
    finally:
        down = natsim("down", "--name", name)
        assert down.returncode == 0, down.stderr
    assert not list(Path("/dev/shm").glob(f"*natsim_ft_*{run_id}")), "the clock segment leaked"


def test_a_program_sleeps_in_model_seconds(world: str) -> None:
    started = time.monotonic()
    done = natsim("exec", "--name", world, "client", "--", sys.executable, "-c",
                  "import time; m = time.monotonic(); time.sleep(350); "
                  "print(round(time.monotonic() - m))")
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # the program saw 350 s pass: a sleep never ends early, and a loaded host wakes it up
    # to a model second late (CI saw 351: 15 wall ms at this speed)
    assert done.stdout.strip() in ("350", "351"), done.stdout
    assert wall < 350 / SPEED + 5, wall  # in about 10 wall seconds


def test_every_program_of_a_world_reads_one_clock(world: str) -> None:
    """The server started first, the client 2 wall seconds (70 model s) later: the time the
    server sends and the client's own differ by under a model second."""
    server = start("exec", "--name", world, "server", "--", sys.executable, "-c",
                   CLOCK_SERVER)
    try:
        time.sleep(2.0)
        done = natsim("exec", "--name", world, "client", "--", sys.executable, "-c",
                      CLOCK_CLIENT)
        assert done.returncode == 0, done.stderr
        theirs, mine = (float(x) for x in done.stdout.split())
        assert abs(mine - theirs) < 1.0, (theirs, mine)
        # and it is the world's clock: ahead of the wall clock by (elapsed) * (speed - 1)
        assert mine - time.time() > 2.0 * (SPEED - 1) * 0.9
    finally:
        server.terminate()
        server.communicate(timeout=10)


KEEPALIVE_CLIENT = """
import socket, sys
s = socket.create_connection(("server", 8080), timeout=20)
if sys.argv[1] == "keepalive":  # a library's own default, in its own (model) seconds
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30  # what it set
s.settimeout(900)  # model seconds, as the program's author meant them
s.sendall(b"GET / HTTP/1.0\\r\\nHost: server\\r\\n\\r\\n")
try:
    data = s.recv(4096)
except OSError as exc:
    print("failed", type(exc).__name__); sys.exit(1)
print("answer" if data else "closed"); sys.exit(0 if data else 1)
"""


@pytest.mark.parametrize("mode,survives", [("keepalive", True), ("none", False)])
def test_a_programs_own_keepalive_and_timeout_are_model_seconds(world: str, mode: str,
                                                                 survives: bool) -> None:
    """A server that answers after 400 model s (told 400, not 400/35) behind a NAT Gateway
    that forgets after 350: the client's TCP_KEEPIDLE 30 (scaled to 1 wall s, 35 model s)
    keeps the flow; without it the answer is lost and the client's 900 s timeout (model
    seconds, compressed by libfaketime) ends it in about 26 wall seconds."""
    server = start("exec", "--name", world, "server", "--", sys.executable, "-m",
                   "simulator.workloads.slow_http", "--port", "8080", "--delay", "400")
    try:
        wait = natsim("exec", "--name", world, "server", "--", sys.executable, "-c",
                      "import socket, time\nfor _ in range(200):\n    try:\n"
                      "        socket.create_connection(('127.0.0.1', 8080), 1).close(); break\n"
                      "    except OSError: time.sleep(0.05)")
        assert wait.returncode == 0
        started = time.monotonic()
        done = natsim("exec", "-v", "--name", world, "client", "--", sys.executable, "-c",
                      KEEPALIVE_CLIENT, mode, timeout=120)
        wall = time.monotonic() - started
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert (done.returncode == 0) is survives, done.stdout + done.stderr
    kinds = [e["kind"] for e in LiveWorld.load(world).events()]
    assert ("flow_expired" in kinds) is not survives, kinds
    if survives:
        assert "keepalive" in kinds and wall < 400 / SPEED + 8, wall
        assert "TCP_KEEPIDLE 30 model s -> 1 wall s, really 35 model s" in done.stderr
        log = Path(LiveWorld.load(world).results_dir) / "timers.jsonl"
        options = {json.loads(line)["option"] for line in log.read_text().splitlines()}
        assert {"TCP_KEEPIDLE", "TCP_KEEPINTVL"} <= options
    else:
        assert "failed" in done.stdout and wall < 900 / SPEED + 8, (done.stdout, wall)


def test_wall_time_is_the_old_behaviour(world: str) -> None:
    done = natsim("exec", "--wall-time", "--name", world, "client", "--", sys.executable, "-c",
                  "import time; m = time.monotonic(); time.sleep(0.5); "
                  "print(round(time.monotonic() - m, 1))")
    assert done.returncode == 0 and done.stdout.strip() == "0.5", done.stdout + done.stderr


@pytest.fixture(scope="module")
def static_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A statically linked program, as a Go or musl build would be."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed (make setup installs it)")
    folder = tmp_path_factory.mktemp("static")
    (folder / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); '
                                    "return 0; }\n")
    done = subprocess.run(["gcc", "-static", "-o", str(folder / "hello"), str(folder / "hello.c")],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"gcc -static failed (libc6-dev's static library?): {done.stderr}")
    os.chmod(folder, 0o755)
    return folder / "hello"


def test_a_static_program_is_named_not_judged(world: str, static_program: Path) -> None:
    refused = natsim("exec", "--model-time", "--name", world, "client", "--",
                     str(static_program))
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "statically linked" in refused.stderr and "--speed 1" in refused.stderr
    assert "hello" not in refused.stdout  # it did not run
    warned = natsim("exec", "--name", world, "client", "--", str(static_program))
    assert warned.returncode == 0 and warned.stdout.strip() == "hello"
    assert "statically linked" in warned.stderr and "runs in wall time" in warned.stderr


# -- the pytest plugin ----------------------------------------------------------------------

PLUGIN_CLIENT_TIMEOUT = 600.0


def _answer(host: str, port: int) -> bytes:
    import socket  # noqa: PLC0415

    with socket.create_connection((host, port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.settimeout(PLUGIN_CLIENT_TIMEOUT)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: server\r\n\r\n")
        return sock.recv(4096)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_the_plugin_runs_programs_and_functions_in_model_time(natsim_world: NatsimWorld
                                                               ) -> None:
    natsim_world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                                  "--port", "8080", "--delay", "400"])
    natsim_world.wait_for_port("server", 8080)
    started = time.monotonic()
    answer = natsim_world.call("client", _answer, "server", 8080)
    assert b"200" in answer
    assert time.monotonic() - started < 400 / SPEED + 8
    kinds = natsim_world.kinds()
    assert "keepalive" in kinds and "flow_expired" not in kinds
    assert any(s["option"] == "TCP_KEEPIDLE" and s["model"] == 60 for s in natsim_world.scaled())


def test_model_time_agrees_with_real_time_a_slice() -> None:
    """``make verify-model-time``'s slice: a client with its own keepalive through a NAT
    Gateway whose timeout is 12 s, answered after 16 s, compressed 4 times (on the world's
    clock) and not at all: the same verdict, probe, expiry and answer instants."""
    out = io.StringIO()
    assert verify_model_time.main(["--quick"], out) == 0, out.getvalue()
    assert "1 of 1 agree" in out.getvalue()


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_the_plugin_names_a_program_it_cannot_compress(natsim_world: NatsimWorld,
                                                       static_program: Path) -> None:
    from simulator.world.modeltime import ModelTimeError  # noqa: PLC0415

    with pytest.raises(ModelTimeError, match=r"statically linked.*wall_time=True"):
        natsim_world.run("client", [str(static_program)])
    assert natsim_world.run("client", [str(static_program)], wall_time=True).stdout == "hello\n"
