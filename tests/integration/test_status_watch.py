"""``natsim status --watch`` under a pseudo terminal, as a person beside a client runs it: the
table redrawn in place, the idle bar climbing, Ctrl-C ending it cleanly."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from simulator.cli.pytest_plugin import NatsimWorld

REPO = Path(__file__).resolve().parents[2]
HOLD = """
import socket, sys, time
s = socket.create_connection(("server", 8080))
print("connected", flush=True)
time.sleep(3600)  # model seconds: idle, the connection held open
"""


def _read(fd: int, until: float) -> bytes:
    out = b""
    while time.monotonic() < until:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.natsim(appliance="nat-gw", speed=50)
def test_status_watch_redraws_in_place_and_stops_on_ctrl_c(natsim_world: NatsimWorld) -> None:
    natsim_world.start("server", [sys.executable, "-m", "http.server", "8080"])
    natsim_world.wait_for_port("server", 8080)
    client = natsim_world.start("client", [sys.executable, "-c", HOLD])
    assert client.stdout is not None and "connected" in client.stdout.readline()

    pid, fd = pty.fork()
    if pid == 0:  # the child: the pseudo terminal is its controlling terminal
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "simulator", "status", "--watch",
                                  "--name", natsim_world.live.name])
    status = None
    try:
        screen = _read(fd, time.monotonic() + 3.5).decode(errors="replace")
        os.write(fd, b"\x03")  # Ctrl-C, typed: the terminal sends SIGINT
        screen += _read(fd, time.monotonic() + 5).decode(errors="replace")
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # not reaped yet: its pid is still its own
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, screen
    assert "Traceback" not in screen, screen
    frames = screen.split("\x1b[H\x1b[2J")[1:]  # each redraw starts by clearing the screen
    assert len(frames) >= 3, screen
    idles = [float(m.group(1)) for frame in frames
             if (m := re.search(r"#1\s+TCP.*?ESTABLISHED\s+([\d.]+) / 350 s \[", frame))]
    assert len(idles) >= 3, frames
    assert idles == sorted(idles) and idles[-1] > idles[0] + 40  # 50 model s a wall second
    assert screen.rstrip(" ").endswith("\n")  # the prompt comes back on a clean line
