"""Whole scenarios through ``natsim run``'s runner and the one world driver, on the fake
backend: no root, no capability, milliseconds each. The driver, the session, the verdict,
the programs' typed settings and the engine's rules meet end to end on every ``make
test-fast`` (the real runs are the integration suite)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.core.messages import Kind, Message, Role, Verdict
from simulator.core.session import RunSession
from simulator.runs.runner import RunResult, run_scenario
from simulator.spec.scenario import Scenario, load_scenario, scenario_names
from simulator.world.backends.fake import FakeBackend, FakeUnsupportedError

REPO = Path(__file__).resolve().parents[2]


def run_fake(s: Scenario, tmp: Path, pictures: bool = False) -> RunResult:
    """``natsim run``'s runner on the fake backend, its results under ``tmp``."""
    return run_scenario(s, results_dir=tmp / "results", out=io.StringIO(),
                        backend=FakeBackend(), pictures=pictures)


WHY_NOT_FAKE = {
    "load": "a capacity run opens thousands of connections from several addresses: "
            "the fake network has one TCP client",
    "udp": "the fake network models TCP only",
    "proxy": "the L4-proxy contrast runs a real HAProxy",
    "scripted": "the fake network does not model the scripted pool client (a hang there is "
                "the kernel's retransmission give-up)",
    "6to4": "IPv6 to IPv4 (NAT64, a dual-stack load balancer): the fake network's hosts "
            "share one family",
}


def why_not_fake(s: Scenario) -> str | None:
    if s.load is not None:
        return WHY_NOT_FAKE["load"]
    if s.protocol != "tcp":
        return WHY_NOT_FAKE["udp"]
    if s.proxy is not None:
        return WHY_NOT_FAKE["proxy"]
    if s.scripted:
        return WHY_NOT_FAKE["scripted"]
    if s.ip in ("nat64", "dualstack"):
        return WHY_NOT_FAKE["6to4"]
    return None


def test_nat_gw_forgets_and_resets_the_late_answer(tmp_path: Path) -> None:
    result = run_fake(load_scenario("nat-gw"), tmp_path)
    assert result.verdict == Verdict.PASS and result.judgement.model_agrees
    assert (result.client, result.server) == ("timeout", "reset")
    expired = next(e for e in result.events if e.kind == "flow_expired")
    assert expired.t == pytest.approx(350, abs=0.5)
    rst = next(e for e in result.events if e.kind == "rst_sent")
    assert rst.t == pytest.approx(400, abs=0.5)
    assert result.counters["IdleTimeoutCount"] == 1


def test_the_keepalive_fix_survives(tmp_path: Path) -> None:
    result = run_fake(load_scenario("nat-gw-keepalive"), tmp_path)
    assert result.verdict == Verdict.PASS and (result.client, result.server) == (
        "answer", "delivered")
    probes = [e.t for e in result.events if e.kind == "keepalive"]
    assert probes and probes[0] < 350  # the probe came in time, so nothing expired
    assert not [e for e in result.events if e.kind == "flow_expired"]


def test_gwlb_drops_the_late_answer_silently(tmp_path: Path) -> None:
    result = run_fake(load_scenario("gwlb"), tmp_path)
    assert result.verdict == Verdict.PASS
    assert (result.client, result.server) == ("timeout", "unacknowledged")
    assert result.counters.get("RstSent", 0) == 0


def test_a_scenario_that_expects_the_wrong_outcome_fails(tmp_path: Path) -> None:
    from dataclasses import replace  # noqa: PLC0415

    wrong = replace(load_scenario("nat-gw"), expect_client="answer")
    result = run_fake(wrong, tmp_path)
    assert result.verdict == Verdict.FAIL and result.client == "timeout"


@pytest.mark.parametrize("name", scenario_names())
def test_every_shipped_tcp_scenario_agrees_with_the_model(name: str, tmp_path: Path) -> None:
    """Expectation, model and (fake) emulation agree for every scenario the fake network
    can carry -- every TCP scenario of one client, target groups included; a disagreement
    here is a bug in the model, the session, the driver or the engine."""
    s = load_scenario(name)
    why = why_not_fake(s)
    if why is not None:
        with pytest.raises(FakeUnsupportedError):  # the fake backend refuses it, loudly
            run_fake(s, tmp_path)
        pytest.skip(f"{name}: {why} (the integration suite runs it)")
    result = run_fake(s, tmp_path)
    assert result.verdict == Verdict.PASS, (result.client, result.server, result.error)
    assert result.judgement.model_agrees


def test_a_dead_middlebox_is_an_error_whatever_the_workloads_said() -> None:
    session = RunSession(35.0, ("timeout", "unacknowledged"), ("timeout", "unacknowledged"))
    session.feed(Message(Role.CLIENT, Kind.REQUEST_SENT, mono=1.0))
    session.feed(Message(Role.CLIENT, Kind.OUTCOME, "timeout", mono=2.0,
                         data={"outcome": "timeout"}))
    session.feed(Message(Role.SERVER, Kind.OUTCOME, "unacknowledged", mono=2.0,
                         data={"outcome": "unacknowledged"}))
    assert session.judge().verdict is Verdict.PASS
    session.middlebox_failed("the middlebox was killed by signal 9 during the run")
    judgement = session.judge()
    assert judgement.verdict is Verdict.ERROR and not judgement.passed
    middlebox = session.document()["middlebox"]
    assert isinstance(middlebox, dict) and middlebox["healthy"] is False


def test_the_fake_backend_needs_no_capability_at_all() -> None:
    """In a child with an empty capability bounding set (root then has none either)."""
    code = ("import sys\n"
            "caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
            "assert caps[0].split()[1] == '0' * 16, caps\n"
            "import io, tempfile, pathlib\n"
            "from simulator.runs.runner import run_scenario\n"
            "from simulator.world.backends.fake import FakeBackend\n"
            "from simulator.spec.scenario import load_scenario\n"
            "where = pathlib.Path(tempfile.mkdtemp()) / 'results'\n"
            "r = run_scenario(load_scenario('nat-gw-keepalive'), results_dir=where,\n"
            "                 out=io.StringIO(), backend=FakeBackend(), pictures=False)\n"
            "print(r.verdict, r.client, r.server)\n")
    argv = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop every capability")
        argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *argv]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASS", "answer", "delivered"]
