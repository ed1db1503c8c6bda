"""Appliances that track a late inside packet anew (``late_from_inside: pass``: an EC2
security group, a Linux conntrack firewall): the model against the engine.

A keepalive probe after the expiry leaves under the outbound rule and re-opens the flow;
the server's next retransmission of an answer the appliance dropped then passes as a reply.
The model once treated that probe as if it met an RST (issue 26): these tests run the real
engine with the fake backend's kernel (retransmissions, keepalive, FIN) over random
exchanges and require the model to say what happened.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simulator.core.advice import check
from simulator.core.appliances import get_appliance
from simulator.core.messages import Verdict
from simulator.core.profiles import get_profile
from simulator.runs.runner import RunResult, run_scenario
from simulator.spec.compression import SpeedError
from simulator.spec.scenario import parse_scenario
from simulator.world.backends.fake import FakeBackend

PASS_APPLIANCES = [{"name": "ec2-sg-conntrack"},
                   {"name": "linux-conntrack", "tcp_idle_timeout": 350}]


def run(appliance: dict[str, object], delay: float, limit: float,
        keepalive: dict[str, float] | None, speed: float = 1) -> RunResult:
    """One exchange through the engine on the fake backend (simulated time: milliseconds)."""
    data = {"description": "a generated exchange", "appliance": appliance, "speed": speed,
            "client": {"timeout": limit, "keepalive": keepalive or "off"},
            "server": {"delay": delay},
            "expect": {"client": "answer", "server": "delivered"}}
    scenario = parse_scenario(data, "generated", "generated")
    with tempfile.TemporaryDirectory() as folder:
        return run_scenario(scenario, results_dir=Path(folder), out=io.StringIO(),
                            backend=FakeBackend(), pictures=False)


def test_the_issue_example_a_probe_reopens_the_flow_and_the_answer_arrives() -> None:
    """ec2-sg-conntrack, keepalive 500/75/9, answer at 400 s, client timeout 900 s: the
    probe at 500 s is tracked anew and the server's retransmission at 502.2 s (Linux's
    200 ms doubling from 400 s) passes as a reply."""
    advice = check(get_appliance("ec2-sg-conntrack"), get_profile("linux-so-keepalive"),
                   400, 900, sysctl_time=500)
    assert advice.survives, advice.prediction.story
    assert advice.prediction.client_at == pytest.approx(502.2)
    result = run({"name": "ec2-sg-conntrack"}, 400, 900,
                 {"idle": 500, "interval": 75, "count": 9}, speed=35)
    assert (result.client, result.server) == ("answer", "delivered")
    assert result.judgement.model_agrees and result.verdict == Verdict.PASS


def test_a_probe_after_the_servers_reset_meets_its_closed_socket() -> None:
    """An answer the appliance resets closes the server's socket: the probe that later
    re-opens the flow reaches the server's kernel, which resets the client."""
    result = run({"name": "ec2-sg-conntrack", "late_from_outside": "rst"}, 400, 900,
                 {"idle": 500, "interval": 75, "count": 9})
    assert (result.client, result.server) == ("reset", "reset")
    assert result.judgement.model_agrees


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appliance=st.sampled_from(PASS_APPLIANCES), delay=st.integers(1, 1500),
       limit=st.integers(1, 1500),
       keepalive=st.one_of(st.none(), st.fixed_dictionaries({
           "idle": st.integers(1, 1500), "interval": st.integers(1, 100),
           "count": st.integers(1, 9)})))
def test_the_model_says_what_the_engine_does(appliance: dict[str, object], delay: int,
                                             limit: int,
                                             keepalive: dict[str, float] | None) -> None:
    try:
        result = run(appliance, delay, limit, keepalive)
    except SpeedError:  # two decisive instants too close to call: the runner refuses them
        assume(False)
        raise
    assert result.judgement.model_agrees, (
        f"engine: client {result.client}, server {result.server}; model: "
        f"{result.judgement.predicted}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(appliance=st.sampled_from([{"name": "gwlb"}, {"name": "ec2-sg-conntrack"},
                                  {"name": "global-accelerator"}]),
       delay=st.integers(1, 1500), limit=st.integers(300, 1500),
       keepalive=st.fixed_dictionaries({
           "idle": st.integers(200, 700), "interval": st.integers(1, 100),
           "count": st.integers(3, 9), "user_timeout": st.integers(1, 600)}))
def test_tcp_user_timeout_on_probes_model_and_engine_agree(
        appliance: dict[str, object], delay: int, limit: int,
        keepalive: dict[str, float]) -> None:
    """TCP_USER_TIMEOUT replaces the probe count (Linux tcp_keepalive_timer): in the model
    (plain and walked) as in the engine's fake kernel. Probes that meet a forgotten flow
    (first probes around the 350 s expiry) are where it decides."""
    try:
        result = run(appliance, delay, limit, keepalive)
    except SpeedError:
        assume(False)
        raise
    assert result.judgement.model_agrees, (
        f"engine: client {result.client}, server {result.server}; model: "
        f"{result.judgement.predicted}")
