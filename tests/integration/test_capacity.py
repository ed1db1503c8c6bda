"""Capacity: connections over the appliance's limit time out; the fix carries them all.

Scaled down (capacity_scale) so that each run takes seconds; the shipped scenarios run at a
tenth of the real limits, and the worker-process split that real numbers need is forced
here with a small per-process quota.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.runs.runner import run_scenario
from simulator.spec.scenario import load_scenario


@pytest.fixture
def several_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("NATSIM_LOAD_PER_PROCESS", "200")
    yield


@pytest.mark.parametrize("appliance,expected", [
    ("{name: nat-gw, capacity_scale: 0.01}", (550, 10)),
    ("{name: nat-gw, capacity_scale: 0.01, public_ips: [203.0.113.1, 203.0.113.2]}",
     (560, 0)),
    ("{name: hyperplane-eni, capacity_scale: 0.01}", (650, 10)),
])
def test_capacity_limits(appliance: str, expected: tuple[int, int], tmp_path: Path,
                         several_workers: None) -> None:
    connections = sum(expected)
    path = tmp_path / "load.yaml"
    path.write_text(f"appliance: {appliance}\nspeed: 5\n"
                    f"load: {{connections: {connections}, rate: 1000, hold: 10, "
                    f"connect_timeout: 3, addresses: 2}}\n"
                    f"expect: {{established: {expected[0]}, timed_out: {expected[1]}}}\n")
    out = io.StringIO()
    result = run_scenario(load_scenario(str(path)), None, tmp_path / "results", out)
    print(out.getvalue())
    assert result.passed, (result.client, result.server)
    assert result.client == f"established={expected[0]} timed_out={expected[1]} failed=0"
    refused = result.counters.get("ErrorPortAllocation", 0) + \
        result.counters.get("RejectedConnectionCount", 0)
    assert (refused > 0) == (expected[1] > 0)  # the appliance itself refused them
