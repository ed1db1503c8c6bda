"""Path events and the L4-proxy contrast, run for real: each scenario agrees with the model,
and its timeline and result.json show what happened to the path."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.runs.runner import run_scenario
from simulator.spec.compression import max_safe_speed
from simulator.spec.scenario import load_scenario
from simulator.views.report import RunResult

EVENT_SCENARIOS = ("lambda-late-attach", "lambda-late-attach-retry", "appliance-restart",
                   "nat-gw-replaced", "nlb-deregister", "nlb-deregister-drain",
                   "gwlb-target-failure", "nat-gw-blackhole", "l4-proxy-keepalive")


def run(name: str, tmp_path: Path) -> tuple[RunResult, dict[str, Any]]:
    scenario = load_scenario(name)
    out = io.StringIO()
    result = run_scenario(scenario, min(300.0, max_safe_speed(scenario)),
                          tmp_path / "results", out)
    print(out.getvalue())
    observed = (result.client, result.server)
    assert observed == result.plan.prediction.outcome(), "emulation and model disagree"
    assert observed == (scenario.expect_client, scenario.expect_server)
    document = json.loads((result.results_dir / "result.json").read_text())
    assert [e["kind"] for e in document["path_events"]] == [str(e.kind) for e in
                                                            scenario.events]
    return result, document


def _check_attach(result: RunResult, resolve_each: bool) -> None:
    [attach] = [e for e in result.events if e.kind == "path_event"]
    assert attach.source == "path" and 24.0 <= attach.t <= 28.0  # at 25 s (+ a poll)
    failed = [e for e in result.events if e.kind == "connect_failed"]
    assert failed and all(e.raw["error"] == "EAI_AGAIN" for e in failed)
    assert "Resource temporarily unavailable" in failed[0].text  # .NET's words for it
    before = [e for e in failed if e.t < attach.t]
    assert len(before) == 2  # the attempts at 0 and 10 s
    if resolve_each:
        assert len(failed) == 2
        answer = next(e for e in result.events if e.kind == "answer")
        assert answer.t == pytest.approx(35.0, abs=1.5)
    else:
        assert len(failed) == 4 and sum(e.t > attach.t for e in failed) == 2


@pytest.mark.parametrize("name", EVENT_SCENARIOS)
def test_path_event_scenarios_run_as_the_model_says(name: str, tmp_path: Path) -> None:
    result, document = run(name, tmp_path)
    texts = " | ".join(e.text for e in result.events)
    if name.startswith("lambda-late-attach"):
        _check_attach(result, resolve_each=name.endswith("retry"))
    elif name == "nat-gw-replaced":
        assert "the replacement's public address is 203.0.113.2" in texts
    elif name == "appliance-restart":
        assert result.counters["FlowsLostOnRestart"] == 1
        assert result.counters.get("IdleTimeoutCount", 0) == 0  # the restart, not the timeout
    elif name == "nlb-deregister":
        assert result.counters["DeregistrationTerminations"] == 1
    elif name == "nat-gw-blackhole":
        assert result.counters["BlackholeDrops"] >= 3  # the probes (and the client's RST)
        assert "ETIMEDOUT" in texts
    elif name == "l4-proxy-keepalive":
        probes = [e for e in result.events if e.kind == "keepalive"]
        assert probes and all(e.raw["link"] == "client side" for e in probes)
        assert result.counters.get("KeepaliveProbes:server side", 0) == 0
        assert "FIN from the proxy to the client" in texts
        assert document["proxy"] == "haproxy"


# -- on demand, in a live world: natsim restart / replace / blackhole ------------------------

def _curl(world: NatsimWorld, keepalive: bool) -> subprocess.Popen[str]:
    """curl waiting for an answer the server gives after 300 model s (curl's own keepalive,
    a probe every 60 s, keeps the flow through the NAT Gateway's 350 s)."""
    world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                           "--port", "8080", "--delay", "300"])
    world.wait_for_port("server", 8080)
    argv = ["curl", "-sS", "-m", "600", *([] if keepalive else ["--no-keepalive"]),
            "http://server:8080/"]
    return world.start("client", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed "
                    "(.ci/run installs it)")
@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_a_restart_now_resets_a_connection_its_keepalive_kept(
        natsim_world: NatsimWorld) -> None:
    """The control case first: nothing happens, curl gets its answer (at 300 s). Then the
    same wait with `natsim_world.restart()` at about 100 s: curl's next probe meets the new
    flow table's RST, as the appliance-restart scenario's model says."""
    curl = _curl(natsim_world, keepalive=True)
    out, err = curl.communicate(timeout=20)
    assert curl.returncode == 0 and "the slow answer" in out, err
    curl = _curl(natsim_world, keepalive=True)
    time.sleep(1.0)  # 100 model s into the wait
    natsim_world.restart()
    out, err = curl.communicate(timeout=20)
    assert curl.returncode == 56 and "reset" in err.lower(), (curl.returncode, err)
    events = natsim_world.events()
    [restart] = [e for e in events if e["kind"] == "path_event"]
    assert "restarted" in restart["text"] and "flow table is lost" in restart["text"]
    assert any(e["kind"] == "rst_sent" and e["t"] > restart["t"] for e in events)
    # the same once more, with `natsim expire FLOW` from the command line: that one flow is
    # forgotten as at its idle timeout, and curl's next probe meets the RST
    curl = _curl(natsim_world, keepalive=True)
    time.sleep(1.0)
    [flow] = [f["flow"] for f in natsim_world.status()["flows"]
             if f["state"] == "ESTABLISHED"]
    done = subprocess.run([sys.executable, "-m", "simulator", "expire", f"#{flow}", "--name",
                           natsim_world.live.name], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0 and f"forgets flow #{flow}" in done.stdout, done.stderr
    out, err = curl.communicate(timeout=20)
    assert curl.returncode == 56 and "reset" in err.lower(), (curl.returncode, err)
    [expired] = [e for e in natsim_world.events() if e["kind"] == "flow_expired"
                 and e.get("on_demand")]
    assert expired["flow"] == flow and "on demand" in expired["text"]


@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_a_blackhole_and_a_replace_on_demand_from_the_command_line(
        natsim_world: NatsimWorld) -> None:
    name = natsim_world.live.name
    for argv, said in ((["blackhole", "30"], "drops every packet, silently for 30 model s"),
                       (["replace"], "is replaced")):
        done = subprocess.run([sys.executable, "-m", "simulator", *argv, "--name", name],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0 and said in done.stdout, done.stderr
    time.sleep(0.5)  # the dataplane looks every 50 ms; the blackhole ends 0.3 wall s later
    texts = [e["text"] for e in natsim_world.events() if e["kind"] == "path_event"]
    assert any("blackhole begins" in t for t in texts), texts
    assert any("blackhole ends" in t for t in texts), texts
    assert any("replacement's public address is 203.0.113.2" in t for t in texts), texts
