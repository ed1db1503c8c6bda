"""Typed configurations, built once by the plan, across the process boundary and back.

Every program's configuration is a frozen dataclass built in ``core/plan.py``; it crosses
to the program as one line of JSON (``encode``) and is read back strictly (``decode``): an
unknown key, a missing one, a value of the wrong type or a config of another version is an
error that names the field, not a ``cfg.get`` that quietly reads ``None``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from simulator.core.appliances import get_appliance
from simulator.core.configs import (
    VERSION,
    ClientConfig,
    ConfigError,
    DnsConfig,
    Edge,
    LoadClientConfig,
    MiddleboxConfig,
    Port,
    ProxyConfig,
    ServerConfig,
    UdpServerConfig,
    decode,
    encode,
    module_args,
)
from simulator.core.path_events import PathEvent, PathKind
from simulator.core.plan import middlebox_config, programs
from simulator.spec.compression import plan as make_plan
from simulator.spec.scenario import load_scenario, scenario_names

REPO = Path(__file__).resolve().parents[2]
INSIDE = Port("inside", "02:00:00:00:00:01", "02:00:00:00:00:02")
OUTSIDE = [Port("outside", "02:00:00:00:00:03", "02:00:00:00:00:04")]


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenarios_programs_survive_the_trip(name: str) -> None:
    s = load_scenario(name)
    progs = programs(s, make_plan(s))
    for config in (progs.server, progs.client):
        assert decode(type(config), encode(config)) == config


def test_the_middlebox_config_survives_the_trip_whole() -> None:
    """Appliances whole (not names), path events, the edge aliases: equal on arrival."""
    sent = middlebox_config(
        [get_appliance("nat-gw").with_overrides({"tcp_idle_timeout": 120})], 35.0, INSIDE,
        OUTSIDE, pcap="/r/capture.pcap", metrics="/r/metrics.jsonl", heartbeat=True,
        path_events=[PathEvent(PathKind.BLACKHOLE, 100.0, duration=20.0)],
        edge=Edge({"198.18.1.3": "198.19.1.10"}, {"198.19.1.3": "203.0.113.1"},
                  {"inside": ("198.18.1.10",)}))
    received = decode(MiddleboxConfig, encode(sent))
    assert received == sent
    assert received.chain[0].tcp_idle_timeout == 120
    assert received.path_events[0].kind is PathKind.BLACKHOLE


def test_the_middlebox_config_has_one_constructor_and_it_filters_the_attach() -> None:
    """The late attach is the driver's (on the client's host), never the engine's; target
    groups get their backends' addresses there too."""
    attach = PathEvent(PathKind.ATTACH, 10.0)
    restart = PathEvent(PathKind.RESTART, 50.0)
    config = middlebox_config([get_appliance("nat-gw")], 35.0, INSIDE, OUTSIDE,
                              path_events=[attach, restart])
    assert config.path_events == (restart,)
    nlb = load_scenario("nlb-targets").appliance
    two = middlebox_config([nlb], 35.0, INSIDE, OUTSIDE * nlb.backends)
    assert two.chain[0].backend_ips == tuple(f"198.19.{i + 1}.10"
                                             for i in range(nlb.backends))


@pytest.mark.parametrize(("mutate", "said"), [
    (lambda d: d.update(wait_limt=3), "ServerConfig: unknown key 'wait_limt'"),
    (lambda d: d.pop("port"), "ServerConfig: missing key 'port'"),
    (lambda d: d.update(port="8080"), "ServerConfig.port: expected int, got str '8080'"),
    (lambda d: d.update(port=True), "ServerConfig.port: expected int, got bool True"),
    (lambda d: d.update(delay=None), "ServerConfig.delay: expected float, got NoneType"),
    (lambda d: d.update(version=VERSION + 1), f"version {VERSION + 1}"),
    (lambda d: d.update(type="ClientConfig"), "expected a ServerConfig, got type"),
])
def test_a_config_that_is_not_what_the_program_expects_names_the_field(mutate: object,
                                                                     said: str) -> None:
    good = ServerConfig(port=8080, delay=1.0, delay_label="35 s", answer="a", wait_limit=2.0)
    doc = json.loads(encode(good))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        decode(ServerConfig, json.dumps(doc))


def test_a_nested_field_at_fault_is_named_by_its_path() -> None:
    doc = json.loads(encode(middlebox_config([get_appliance("nat-gw")], 35.0, INSIDE,
                                             OUTSIDE * 2)))
    doc["outside"][1]["mac"] = 7
    with pytest.raises(ConfigError, match=r"MiddleboxConfig\.outside\[1\]\.mac: expected str"):
        decode(MiddleboxConfig, json.dumps(doc))
    doc = json.loads(encode(middlebox_config([get_appliance("nat-gw")], 35.0, INSIDE,
                                             OUTSIDE)))
    doc["chain"][0]["tcp_idle_timeout"] = -1
    with pytest.raises(ConfigError, match=r"MiddleboxConfig\.chain\[0\]: tcp_idle_timeout"):
        decode(MiddleboxConfig, json.dumps(doc))


def test_defaults_fill_what_is_left_out_and_optional_fields_take_null() -> None:
    doc = {"version": VERSION, "type": "ClientConfig", "host": "server", "port": 80,
           "request": "GET", "timeout": 5, "keepalive": "off", "idle": None}
    config = decode(ClientConfig, json.dumps(doc))
    assert config.timeout == 5.0 and isinstance(config.timeout, float)
    assert (config.retries, config.resolve, config.idle) == (0, "each", None)


def test_module_args_start_the_right_program_with_its_role() -> None:
    server = UdpServerConfig(port=5000, delay=1.0, delay_label="x", wait_limit=2.0)
    assert module_args(server)[:3] == ["simulator.workloads.udp", "server", "--config"]
    dns = DnsConfig(names={"api.internal": "198.19.1.10"})
    assert module_args(dns)[:2] == ["simulator.workloads.dns", "--config"]
    load = LoadClientConfig(host="server", port=1, connections=2, rate=1.0, hold=1.0,
                            connect_timeout=1.0, addresses=("198.18.1.10",))
    assert decode(LoadClientConfig, module_args(load)[-1]).addresses == ("198.18.1.10",)


def test_a_workload_refuses_a_bad_config_at_its_command_line() -> None:
    bad = json.loads(encode(replace(
        ServerConfig(port=8080, delay=1.0, delay_label="x", answer="a", wait_limit=2.0))))
    bad["dealy"] = 1
    out = subprocess.run([sys.executable, "-m", "simulator.workloads.server", "--config",
                          json.dumps(bad)], cwd=REPO, capture_output=True, text=True,
                         check=False, timeout=30)
    assert out.returncode == 2
    assert "ServerConfig: unknown key 'dealy'" in out.stderr


@pytest.mark.parametrize("cls", [MiddleboxConfig, ServerConfig, ClientConfig, UdpServerConfig,
                                 LoadClientConfig, DnsConfig, ProxyConfig])
def test_every_config_names_a_program_that_exists(cls: type) -> None:
    """``python -m MODULE`` must start it (a module moved without its config: the
    L4-proxy contrast once failed to start this way)."""
    module = importlib.import_module(getattr(cls, "module"))  # noqa: B009 (a ClassVar)
    assert callable(getattr(module, "main", None))
