"""``events:``, ``proxy:`` and the client's retries in scenario files: every mistake refused
at load time, naming the file and the field (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli import main as cli
from simulator.core.path_events import PathKind
from simulator.spec.scenario import ScenarioError, load_scenario
from tests.unit.test_scenario import GOOD, write

NLB2 = GOOD.replace("appliance: nat-gw", "appliance: {name: nlb, backends: 2}")


@pytest.mark.parametrize("text,field,words", [
    (GOOD + "events: [{kind: restrat, at: 10}]", "events[0].kind", "did you mean restart?"),
    (GOOD + "events: [{at: 10}]", "events[0].kind", "missing"),
    (GOOD + "events: [{kind: expire, at: 10}]", "events[0].kind",  # natsim expire, live only
     "unknown event kind 'expire'"),
    (GOOD + "events: [{kind: restart}]", "events[0].at", "missing"),
    (GOOD + "events: [{kind: restart, at: 900}]", "events[0].at", "outside the run"),
    (GOOD + "events: [{kind: restart, at: 0}]", "events[0].at", "greater than 0"),
    (GOOD + "events: [{kind: restart, at: 10, duration: 5}]", "events[0].duration",
     "unknown field"),
    (GOOD + "events: [{kind: blackhole, at: 10}]", "events[0].duration", "missing"),
    (GOOD + "events: [{kind: deregister, at: 10}]", "events[0].kind", "several targets"),
    (NLB2 + "events: [{kind: deregister, at: 10, delay: 4000}]", "events[0].delay",
     "at most 3600"),
    (NLB2 + "events: [{kind: deregister, at: 10, termination: yes please}]",
     "events[0].termination", "true or false"),
    (GOOD + "events: [{kind: target_failure, at: 10}]", "events[0].kind",
     "no inspection targets"),
    (GOOD.replace("nat-gw", "gwlb") + "events: [{kind: target_failure, at: 10, "
     "failover: spread}]", "events[0].failover", "no_rebalance, rebalance"),
    (GOOD.replace("appliance: nat-gw", "appliance: nlb")
     + "events: [{kind: replace, at: 10}]", "events[0].kind", "use `restart`"),
    (GOOD + "events: [{kind: attach, at: 5}, {kind: attach, at: 6}]", "events",
     "attached once"),
    (GOOD + "events: [{kind: attach, at: 5}, {kind: restart, at: 6}]", "events",
     "cannot be combined"),
    (GOOD + "backend: docker\nevents: [{kind: attach, at: 5}]", "events[0].kind",
     "namespaces"),
    (GOOD.replace("appliance: nat-gw", "appliance: [nat-gw, nlb]")
     + "events: [{kind: restart, at: 5}]", "events", "chain"),
    (GOOD + "events: {kind: restart, at: 5}", "events", "must be a list"),
    (GOOD + "proxy: nginx", "proxy", "haproxy"),
    (GOOD + "proxy: haproxy\nevents: [{kind: restart, at: 5}]", "proxy",
     "without path events"),
    (GOOD.replace("timeout: 900,", "timeout: 900, retries: 50,"), "client.retries",
     "0 to 20"),
    (GOOD.replace("timeout: 900,", "timeout: 900, resolve: always,"), "client.resolve",
     "each, once"),
])
def test_bad_events_are_refused_naming_the_field(tmp_path: Path, text: str, field: str,
                                                 words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert info.value.field == field, str(info.value)
    assert "mine.yaml" in str(info.value) and words in str(info.value), str(info.value)


def test_events_are_read_in_time_order(tmp_path: Path) -> None:
    s = load_scenario(write(tmp_path, GOOD + "events: [{kind: blackhole, at: 50, duration: 9},"
                                             " {kind: restart, at: 20}]"))
    assert [(e.kind, e.at) for e in s.events] == [(PathKind.RESTART, 20.0),
                                                   (PathKind.BLACKHOLE, 50.0)]
    assert s.events[1].ends == 59.0


def test_the_cli_exits_2_for_an_unknown_event_kind(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD + "events: [{kind: reboot, at: 10}]")
    assert cli.main(["run", path]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "events[0].kind" in err and "reboot" in err
