"""A live world's path events on demand: the lines the commands write, as the dataplane
reads them (a partial line waits; a wrong one is passed over), and the engine acting on
one at the model time it is read."""

from __future__ import annotations

from pathlib import Path

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.packets import ip_to_str
from simulator.core.path_events import PathKind
from simulator.dataplane.control import ControlFile, request
from tests.unit.helpers import CLIENT, SERVER, tcp


def test_requests_are_read_once_whole_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "control.jsonl"
    control = ControlFile(path)
    assert control.requests() == []  # no file yet
    path.write_text(request(PathKind.RESTART) + request(PathKind.BLACKHOLE, 30.0)
                    + '{"kind": "deregister"}\n' + "not json\n"
                    + '{"kind": "blackhole"}\n' + '{"kind": "replace", "dur')
    got = control.requests()
    assert [(e.kind, e.duration) for e in got] == [(PathKind.RESTART, None),
                                                   (PathKind.BLACKHOLE, 30.0)]
    with path.open("a") as f:
        f.write('ation": null}\n')  # the rest of the line written later
    assert [e.kind for e in control.requests()] == [PathKind.REPLACE]
    assert control.requests() == []  # each request once


def test_a_restart_now_forgets_the_flows_then(tmp_path: Path) -> None:
    box = Middlebox(get_appliance("nat-gw"))
    box.on_packet(tcp(CLIENT, 1000, SERVER, 8080, "S", 1), Side.INSIDE, 0.0)
    assert len(list(box.flows)) == 1
    path = tmp_path / "control.jsonl"
    path.write_text(request(PathKind.RESTART))
    ControlFile(path).apply(box, 100.0)
    box.expire(100.0)
    assert list(box.flows) == []
    [event] = [e for e in box.take_events() if str(e.kind) == "path_event"]
    assert event.t == 100.0 and "flow table is lost" in event.text


def test_expire_now_forgets_one_flow_and_its_late_packet_meets_the_rule(tmp_path: Path) -> None:
    box = Middlebox(get_appliance("nat-gw"))
    box.on_packet(tcp(CLIENT, 1000, SERVER, 8080, "S", 1), Side.INSIDE, 0.0)
    box.on_packet(tcp(CLIENT, 1001, SERVER, 8080, "S", 1), Side.INSIDE, 0.0)
    first, second = sorted(box.flows, key=lambda f: f.id)
    path = tmp_path / "control.jsonl"
    path.write_text(request(PathKind.EXPIRE, flow=second.id)
                    + '{"kind": "restart", "flow": 1}\n'  # a flow only for expire
                    + '{"kind": "expire", "flow": "1"}\n')  # a number, not a string
    control = ControlFile(path)
    assert [(e.kind, e.flow) for e in control.requests()] == [(PathKind.EXPIRE, second.id)]
    path.write_text(request(PathKind.EXPIRE, flow=second.id))
    ControlFile(path).apply(box, 100.0)
    assert box.expire(100.0) == []  # the NAT Gateway sends nothing at expiry
    assert [f.id for f in box.flows] == [first.id]
    [gone] = [e for e in box.take_events() if str(e.kind) == "flow_expired"]
    assert gone.flow == second.id and "on demand" in gone.text and "after 100 s idle" in gone.text
    assert box.counters["FlowsExpiredOnDemand"] == 1 and box.counters["IdleTimeoutCount"] == 0
    # the server's late answer on the forgotten flow gets the NAT Gateway's RST
    public = ip_to_str(second.public_ip)
    late = box.on_packet(tcp(SERVER, 8080, public, second.public_port, "PA", 5, 2, b"late"),
                         Side.OUTSIDE, 101.0)
    assert late and box.counters["RstSent"] == 1


def test_expire_without_a_flow_forgets_every_one_and_azure_resets_both_ends() -> None:
    from simulator.core.path_events import PathEvent  # noqa: PLC0415

    azure = get_appliance("azure-lb").with_overrides({"on_expiry": "rst_both"})
    box, timed = Middlebox(azure), Middlebox(azure)
    for engine in (box, timed):
        engine.on_packet(tcp(CLIENT, 1000, SERVER, 8080, "S", 1), Side.INSIDE, 0.0)
    box.path_event_now(PathEvent(PathKind.EXPIRE, at=0.0), 50.0)
    sent = box.expire(50.0)
    at_timeout = timed.expire(azure.tcp_idle_timeout)
    assert list(box.flows) == [] and sent  # what the appliance sends at its timeout
    assert [(t.side, bytes(t.packet)) for t in sent] == \
        [(t.side, bytes(t.packet)) for t in at_timeout]
    box.path_event_now(PathEvent(PathKind.EXPIRE, at=0.0, flow=7), 60.0)
    box.expire(60.0)
    assert any("no flow #7 in the table" in e.text for e in box.take_events())
