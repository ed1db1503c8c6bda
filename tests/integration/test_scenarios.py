"""The shipped scenarios, end to end: real namespaces, real sockets, compressed time.

Each test checks what the client and server processes themselves saw. With plain kernel
forwarding in place of the middlebox, every failure scenario would deliver the answer, and
the keepalive scenarios would pass without any probe in the middlebox's log: both are
asserted, so none of these tests can pass without the userspace middlebox doing its job.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from simulator.runs.runner import RunResult, run_scenario
from simulator.spec.scenario import load_scenario


def run(name: str, speed: float, tmp_path: Path, **changes: float) -> RunResult:
    out = io.StringIO()
    scenario = replace(load_scenario(name), **changes)  # type: ignore[arg-type]
    result = run_scenario(scenario, speed, tmp_path / "results", out)
    print(out.getvalue())  # shown by pytest when a test fails
    # what the processes saw must be what the analytic model predicts
    assert (result.client, result.server) == result.plan.prediction.outcome()
    return result


def middlebox_kinds(result: RunResult) -> list[str]:
    return result.kinds("middlebox")


def test_nat_gw_answer_after_timeout_is_reset_and_client_hangs(tmp_path: Path) -> None:
    result = run("nat-gw", 150, tmp_path)
    assert (result.client, result.server) == ("timeout", "reset")
    assert result.passed
    kinds = middlebox_kinds(result)
    assert kinds.count("flow_expired") == 1 and "rst_sent" in kinds
    expired = next(e for e in result.events if e.kind == "flow_expired")
    assert expired.t == pytest.approx(350, abs=2)
    reset = next(e for e in result.events if e.source == "server" and e.kind == "reset")
    assert reset.t == pytest.approx(400, abs=5)
    timeout = next(e for e in result.events if e.source == "client" and e.kind == "timeout")
    assert timeout.t == pytest.approx(900, abs=10)
    assert "answer" not in result.kinds("client")

    # the capture holds the RST from the NAT's public address to the server
    packets = rdpcap(str(tmp_path / "results" / "capture.pcap"))
    rsts = [p for p in packets if p.haslayer(TCP) and p[TCP].flags == "R"
            and p[IP].src == "203.0.113.1" and p[IP].dst == "198.19.1.10"]
    assert rsts, "no RST to the server in capture.pcap"
    # ... at the time the timeline gives it: the capture's times are the timeline's
    rst_event = next(e for e in result.events if e.kind == "rst_sent"
                     and e.raw.get("side") == "outside")
    assert float(rsts[0].time) == pytest.approx(rst_event.t, abs=0.5)
    assert (tmp_path / "results" / "result.json").exists()

    # the timeline picture: a real PNG, and the SVG names the expiry
    png = (tmp_path / "results" / "timeline.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    svg = (tmp_path / "results" / "timeline.svg").read_text()
    assert "expired after 350 s idle" in svg

    # metrics under the NAT Gateway's own names, sampled over model time
    result_json = json.loads((tmp_path / "results" / "result.json").read_text())
    samples = result_json["metrics"]["samples"]
    assert result_json["metrics"]["namespace"] == "AWS/NATGateway"
    first_timeout = next(s["t"] for s in samples if s["IdleTimeoutCount"] == 1)
    assert 345 <= first_timeout <= 370
    assert max(s["ActiveConnectionCount"] for s in samples if s["t"] < 340) == 1
    assert (tmp_path / "results" / "metrics.png").exists()


def test_nat_gw_keepalive_survives(tmp_path: Path) -> None:
    result = run("nat-gw-keepalive", 45, tmp_path)
    assert (result.client, result.server) == ("answer", "delivered")
    probes = [e for e in result.events if e.kind == "keepalive"]
    assert probes, "the middlebox saw no keepalive probe"
    assert 290 <= probes[0].t < 350  # TCP_KEEPIDLE 7 wall s = 315 model s, or a bit late
    answer = next(e for e in result.events if e.source == "client" and e.kind == "answer")
    assert answer.t == pytest.approx(400, abs=5)
    assert "flow_expired" not in middlebox_kinds(result)


def test_os_defaults_keepalive_is_too_late(tmp_path: Path) -> None:
    result = run("nat-gw-os-defaults", 150, tmp_path)
    assert (result.client, result.server) == ("timeout", "reset")
    assert "keepalive" not in middlebox_kinds(result)


def test_os_tuned_sysctls_keep_the_flow_alive(tmp_path: Path) -> None:
    result = run("nat-gw-os-tuned", 150, tmp_path)
    assert (result.client, result.server) == ("answer", "delivered")
    probes = [e for e in result.events if e.kind == "keepalive"]
    # sysctl tcp_keepalive_time 45 model s -> 1 wall s -> 150 model s at this speed
    assert len(probes) >= 2
    assert probes[0].t == pytest.approx(150, abs=10)


@pytest.mark.slow
def test_nat_gw_edge_one_second_late_fails(tmp_path: Path) -> None:
    # the client's 900 s wait (the story's) shortened to 420 s: the second that decides is
    # at 350-351 s either way, and the run takes 21 wall s instead of 45
    result = run("nat-gw-edge", 20, tmp_path, client_timeout=420.0)
    assert (result.client, result.server) == ("timeout", "reset")
    expired = next(e for e in result.events if e.kind == "flow_expired")
    sent = next(e for e in result.events if e.source == "server" and e.kind == "answer_sent")
    assert expired.t < sent.t
    assert sent.t - expired.t == pytest.approx(1.0, abs=0.6)
