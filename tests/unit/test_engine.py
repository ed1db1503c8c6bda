"""The NAT Gateway's rules, driven with a ManualClock and synthetic packets: no sockets."""

from __future__ import annotations

from scapy.layers.inet import TCP, UDP

from simulator.core.appliances import NAT_GATEWAY, LateAction
from simulator.core.clock import ManualClock
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import EventKind, Side
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, checksums_valid, parsed, tcp, udp

CPORT, SPORT = 40000, 8080
C_ISN, S_ISN = 1000, 5000


class Path:
    """A client and a server talking through one engine, with a manual clock."""

    def __init__(self, **overrides: object) -> None:
        self.clock = ManualClock()
        self.box = Middlebox(NAT_GATEWAY.with_overrides(dict(overrides)))
        self.public_port = 0
        self.c_seq, self.s_seq = C_ISN + 1, S_ISN + 1

    def from_client(self, flags: str, seq: int, ack: int = 0, payload: bytes = b"",
                    sport: int = CPORT) -> list[Transmit]:
        pkt = tcp(CLIENT, sport, SERVER, SPORT, flags, seq, ack, payload)
        return self.box.on_packet(pkt, Side.INSIDE, self.clock.now())

    def from_server(self, flags: str, seq: int, ack: int = 0,
                    payload: bytes = b"") -> list[Transmit]:
        pkt = tcp(SERVER, SPORT, PUBLIC, self.public_port, flags, seq, ack, payload)
        return self.box.on_packet(pkt, Side.OUTSIDE, self.clock.now())

    def handshake_and_request(self) -> None:
        out = self.from_client("S", C_ISN)
        self.public_port = parsed(out[0].packet)[TCP].sport
        self.from_server("SA", S_ISN, C_ISN + 1)
        self.from_client("A", self.c_seq, self.s_seq)
        self.from_client("PA", self.c_seq, self.s_seq, b"GET /\n")
        self.c_seq += 6
        self.from_server("A", self.s_seq, self.c_seq)

    def keepalive_probe(self) -> list[Transmit]:
        return self.from_client("A", self.c_seq - 1, self.s_seq)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.box.take_events()]


def test_first_syn_creates_a_mapping_and_is_source_natted() -> None:
    path = Path()
    out = path.from_client("S", C_ISN)
    assert len(out) == 1 and out[0].side is Side.OUTSIDE
    ip = parsed(out[0].packet)
    assert (ip.src, ip.dst, ip[TCP].dport) == (PUBLIC, SERVER, SPORT)
    assert 1024 <= ip[TCP].sport <= 65535
    assert checksums_valid(out[0].packet)
    assert path.kinds() == [EventKind.FLOW_CREATED]


def test_replies_are_translated_back_to_the_client() -> None:
    path = Path()
    path.public_port = parsed(path.from_client("S", C_ISN)[0].packet)[TCP].sport
    out = path.from_server("SA", S_ISN, C_ISN + 1)
    assert len(out) == 1 and out[0].side is Side.INSIDE
    ip = parsed(out[0].packet)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (SERVER, SPORT, CLIENT, CPORT)
    assert checksums_valid(out[0].packet)


def test_flow_survives_until_just_before_the_deadline() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(349.999)
    out = path.from_server("PA", path.s_seq, path.c_seq, b"answer\n")
    assert [t.side for t in out] == [Side.INSIDE]
    assert EventKind.FLOW_EXPIRED not in path.kinds()


def test_expiry_at_the_deadline_and_not_before() -> None:
    path = Path()
    path.handshake_and_request()
    deadline = path.box.next_deadline()
    assert deadline == 350.0
    path.clock.advance(349.9)
    path.box.expire(path.clock.now())
    assert len(path.box.flows) == 1
    path.clock.advance(0.1)
    path.box.expire(path.clock.now())
    assert len(path.box.flows) == 0
    expired = [e for e in path.box.take_events() if e.kind is EventKind.FLOW_EXPIRED]
    assert len(expired) == 1 and expired[0].t == 350.0


def test_expiry_is_silent_on_the_wire() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(1000)
    assert path.box.expire(path.clock.now()) == []


def test_keepalive_probe_refreshes_the_idle_timer() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(300)
    out = path.keepalive_probe()
    assert [t.side for t in out] == [Side.OUTSIDE]
    assert parsed(out[0].packet)[TCP].seq == path.c_seq - 1  # the probe is forwarded as is
    path.from_server("A", path.s_seq, path.c_seq)  # the server's kernel answers it
    events = path.box.take_events()
    keepalives = [e for e in events if e.kind is EventKind.KEEPALIVE]
    assert len(keepalives) == 1 and keepalives[0].side is Side.INSIDE
    path.clock.advance(100)  # 400 s after the request, 100 s after the probe
    out = path.from_server("PA", path.s_seq, path.c_seq, b"answer\n")
    assert [t.side for t in out] == [Side.INSIDE]
    assert path.box.counters["IdleTimeoutCount"] == 0


def test_without_the_probe_the_same_answer_is_reset() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(400)
    out = path.from_server("PA", path.s_seq, path.c_seq, b"answer\n")
    assert len(out) == 1 and out[0].side is Side.OUTSIDE


def test_late_packet_from_the_server_gets_an_rst_the_server_will_accept() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(400)
    out = path.from_server("PA", path.s_seq, path.c_seq, b"answer\n")
    assert len(out) == 1
    rst = out[0]
    assert rst.side is Side.OUTSIDE  # back to the server; the client hears nothing
    ip = parsed(rst.packet)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (PUBLIC, path.public_port,
                                                               SERVER, SPORT)
    assert ip[TCP].flags == "R"
    assert ip[TCP].seq == path.c_seq  # = the server's RCV.NXT: accepted, not challenged
    assert checksums_valid(rst.packet)
    kinds = path.kinds()
    assert kinds[-3:] == [EventKind.FLOW_EXPIRED, EventKind.DROPPED, EventKind.RST_SENT]


def test_late_packet_from_the_client_gets_an_rst_back_to_the_client() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(351)
    out = path.keepalive_probe()  # even a zero-length probe
    assert len(out) == 1 and out[0].side is Side.INSIDE
    ip = parsed(out[0].packet)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (SERVER, SPORT, CLIENT, CPORT)
    assert ip[TCP].flags == "R"
    assert ip[TCP].seq == path.s_seq  # the client's RCV.NXT
    assert checksums_valid(out[0].packet)


def test_drop_option_for_packets_from_outside() -> None:
    path = Path(late_from_outside="drop")
    path.handshake_and_request()
    path.clock.advance(400)
    assert path.from_server("PA", path.s_seq, path.c_seq, b"answer\n") == []
    assert path.box.counters["RstSent"] == 0
    assert path.box.counters["PacketsDropCount"] == 1
    assert path.box.appliance.late_from_outside is LateAction.DROP


def test_an_rst_is_never_answered_with_an_rst() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(400)
    assert path.from_server("R", path.s_seq) == []


def test_new_syn_after_expiry_creates_a_new_mapping() -> None:
    path = Path()
    path.handshake_and_request()
    first_port = path.public_port
    path.clock.advance(400)
    out = path.from_client("S", 90000)
    assert len(out) == 1 and out[0].side is Side.OUTSIDE
    assert len(path.box.flows) == 1
    flow = next(iter(path.box.flows))
    assert flow.id == 2
    # a new mapping, on the next port: the freed one is not handed out at once (the server
    # may still hold the old connection)
    assert parsed(out[0].packet)[TCP].sport != first_port and flow.last_seen == 400


def test_non_syn_without_a_flow_does_not_create_one() -> None:
    path = Path()
    out = path.from_client("A", C_ISN, 1)
    assert len(out) == 1 and out[0].side is Side.INSIDE  # RST to the client
    assert len(path.box.flows) == 0


def test_rst_passing_through_ends_the_flow() -> None:
    path = Path()
    path.handshake_and_request()
    path.from_client("R", path.c_seq)
    assert len(path.box.flows) == 0
    assert path.box.ports.in_use(6, bytes([198, 19, 1, 10]), SPORT) == 0


def test_udp_flow_expires_silently_and_late_datagrams_are_dropped() -> None:
    path = Path(udp_idle_timeout=120)
    out = path.box.on_packet(udp(CLIENT, 5353, SERVER, 53), Side.INSIDE, 0.0)
    assert len(out) == 1
    public_port = parsed(out[0].packet)[UDP].sport
    reply = udp(SERVER, 53, PUBLIC, public_port, b"answer")
    path.clock.advance(119)
    assert len(path.box.on_packet(reply, Side.OUTSIDE, path.clock.now())) == 1
    path.clock.advance(120)  # 120 s after the last datagram
    late = udp(SERVER, 53, PUBLIC, public_port, b"late")
    assert path.box.on_packet(late, Side.OUTSIDE, path.clock.now()) == []
    assert path.box.counters["RstSent"] == 0
    assert path.box.counters["IdleTimeoutCount"] == 1


def test_port_allocation_error_when_the_destination_is_full() -> None:
    path = Path(ports_per_destination=2)
    for sport in (1, 2):
        assert len(path.from_client("S", C_ISN, sport=sport)) == 1
    assert path.from_client("S", C_ISN, sport=3) == []
    assert path.box.counters["ErrorPortAllocation"] == 1
    assert EventKind.PORT_ALLOCATION_ERROR in path.kinds()
    path.from_client("R", C_ISN + 1, sport=1)  # frees a port
    assert len(path.from_client("S", C_ISN, sport=3)) == 1


def test_late_packet_of_expired_flow_is_named_in_the_log() -> None:
    path = Path()
    path.handshake_and_request()
    path.clock.advance(400)
    path.from_server("PA", path.s_seq, path.c_seq, b"answer\n")
    dropped = [e for e in path.box.take_events() if e.kind is EventKind.DROPPED]
    assert dropped[0].flow == 1 and "expired flow #1" in dropped[0].text
