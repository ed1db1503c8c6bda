from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simulator.spec.compression import SpeedError, max_safe_speed, plan
from simulator.spec.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    scaled,
    scenario_names,
)

GOOD = """
appliance: nat-gw
speed: 35
client: {timeout: 900, keepalive: {idle: 300, interval: 15, count: 5}}
server: {delay: 400}
expect: {client: answer, server: delivered}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path: Path, text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    return info.value


def test_shipped_scenarios_load() -> None:
    names = scenario_names()
    assert {"nat-gw", "nat-gw-edge", "nat-gw-keepalive", "nat-gw-os-defaults",
            "nat-gw-os-tuned"} <= set(names)
    for name in names:
        assert load_scenario(name).name == name


def test_good_file_loads(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD))
    assert s.keepalive.mode == "socket" and s.keepalive.idle == 300
    assert s.sysctls["tcp_keepalive_time"] == 7200  # Linux default when not given


@pytest.mark.parametrize("change,field,words", [
    (("expect: {client: answer, server: delivered}", "expect: {client: anser, server: delivered}"),
     "expect.client", "answer, timeout"),
    (("idle: 300", "idle: -3"), "client.keepalive.idle", "greater than 0"),
    (("count: 5", "count: many"), "client.keepalive.count", "whole number"),
    (("appliance: nat-gw", "appliance: nat-gateway"), "appliance.name", "nat-gw"),
    (("server: {delay: 400}", "server: {delay: 400, colour: red}"), "server.colour",
     "unknown field"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, late_from_outside: bounce}"),
     "appliance.late_from_outside", "rst, drop"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, idle: 3}"), "appliance.idle",
     "tcp_idle_timeout"),
])
def test_errors_name_file_and_field(tmp_path: Path, change: tuple[str, str], field: str,
                                    words: str) -> None:
    err = error_of(tmp_path, GOOD.replace(*change))
    assert err.field == field
    assert "mine.yaml" in str(err) and field in str(err) and words in str(err)


def test_missing_section(tmp_path: Path) -> None:
    err = error_of(tmp_path, "appliance: nat-gw\nclient: {}\nexpect: {client: answer, "
                             "server: delivered}\n")
    assert err.field == "server"


def test_unknown_scenario_lists_known_ones() -> None:
    with pytest.raises(ScenarioError, match=r"known: .*nat-gw"):
        load_scenario("no-such-thing")


def test_plan_scales_and_reports_effective_values() -> None:
    p = plan(load_scenario("nat-gw-keepalive"), 35)
    assert p.idle_timeout.wall == 10.0
    assert p.keepalive_idle is not None
    assert p.keepalive_idle.wall == 9.0 and p.keepalive_idle.effective_model == 315.0
    assert p.keepalive_interval is not None and p.keepalive_interval.wall == 1.0


def test_plan_refuses_a_speed_whose_rounding_changes_the_outcome() -> None:
    s = load_scenario("nat-gw-keepalive")
    # at 175, TCP_KEEPIDLE 300/175 rounds to 2 s = 350 model s: no longer before the timeout
    with pytest.raises(SpeedError, match=r"rounding changes the outcome.*TCP_KEEPIDLE"):
        plan(s, 175)


def test_plan_refuses_a_speed_that_squeezes_the_margin() -> None:
    s = load_scenario("nat-gw-edge")
    with pytest.raises(SpeedError, match="1 model s = 20 wall ms apart"):
        plan(s, 50)
    assert max_safe_speed(s) == 20


def test_default_speeds_are_safe() -> None:
    for name in scenario_names():
        s = load_scenario(name)
        plan(s)  # must not raise
        assert s.speed <= max_safe_speed(s)


def test_yaml_off_is_not_a_boolean_trap(tmp_path: Path) -> None:
    text = GOOD.replace("keepalive: {idle: 300, interval: 15, count: 5}", "keepalive: off")
    assert yaml.safe_load(text)["client"]["keepalive"] is False
    assert load_scenario(write(tmp_path, text)).keepalive.mode == "off"


def test_parse_scenario_rejects_non_mapping() -> None:
    with pytest.raises(ScenarioError, match="must be a mapping"):
        parse_scenario(["a"], "x.yaml", "x")


def test_udp_scenarios_take_a_heartbeat_not_keepalive(tmp_path: Path) -> None:
    text = ("appliance: nlb\nprotocol: udp\nclient: {timeout: 300, keepalive: os}\n"
            "server: {delay: 150}\nexpect: {client: timeout, server: answered}\n")
    err = error_of(tmp_path, text)
    assert err.field == "client.keepalive" and "heartbeat" in str(err)
    err = error_of(tmp_path, text.replace("keepalive: os", "heartbeat: 60").replace(
        "server: answered", "server: delivered"))
    assert err.field == "expect.server" and "answered" in str(err)
    s = load_scenario("nlb-udp-heartbeat")
    p = plan(s, 35)
    assert p.heartbeat is not None and p.heartbeat.wall == 60 / 35
    assert p.idle_timeout.model == 120  # the UDP timeout, not the TCP one


def test_kernel_timer_lateness_grows_with_the_timer() -> None:
    from simulator.core.timescale import kernel_timer_lateness  # noqa: PLC0415

    assert kernel_timer_lateness(3) == 0.256  # HZ=250: level 2, 64-tick slots
    assert kernel_timer_lateness(9) == 0.64  # HZ=100: level 2
    assert kernel_timer_lateness(0.1) <= 0.01


def test_plan_refuses_a_probe_that_a_late_kernel_timer_could_make_miss() -> None:
    # at 114, TCP_KEEPIDLE 300 s -> 3 wall s = 342 model s: 70 ms before the expiry, but a
    # 3 s kernel timer may fire 256 ms late (seen: 140 ms, and the run failed)
    with pytest.raises(SpeedError, match=r"may fire up to 256 ms late"):
        plan(load_scenario("nat-gw-keepalive"), 114)


def test_load_scenarios(tmp_path: Path) -> None:
    s = load_scenario("nat-gw-port-exhaustion")
    assert s.load is not None and s.expect_client.startswith("established=55000 ")
    err = error_of(tmp_path, "appliance: nat-gw\nload: {connections: 70000}\n"
                             "expect: {established: 55000}\n")
    assert err.field == "load.addresses" and "at least 2 client addresses" in str(err)
    with pytest.raises(SpeedError, match="held past the idle timeout"):
        plan(load_scenario(write(tmp_path, "appliance: nat-gw\nload: {connections: 10, "
                                           "hold: 400}\nexpect: {established: 10}\n")))


def test_scaled_capacity_scenario_keeps_its_proportions() -> None:
    s = scaled(load_scenario("hyperplane-eni-limit"), 0.1)
    assert s.load is not None and s.load.connections == 6600
    assert s.appliance.capacity_scale == pytest.approx(0.1)
    assert s.appliance.connection_limit == 6500
    assert (s.expect_client, s.expect_server) == (
        "established=6500 timed_out=100 failed=0", "accepted=6500")
    # the model agrees with the scaled expectation
    assert plan(s, 5).prediction.outcome() == (s.expect_client, s.expect_server)
    with pytest.raises(ScenarioError, match="not a whole number") as err:
        scaled(load_scenario("hyperplane-eni-limit"), 0.0003)
    assert err.value.field == "load.connections"
    with pytest.raises(ScenarioError, match="only to capacity"):
        scaled(load_scenario("nat-gw"), 0.1)


def test_a_load_scenario_with_an_empty_chain_is_refused_naming_it(tmp_path: Path) -> None:
    """Found by ``make fuzz``: ``appliance: []`` in a capacity scenario reached ``min()`` of
    nothing (the load parser had a copy of the chain rule without its check)."""
    err = error_of(tmp_path, "appliance: []\nload: {connections: 10, rate: 10}\n"
                             "server: {}\nexpect: {client: {established: 10}, "
                             "server: {accepted: 10}}\n")
    assert str(err).endswith("appliance: an empty chain; name at least one")
