"""Every field is type- and range-checked at load time, naming the file and the field (exit 2):
values that used to crash or hang the dataplane, or that a provider would refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli import main as cli
from simulator.core.appliances import CATALOGUE, ApplianceError, check_field, get_appliance
from simulator.spec.compression import plan
from simulator.spec.fields import MAX_FILE_BYTES
from simulator.spec.scenario import ScenarioError, load_scenario
from tests.unit.test_scenario import GOOD, write


@pytest.mark.parametrize("change,field,words", [
    (("appliance: nat-gw", "appliance: {name: nlb-tls, keepalive_echo: 0}"),
     "appliance.keepalive_echo", "from 1 to 3600"),  # 0 looped forever
    (("appliance: nat-gw", "appliance: {name: nlb-tls, keepalive_echo: abc}"),
     "appliance.keepalive_echo", "number"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, port_min: 70000}"),
     "appliance.port_min", "1 to 65535"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, port_min: 9000, port_max: 8000}"),
     "appliance.port_min", "above port_max"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, public_ips: 5}"),
     "appliance.public_ips", "list of 1 to 32"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, public_ips: [" + ", ".join(
        f"203.0.113.{i}" for i in range(1, 10)) + "]}"),
     "appliance.public_ips", "at most 8"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, public_ips: [10.0.0.1]}"),
     "appliance.public_ips", "documentation ranges"),
    (("appliance: nat-gw", "appliance: {name: nlb, tcp_timeout_range: [1, 10]}"),
     "appliance.tcp_timeout_range", "unknown field"),
    (("appliance: nat-gw", "appliance: {name: nlb, tcp_idle_timeout: 5}"),
     "appliance.tcp_idle_timeout", "60-6000"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, tcp_idle_timeout: .nan}"),
     "appliance.tcp_idle_timeout", "number"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, nat: 1}"), "appliance.nat",
     "true or false"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, late_from_inside: 3}"),
     "appliance.late_from_inside", "rst, drop"),
    (("appliance: nat-gw", "appliance: {name: gwlb, stickiness: 4}"), "appliance.stickiness",
     "5, 3 or 2"),
    (("appliance: nat-gw", "appliance: {name: nat-gw, max_flows: 0}"), "appliance.max_flows",
     "1 to"),
    (("speed: 35", "speed: 0.0001"), "speed", "at least 1"),  # a sysctl EINVAL traceback
    (("speed: 35", "speed: 20000"), "speed", "at most"),
    (("server: {delay: 400}", "server: {delay: -5}"), "server.delay", "0 or more"),
    (("timeout: 900", "timeout: 1.0e+12"), "client.timeout", "at most"),  # crashed the server
    (("keepalive: {idle: 300, interval: 15, count: 5}", "keepalive: on"),
     "client.keepalive", "YAML read this as true"),  # was read as `os`
    (("keepalive: {idle: 300, interval: 15, count: 5}", "keepalive: yes"),
     "client.keepalive", "YAML read this as true"),
    (("expect: {client: answer, server: delivered}", "expect: {client: yes, server: delivered}"),
     "expect.client", "YAML read this as true"),
    (("speed: 35", "description: " + "x" * 5000 + "\nspeed: 35"), "description",
     "at most 4000"),
])
def test_bad_fields_are_refused_naming_the_field(tmp_path: Path, change: tuple[str, str],
                                                 field: str, words: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert info.value.field == field, str(info.value)
    assert "mine.yaml" in str(info.value) and words in str(info.value), str(info.value)


def test_a_key_given_twice_is_an_error_not_last_wins(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="given twice"):
        load_scenario(write(tmp_path, GOOD + "speed: 100\n"))


def test_yaml_aliases_are_refused_before_they_expand(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9))  # 9 * 8**9 = 1.2 billion elements once expanded
    with pytest.raises(ScenarioError, match="aliases"):
        load_scenario(write(tmp_path, GOOD + bomb))


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    text = "description: " + "x" * (MAX_FILE_BYTES + 1) + "\n" + GOOD
    with pytest.raises(ScenarioError, match="at most 256 KB"):
        load_scenario(write(tmp_path, text))


def test_cli_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("appliance: nat-gw",
                                        "appliance: {name: nat-gw, port_min: 70000}"))
    assert cli.main(["check", path]) == cli.EXIT_USAGE
    assert "appliance.port_min" in capsys.readouterr().err


def test_speed_from_the_command_line_is_range_checked() -> None:
    from simulator.spec.compression import SpeedError  # noqa: PLC0415

    with pytest.raises(SpeedError, match="from 1 to 10000"):
        plan(load_scenario("nat-gw"), 0.0001)


def test_every_catalogue_entry_passes_its_own_rules() -> None:
    for appliance in CATALOGUE.values():
        for name in appliance.overridable_fields():
            value = getattr(appliance, name)
            check_field(name, list(value) if isinstance(value, tuple) else
                        str(value) if hasattr(value, "value") else value)


def test_overrides_from_code_are_checked_too() -> None:
    """``natsim up --timeout``, the pytest plugin and the dataplane's own config all go
    through ``with_overrides``: not only scenario files."""
    with pytest.raises(ApplianceError, match="keepalive_echo"):
        get_appliance("nlb-tls").with_overrides({"keepalive_echo": 0})
    with pytest.raises(KeyError):
        get_appliance("nlb").with_overrides({"tcp_timeout_range": (1.0, 10.0)})
