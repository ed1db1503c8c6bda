"""``natsim replay`` on the capture of a real ``natsim run nat-gw``: it finds the expiry and
the RSTs that the run's middlebox reported."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulator.runs.runner import run_scenario
from simulator.spec.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]


def test_replaying_a_runs_capture_finds_what_the_run_did(tmp_path: Path) -> None:
    result = run_scenario(load_scenario("nat-gw"), 100, tmp_path / "run", io.StringIO())
    assert result.passed
    expired = next(e for e in result.events if e.kind == "flow_expired")
    rsts = sorted(e.t for e in result.events if e.kind == "rst_sent")
    capture = tmp_path / "run" / "capture.pcap"

    def replay(*args: str) -> dict[str, Any]:
        """The one connection the replay reports."""
        done = subprocess.run([sys.executable, "-m", "simulator", "replay", str(capture),
                               "--appliance", "nat-gw", "--json", *args], cwd=REPO,
                              capture_output=True, text=True, check=True)
        (conn,) = json.loads(done.stdout)["connections"]
        return dict(conn)

    # the client's side of the NAT (the capture holds both sides: keep the client's packets)
    conn = replay("--side", "inside", "--host", "198.18.1.10")
    assert conn["verdict"] == "late-rst" and conn["late_from"] == "client"
    # the replay's clock starts at the capture's first packet, the run's at the request
    shift = expired.t - conn["expired_at"]
    assert abs(shift) < 1.0
    assert any("explained by the appliance" in x for x in conn["explanations"])
    # the server's side: its late answer at 400 s met the RST
    conn = replay("--side", "outside", "--host", "203.0.113.1")
    assert conn["verdict"] == "late-rst" and conn["late_from"] == "server"
    assert conn["late_at"] + shift == pytest.approx(rsts[0], abs=1.0)
    assert conn["expired_at"] + shift == pytest.approx(expired.t, abs=1.0)
