"""Every shipped scenario, run for real and predicted by the model: the two must agree.

The NAT Gateway scenarios have their own detailed tests (test_scenarios.py), which make the
same comparison; this file runs all the others. A disagreement is a bug in the emulation or
in the analytic model.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from simulator.compression import max_safe_speed
from simulator.runner import run_scenario
from simulator.scenario import load_scenario, scaled, scenario_names

DETAILED = {"nat-gw", "nat-gw-edge", "nat-gw-keepalive", "nat-gw-os-defaults",
            "nat-gw-os-tuned"}


@pytest.mark.parametrize("name", [n for n in scenario_names() if n not in DETAILED])
def test_emulation_agrees_with_the_model(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    if scenario.load is not None:
        # capacity scenarios at a tenth of the real numbers (`make capacity` runs them whole)
        scenario = scaled(scenario, 0.1)
    # capacity scenarios open connections at a wall-clock rate; 5 keeps their connect
    # timeout (3 model s) at 0.6 wall s
    speed = 5.0 if scenario.load is not None else min(300.0, max_safe_speed(scenario))
    out = io.StringIO()
    result = run_scenario(scenario, speed, tmp_path / "results", out)
    print(out.getvalue())
    observed = (result.client, result.server)
    assert observed == result.plan.prediction.outcome(), "emulation and model disagree"
    assert observed == (scenario.expect_client, scenario.expect_server)


def test_gwlb_rehash_is_silent_and_sticky_is_not_rehashed(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_scenario(load_scenario("gwlb"), 150, tmp_path / "a", out)
    drops = [e for e in result.events if e.kind == "dropped"]
    assert drops and all("has no state" in e.text for e in drops if e.t < 800)
    assert "rst_sent" not in result.kinds("middlebox")
    targets = {e.raw.get("target") for e in result.events if e.kind == "flow_created"}
    assert len(targets) == 2  # the original firewall, then another one after the re-hash


def test_nlb_targets_are_separate_namespaces_and_udp_rehashes(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_scenario(load_scenario("nlb-udp-targets"), 100, tmp_path / "u", out)
    backends = [e.raw.get("backend") for e in result.events if e.kind == "flow_created"]
    assert backends[:2] in ([0, 1], [1, 0])  # the heartbeat after expiry moved
    sources = {e.source for e in result.events}
    assert {"server", "server1"} <= sources  # both backends are real processes
    stray = [e for e in result.events if e.kind == "stray_heartbeat"]
    assert stray, "the other backend never saw the heartbeat"
