"""Path events in the pure core: each kind driven with synthetic packets and a manual clock."""

from __future__ import annotations

from scapy.layers.inet import TCP

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import Event, EventKind, Side
from simulator.core.path_events import PathEvent, PathKind, replacement_addresses
from tests.unit.helpers import CLIENT, SERVER, parsed, tcp

CPORT, SPORT = 40000, 8080
VIP, BACKENDS = "198.19.0.100", ["198.19.1.10", "198.19.2.10"]


class Path:
    """One TCP connection through an appliance with path events, on a manual clock."""

    def __init__(self, name: str, *events: PathEvent, **overrides: object) -> None:
        self.box = Middlebox(get_appliance(name).with_overrides(dict(overrides)))
        self.box.path_events(events)
        self.now = 0.0
        self.server_ip = SERVER
        self.public = (CLIENT, CPORT)
        self.c_seq, self.s_seq = 1001, 5001

    def client(self, flags: str, payload: bytes = b"", sport: int = CPORT) -> list[Transmit]:
        pkt = tcp(CLIENT, sport, self.dst, SPORT, flags, self.c_seq, self.s_seq, payload)
        return self.box.on_packet(pkt, Side.INSIDE, self.now)

    @property
    def dst(self) -> str:
        return VIP if self.box.appliance.backends > 1 else SERVER

    def server(self, flags: str, payload: bytes = b"") -> list[Transmit]:
        pkt = tcp(self.server_ip, SPORT, self.public[0], self.public[1], flags, self.s_seq,
                  self.c_seq, payload)
        return self.box.on_packet(pkt, Side.OUTSIDE, self.now)

    def connect(self) -> None:
        out = self.client("S")
        ip = parsed(out[0].packet)
        self.public = (ip.src, ip[TCP].sport)
        self.server_ip = ip.dst
        self.c_seq += 1
        self.server("SA")
        self.s_seq += 1
        self.client("A")

    def path_events(self) -> list[Event]:
        return [e for e in self.box.take_events() if e.kind is EventKind.PATH_EVENT]


def test_events_count_from_the_first_packet_of_the_client() -> None:
    path = Path("nat-gw", PathEvent(PathKind.RESTART, at=100))
    path.now = 50.0
    path.connect()  # armed now: the restart is due at 150
    path.now = 149.0
    assert path.client("PA", b"x") and not path.path_events()
    path.now = 151.0
    path.client("PA", b"y")
    [event] = path.path_events()
    assert event.t == 150.0 and event.data["path_event"] == "restart"


def test_a_restart_forgets_every_flow_and_the_late_rule_answers() -> None:
    path = Path("nat-gw", PathEvent(PathKind.RESTART, at=100))
    path.connect()
    path.now = 101.0  # well inside the 350 s idle timeout
    out = path.client("A")
    assert len(out) == 1 and out[0].side is Side.INSIDE
    assert parsed(out[0].packet)[TCP].flags == "R"  # the NAT Gateway's RST
    assert path.box.counters["FlowsLostOnRestart"] == 1
    assert path.box.counters["IdleTimeoutCount"] == 0
    assert not path.box.ports.in_use(6, bytes(map(int, SERVER.split("."))), SPORT)
    dropped = [e for e in path.box.take_events() if e.kind is EventKind.DROPPED]
    assert "forgotten flow #1" in dropped[0].text


def test_a_replacement_has_new_public_addresses() -> None:
    path = Path("nat-gw", PathEvent(PathKind.REPLACE, at=100))
    path.connect()
    assert path.public[0] == "203.0.113.1"
    path.now = 101.0
    assert parsed(path.client("A")[0].packet)[TCP].flags == "R"
    [event] = path.path_events()
    assert event.data["public_ips"] == ["203.0.113.2"]
    out = path.client("S", sport=CPORT + 1)  # a new connection leaves from the new address
    assert parsed(out[0].packet).src == "203.0.113.2"
    assert replacement_addresses(("203.0.113.1", "203.0.113.7")) == ("203.0.113.8",
                                                                      "203.0.113.9")


def test_a_blackhole_drops_everything_and_refreshes_nothing() -> None:
    path = Path("nat-gw", PathEvent(PathKind.BLACKHOLE, at=100, duration=50))
    path.connect()
    path.now = 120.0
    assert path.client("A") == [] and path.server("PA", b"answer") == []
    assert path.box.counters["BlackholeDrops"] == 2
    flow = next(iter(path.box.flows))
    assert flow.last_seen == 0.0  # lost before the appliance saw it
    path.now = 151.0
    assert path.client("A")  # after the blackhole: forwarded again
    assert [e.data["phase"] for e in path.path_events()] == ["start", "end"]


def test_deregistration_with_termination_resets_both_ends_after_the_delay() -> None:
    event = PathEvent(PathKind.DEREGISTER, at=100, delay=60, termination=True)
    path = Path("nlb", event, backends=2, backend_ips=BACKENDS)
    path.connect()
    serving = next(iter(path.box.flows)).port
    path.now = 101.0
    path.client("PA", b"still served")  # draining: existing flows continue
    assert path.box.flows
    # new connections avoid the draining target
    for port in range(CPORT + 1, CPORT + 9):
        out = path.client("S", sport=port)
        assert out[0].port != serving
    path.now = 161.0
    out = path.client("A")
    rsts = [t for t in out if parsed(t.packet)[TCP].flags == "R"]
    assert {t.side for t in rsts} == {Side.INSIDE, Side.OUTSIDE}
    assert path.box.counters["DeregistrationTerminations"] == 1
    assert not any(f.port == serving for f in path.box.flows)


def test_deregistration_without_termination_keeps_the_connection() -> None:
    path = Path("nlb", PathEvent(PathKind.DEREGISTER, at=100, delay=60), backends=2,
                backend_ips=BACKENDS)
    path.connect()
    path.now = 300.0
    out = path.server("PA", b"answer")
    assert len(out) == 1 and out[0].side is Side.INSIDE
    assert path.box.counters["RstSent"] == 0
    [event] = path.path_events()
    assert "connection termination is off" in event.text


def test_a_failed_inspection_target_drops_its_flows_and_new_ones_avoid_it() -> None:
    path = Path("gwlb", PathEvent(PathKind.TARGET_FAILURE, at=100), targets=4)
    path.connect()
    failed = next(iter(path.box.flows)).target
    path.now = 101.0
    assert path.server("PA", b"answer") == []
    dropped = [e for e in path.box.take_events() if e.kind is EventKind.DROPPED]
    assert f"inspection target {failed} has failed" in dropped[0].text
    for port in range(CPORT + 1, CPORT + 20):
        path.client("S", sport=port)
    assert all(f.target != failed for f in path.box.flows if f.inside[2] != CPORT)


def test_rebalance_moves_the_flow_to_a_healthy_target_that_never_saw_it() -> None:
    event = PathEvent(PathKind.TARGET_FAILURE, at=100, delay=30, failover="rebalance")
    path = Path("gwlb", event, targets=4)
    path.connect()
    failed = next(iter(path.box.flows)).target
    path.now = 131.0
    assert path.server("PA", b"answer") == []  # the new host has no state for it
    flow = next(iter(path.box.flows))
    assert flow.target != failed
    assert [e.data["phase"] for e in path.path_events()] == ["start", "rebalance"]


def test_a_record_survives_the_trip_to_the_dataplane() -> None:
    event = PathEvent(PathKind.DEREGISTER, at=5, delay=7, termination=True)
    assert PathEvent.from_record(event.to_record()) == event

