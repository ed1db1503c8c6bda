"""The idle pool's model (:mod:`simulator.core.pool_model`) and its scenario fields."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from simulator.core.appliances import get_appliance
from simulator.core.pool_model import PoolExchange, PoolModelError, predict_pool
from simulator.core.retransmission import Retransmission
from simulator.spec.compression import SpeedError, max_safe_speed, plan
from simulator.spec.scenario import Scenario, ScenarioError, load_scenario, parse_scenario

KERNEL = Retransmission(rtt=0.001)  # gives up 925.8 s after the send


def pool(requests: tuple[float, ...] = (0, 400), retry: int = 1, timeout: float = 1800,
         size: int = 1, keepalive: float | None = None, kernel: Retransmission = KERNEL
         ) -> PoolExchange:
    return PoolExchange(requests, size, retry, 0.5, timeout, kernel, keepalive)


def test_an_rst_appliance_fails_the_reused_request_and_the_retry_recovers() -> None:
    p = predict_pool(get_appliance("nat-gw"), pool())
    assert (p.client, p.server) == ("answer, reset+answer", "delivered, delivered")
    assert p.requests[1].took == pytest.approx(0.5)  # milliseconds, not minutes
    assert predict_pool(get_appliance("nat-gw"), pool(retry=0)).client == "answer, reset"


def test_a_silent_appliance_hangs_the_request_until_the_kernel_gives_up() -> None:
    p = predict_pool(get_appliance("gwlb"), pool())
    assert (p.client, p.server) == ("answer, retransmit_timeout", "delivered")
    assert p.requests[1].took == pytest.approx(925.8, abs=0.1)
    # the give-up against the client's timeout decides, within one 120 s step
    assert (1800 - KERNEL.give_up(), KERNEL.tolerance()) in p.margins
    # the client's own timeout first: its timeout, not the kernel's
    assert predict_pool(get_appliance("gwlb"), pool(timeout=600)).client == "answer, timeout"
    short = pool(kernel=Retransmission(user_timeout=30.0, rtt=0.001))
    assert predict_pool(get_appliance("aws-network-firewall"), short).requests[1].took == \
        pytest.approx(30.4, abs=0.01)


def test_a_request_waits_for_the_hang_before_it() -> None:
    """One request at a time: the third, planned at 500 s, goes when the second gave up."""
    p = predict_pool(get_appliance("gwlb"), pool((0, 400, 500)))
    assert p.client == "answer, retransmit_timeout, answer"
    assert p.requests[2].sent == pytest.approx(400 + 925.8, abs=0.1)


def test_a_pass_appliance_tracks_the_reused_connection_anew() -> None:
    p = predict_pool(get_appliance("ec2-sg-conntrack"), pool())
    assert p.client == "answer, answer"


def test_a_reset_at_expiry_fails_the_send_at_once() -> None:
    azure = get_appliance("azure-lb")
    assert predict_pool(azure, pool((0, 300))).client == "answer, retransmit_timeout"
    reset = azure.with_overrides({"on_expiry": "rst_both"})
    assert predict_pool(reset, pool((0, 300))).client == "answer, reset+answer"


def test_connections_of_a_pool_are_used_in_turn() -> None:
    """Two connections: each idles 400 s between its requests, both are forgotten."""
    p = predict_pool(get_appliance("nat-gw"), pool((0, 200, 400, 600), size=2))
    assert p.client == "answer, answer, reset+answer, reset+answer"
    one = predict_pool(get_appliance("nat-gw"), pool((0, 200, 400, 600), size=1))
    assert one.client == "answer, answer, answer, answer"  # 200 s gaps: never forgotten


def test_keepalive_below_the_timeout_keeps_the_pool_and_a_late_probe_is_refused() -> None:
    assert predict_pool(get_appliance("nat-gw"), pool(keepalive=300)).client == \
        "answer, answer"
    assert predict_pool(get_appliance("nat-gw"), pool(keepalive=500)).client == \
        "answer, reset+answer"  # no probe before the reuse
    with pytest.raises(PoolModelError, match=r"client\.keepalive"):
        predict_pool(get_appliance("nat-gw"), pool(keepalive=380))
    with pytest.raises(PoolModelError, match=r"server\.delay"):
        predict_pool(get_appliance("nat-gw"), PoolExchange((0, 400), 1, 0, 400, 900, KERNEL))


def scenario(tmp_path: Path, **changes: object) -> Path:
    doc: dict[str, object] = {
        "appliance": "gwlb", "speed": 35,
        "client": {"requests": [0, 400], "retry": 1, "timeout": 1800, "keepalive": "off"},
        "server": {"delay": 0.5},
        "expect": {"client": ["answer", "retransmit_timeout"], "server": ["delivered"]}}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            target = doc[section]
            assert isinstance(target, dict)
            target[name] = value
        else:
            doc[section] = value
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def load(path: Path) -> Scenario:
    return parse_scenario(yaml.safe_load(path.read_text()), str(path), "pool")


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"client__requests": [5, 400]}, "client.requests[0]", "first request is at 0"),
    ({"client__requests": [0, 400, 300]}, "client.requests[2]", "not after"),
    ({"expect": {"client": ["answer"], "server": ["delivered"]}}, "expect.client",
     "1 entries for 2 requests"),
    ({"expect": {"client": ["answer", "reset+answr"], "server": ["delivered"]}},
     "expect.client[1]", "reset+answer"),
    ({"expect": {"client": "answer", "server": ["delivered"]}}, "expect.client", "a list"),
    ({"client__retries": 2}, "client.retries", "client.retry"),
    ({"server": {"delay": 400}}, "server.delay", "idle timeout"),
    ({"client__keepalive": {"idle": 380, "interval": 30, "count": 3}}, "client.keepalive",
     "forgotten flow"),
    ({"backend": "docker"}, "backend", "namespaces only"),
])
def test_a_scripted_scenario_names_the_field_at_fault(tmp_path: Path, changes: dict[str, object],
                                                      field: str, words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load(scenario(tmp_path, **changes))
    assert f": {field}:" in str(caught.value) and words in str(caught.value)


def test_retries2_belongs_to_a_scripted_client(tmp_path: Path) -> None:
    """tcp_retries2 decides only a request's retransmissions (the one-request client's
    request is acknowledged before it waits); TCP_USER_TIMEOUT is taken by both (it
    bounds keepalive probes too)."""
    with pytest.raises(ScenarioError, match=r"client\.sysctls\.tcp_retries2"):
        load(scenario(tmp_path, client={"timeout": 900, "sysctls": {"tcp_retries2": 5}},
                      expect={"client": "timeout", "server": "unacknowledged"}))
    s = load(scenario(tmp_path, client__keepalive={"user_timeout": 30},
                      client__sysctls={"tcp_retries2": 5}))
    assert (s.keepalive.mode, s.keepalive.user_timeout, s.tcp_retries2) == ("off", 30, 5)
    assert s.expect_client == "answer, retransmit_timeout"


def test_the_plan_compresses_the_retransmission_timer_for_every_host() -> None:
    p = plan(load_scenario("gwlb-idle-pool"), 35)
    sysctls = p.wall_sysctls()
    assert sysctls["tcp_rto_min_us"] == 5714 and sysctls["tcp_rto_max_ms"] == 3429
    assert sysctls["tcp_retries2"] == 10
    assert p.retransmission_sysctls() == {k: sysctls[k] for k in (
        "tcp_rto_min_us", "tcp_rto_max_ms", "tcp_retries2")}
    rows = {r["setting"]: r for r in p.settings()}
    assert rows["sysctl net.ipv4.tcp_retries2"]["model_count"] == 15
    assert plan(load_scenario("nat-gw"), 35).retransmission_sysctls() == {}


def test_a_speed_where_the_probe_may_come_late_is_refused() -> None:
    s = load_scenario("nat-gw-idle-pool-keepalive")
    safe = max_safe_speed(s)
    assert plan(s, safe).prediction.client == "answer, answer"
    with pytest.raises(SpeedError, match="keepalive probe"):
        plan(s, 114)


def test_a_pools_habits_decide_the_reuse() -> None:
    """Closing idle connections, pinging them, checking them before use."""
    nat, gwlb = get_appliance("nat-gw"), get_appliance("gwlb")
    ga = get_appliance("global-accelerator")
    assert predict_pool(gwlb, replace(pool(), discard_after=5.0)).client == "answer, answer"
    assert predict_pool(gwlb, replace(pool(), discard_after=540.0)).client == \
        "answer, retransmit_timeout"  # kept: 400 s is under the pool's own limit
    assert predict_pool(ga, replace(pool(), ping_every=120.0)).client == "answer, answer"
    with pytest.raises(PoolModelError, match=r"client\.keepalive"):
        # probes carry no data: Global Accelerator forgets the flow, and a later probe meets
        # it (the one-request model's story, not the pool's)
        predict_pool(ga, replace(pool(), keepalive_idle=120.0))
    with pytest.raises(PoolModelError, match=r"client\.ping_every"):
        predict_pool(nat, replace(pool(), ping_every=360.0))
    checked = predict_pool(gwlb, replace(pool(retry=0), validate=5.0))
    assert checked.client == "answer, timeout+answer"  # the check, then a new connection
    assert checked.requests[1].took == pytest.approx(5.5)
    assert predict_pool(nat, replace(pool(retry=0), validate=5.0)).client == \
        "answer, reset+answer"
    assert predict_pool(nat, pool((0, 0.3), retry=0)).client == "answer, answer"
