"""``make bench``'s held part (bench/held.py), a small slice: the engine holds every flow it
was sent and the memory figure comes from the process that holds them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _held(*args: str) -> subprocess.CompletedProcess[str]:
    # a fresh interpreter: the measure turns the garbage collector off, as the dataplane does
    return subprocess.run([sys.executable, "-m", "bench.held", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)


def test_every_synthetic_flow_is_held_across_public_addresses() -> None:
    # 60,000 flows to each of two destinations: more than one public address's 55,000
    # ports to a destination, so each needs both addresses, and none may be refused
    out = _held("--flows", "120000", "--destinations", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["flows"] == 120_000
    assert result["refused"] == 0
    assert 200 < result["bytes_per_flow"] < 4096


def test_more_flows_than_the_nat_has_ports_for_is_refused_with_the_reason() -> None:
    out = _held("--flows", "120000", "--destinations", "1")
    assert out.returncode != 0
    assert "need more than 1 destinations" in out.stderr
