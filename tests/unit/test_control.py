"""A live world's path events on demand: the lines the commands write, as the dataplane
reads them (a partial line waits; a wrong one is passed over), and the engine acting on
one at the model time it is read."""

from __future__ import annotations

from pathlib import Path

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
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
