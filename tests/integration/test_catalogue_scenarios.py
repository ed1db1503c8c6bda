"""Every shipped scenario, run for real and predicted by the model: the two must agree.
(nat-gw-nat64 is run in test_ipv6_live.py, its capture checked too.)

The NAT Gateway scenarios have their own detailed tests (test_scenarios.py), and the path
event scenarios theirs (test_path_events_live.py), which make the same comparison; this
file runs all the others. A disagreement is a bug in the emulation or
in the analytic model.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from simulator.runs.runner import run_scenario
from simulator.spec.compression import max_safe_speed
from simulator.spec.scenario import load_scenario, parse_scenario, scaled, scenario_names
from tests.integration.test_path_events_live import EVENT_SCENARIOS

DETAILED = {"nat-gw", "nat-gw-edge", "nat-gw-keepalive", "nat-gw-os-defaults",
            "nat-gw-os-tuned", "gwlb-idle-pool", "nat-gw-nat64", *EVENT_SCENARIOS}


@pytest.mark.parametrize("name", [n for n in scenario_names() if n not in DETAILED])
def test_emulation_agrees_with_the_model(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(name)
    if scenario.load is not None:
        # capacity scenarios at a tenth of the real numbers (`make capacity` runs them whole)
        scenario = scaled(scenario, 0.1)
    # capacity scenarios open connections at a wall-clock rate; 5 keeps their connect
    # timeout (3 model s) at 0.6 wall s
    # (300 at most, or the scenario's own speed where it is higher: kube-proxy's 8000 s)
    speed = 5.0 if scenario.load is not None else min(max(300.0, scenario.speed),
                                                      max_safe_speed(scenario))
    out = io.StringIO()
    result = run_scenario(scenario, speed, tmp_path / "results", out)
    print(out.getvalue())
    observed = (result.client, result.server)
    assert observed == result.plan.prediction.outcome(), "emulation and model disagree"
    assert observed == (scenario.expect_client, scenario.expect_server)


def test_gwlb_drops_late_data_itself_whatever_the_stickiness(tmp_path: Path) -> None:
    """The current GWLB guide: late data is dropped, only a SYN is a new flow; 2-tuple
    stickiness does not deliver the answer after 400 s."""
    for name in ("gwlb", "gwlb-sticky"):
        out = io.StringIO()
        result = run_scenario(load_scenario(name), 150, tmp_path / name, out)
        assert (result.client, result.server) == ("timeout", "unacknowledged"), out.getvalue()
        drops = [e for e in result.events if e.kind == "dropped"]
        assert drops and all("expired flow" in e.text for e in drops), out.getvalue()
        assert "rst_sent" not in result.kinds("middlebox")
        assert [e.kind for e in result.events].count("flow_created") == 1  # no re-hash


def test_the_idle_pool_behind_a_gwlb_hangs_until_the_kernel_gives_up(tmp_path: Path) -> None:
    """The reused request is retransmitted (each retransmission dropped at the GWLB, as the
    timeline shows) until the compressed tcp_retries2 runs out, near the model's time."""
    out = io.StringIO()
    scenario = load_scenario("gwlb-idle-pool")
    result = run_scenario(scenario, 100, tmp_path / "p", out)
    observed = (result.client, result.server)
    assert observed == result.plan.prediction.outcome() == (
        scenario.expect_client, scenario.expect_server), out.getvalue()
    late = [e for e in result.events if e.kind == "dropped" and e.t > 399]
    assert len(late) >= 8 and all("expired flow" in e.text for e in late[:8]), out.getvalue()
    gave_up = next(e for e in result.events if e.kind == "retransmit_timeout")
    wall = result.plan.retransmission
    assert wall is not None and wall.retries2 < 15  # compressed: chosen for speed 100
    assert gave_up.t == pytest.approx(result.plan.prediction.client_at,
                                      abs=wall.rto_max * 100), out.getvalue()
    assert "rst_sent" not in result.kinds("middlebox")


def test_gwlb_as_the_2023_blog_described_it_rehashes(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_scenario(load_scenario("gwlb-2023-blog"), 150, tmp_path / "b", out)
    assert (result.client, result.server) == ("answer", "delivered"), out.getvalue()
    created = [e for e in result.events if e.kind == "flow_created"]
    assert len(created) == 2 and created[1].raw.get("target") == created[0].raw.get("target")


def test_global_accelerator_keepalive_does_not_count(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_scenario(load_scenario("global-accelerator-keepalive"), 35, tmp_path / "g",
                          out)
    assert (result.client, result.server) == ("reset", "reset"), out.getvalue()
    probes = [e for e in result.events if e.kind == "keepalive"]
    assert probes and "NOT refreshed" in probes[0].text  # the timeline says why
    expired = next(e for e in result.events if e.kind == "flow_expired")
    assert expired.t == pytest.approx(340, abs=2)


def test_nlb_targets_are_separate_namespaces_and_udp_hashes_the_5_tuple(
        tmp_path: Path) -> None:
    """The heartbeat after the expiry, from the request's socket, returns to the request's
    target (the answer arrives); heartbeats from new source ports are flows of their own,
    spread over the targets by their ports."""
    result = run_scenario(load_scenario("nlb-udp-targets"), 100, tmp_path / "u",
                          io.StringIO())
    backends = [e.raw.get("backend") for e in result.events if e.kind == "flow_created"]
    assert len(backends) == 2 and backends[0] == backends[1], backends
    assert result.client == "answer" and result.judgement.model_agrees
    result = run_scenario(load_scenario("nlb-udp-targets-new-port"), 100, tmp_path / "n",
                          io.StringIO())
    created = [e for e in result.events if e.kind == "flow_created"]
    assert len(created) >= 5  # the request's flow and one per heartbeat
    assert {"server", "server1"} <= {e.source for e in result.events}  # two real targets
    assert result.client == "timeout" and result.judgement.model_agrees


def test_an_answer_after_the_client_gave_up_is_reset_by_its_kernel(tmp_path: Path) -> None:
    """The client times out at 100 s and closes; its FIN keeps the GWLB's flow, so the
    answer at 200 s crosses and meets a closed socket: the server must report the reset
    (EPIPE after the FIN), as the model says, not stop watching at the FIN."""
    scenario = parse_scenario({
        "appliance": "gwlb", "speed": 35, "client": {"timeout": 100, "keepalive": "off"},
        "server": {"delay": 200}, "expect": {"client": "timeout", "server": "reset"}},
        "test", "gwlb-client-gone")
    out = io.StringIO()
    result = run_scenario(scenario, 35, tmp_path / "results", out)
    assert (result.client, result.server) == ("timeout", "reset"), out.getvalue()
    assert result.judgement.model_agrees
