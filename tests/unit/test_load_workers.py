"""The load generator's forked workers end with their parent (no network: the job sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = r"""
import os, time
from simulator.workloads.load import _in_workers

def job(w):
    os.write(1, f"{os.getpid()}\n".encode())  # one write: the three may interleave
    time.sleep(60)
    return {}

_in_workers(3, job)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_with_their_parent(sig: signal.Signals) -> None:
    """``make bench`` stops its load server with SIGTERM and runs the next load in the same
    world: a worker left behind kept listening on the port (SO_REUSEPORT), took a share of
    the next run's connections and closed them with FINs at its own end time."""
    workers: list[int] = []
    with subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        try:
            workers = [int(parent.stdout.readline()) for _ in range(3)]
            assert all(_alive(pid) for pid in workers)
            parent.send_signal(sig)
            parent.wait(10)
            deadline = time.monotonic() + 5
            while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [pid for pid in workers if _alive(pid)]
            assert not left, f"workers outlived their parent: {left}"
        finally:
            for pid in workers:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if parent.poll() is None:
                parent.kill()
