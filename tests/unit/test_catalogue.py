"""The rest of the catalogue: transparent appliances, pass, rehash, reset at expiry."""

from __future__ import annotations

import json

import pytest
from scapy.layers.inet import TCP

from simulator.core.appliances import CATALOGUE, Appliance, ApplianceError, get_appliance
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import EventKind, Side
from tests.unit.helpers import CLIENT, SERVER, checksums_valid, parsed, tcp

CPORT, SPORT = 40000, 8080


class Path:
    """Client and server through one transparent or NAT appliance, on a manual clock."""

    def __init__(self, name: str, **overrides: object) -> None:
        self.box = Middlebox(get_appliance(name).with_overrides(dict(overrides)))
        self.now = 0.0
        self.c_seq, self.s_seq = 1001, 5001
        self.public = (CLIENT, CPORT)

    def client(self, flags: str, payload: bytes = b"", seq: int | None = None) -> list[Transmit]:
        pkt = tcp(CLIENT, CPORT, SERVER, SPORT, flags, self.c_seq if seq is None else seq,
                  self.s_seq, payload)
        return self.box.on_packet(pkt, Side.INSIDE, self.now)

    def server(self, flags: str, payload: bytes = b"", seq: int | None = None) -> list[Transmit]:
        pkt = tcp(SERVER, SPORT, self.public[0], self.public[1], flags,
                  self.s_seq if seq is None else seq, self.c_seq, payload)
        return self.box.on_packet(pkt, Side.OUTSIDE, self.now)

    def connect_and_ask(self) -> None:
        out = self.client("S", seq=1000)
        ip = parsed(out[0].packet)
        self.public = (ip.src, ip[TCP].sport)
        self.server("SA", seq=self.s_seq - 1)
        self.client("A")
        self.client("PA", b"GET\n")
        self.c_seq += 4
        self.server("A")

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.box.take_events()]


def test_every_entry_cites_a_source() -> None:
    for appliance in CATALOGUE.values():
        assert appliance.sources, appliance.name
        assert all(src.startswith("https://") for src in appliance.sources)


def test_transparent_appliance_does_not_translate() -> None:
    path = Path("nlb")
    out = path.client("S", seq=1000)
    ip = parsed(out[0].packet)
    assert (ip.src, ip[TCP].sport) == (CLIENT, CPORT)  # client IP preservation
    assert bytes(out[0].packet) == bytes(tcp(CLIENT, CPORT, SERVER, SPORT, "S", 1000,
                                             path.s_seq))


def test_nlb_resets_a_late_sender_either_side() -> None:
    path = Path("nlb")
    path.connect_and_ask()
    path.now = 351
    out = path.server("PA", b"answer\n")
    assert [t.side for t in out] == [Side.OUTSIDE]
    assert parsed(out[0].packet)[TCP].flags == "R"


def test_nlb_timeout_range_is_enforced() -> None:
    assert get_appliance("nlb").with_overrides({"tcp_idle_timeout": 1000}).tcp_idle_timeout \
        == 1000
    with pytest.raises(ApplianceError, match=r"allows 60-6000 s, got 30"):
        get_appliance("nlb").with_overrides({"tcp_idle_timeout": 30})


def test_network_firewall_drops_silently_and_a_new_syn_is_a_new_flow() -> None:
    path = Path("aws-network-firewall")
    path.connect_and_ask()
    path.now = 400
    assert path.server("PA", b"answer\n") == []
    assert path.box.counters["RstSent"] == 0
    assert len(path.client("S", seq=9000)) == 1
    assert len(path.box.flows) == 1


def test_security_group_passes_the_client_and_drops_the_reply() -> None:
    path = Path("ec2-sg-conntrack")
    path.connect_and_ask()
    path.now = 400
    assert path.server("PA", b"answer\n") == []  # no inbound rule for it
    out = path.client("A")  # the outbound rule allows it: tracked again, forwarded
    assert [t.side for t in out] == [Side.OUTSIDE]
    path.now = 401
    assert len(path.server("PA", b"answer\n")) == 1  # now the reply is tracked


def test_azure_lb_with_tcp_reset_resets_both_ends_at_expiry() -> None:
    path = Path("azure-lb", on_expiry="rst_both")
    path.connect_and_ask()
    out = path.box.expire(240.0)
    assert sorted(t.side for t in out) == [Side.INSIDE, Side.OUTSIDE]
    for t in out:
        assert checksums_valid(t.packet)
        ip = parsed(t.packet)
        assert ip[TCP].flags == "R"
        if t.side is Side.INSIDE:  # to the client, from the server, at the client's RCV.NXT
            assert (ip.src, ip.dst, ip[TCP].seq) == (SERVER, CLIENT, path.s_seq)
        else:
            assert (ip.src, ip.dst, ip[TCP].seq) == (CLIENT, SERVER, path.c_seq)


def test_azure_lb_default_is_silent() -> None:
    path = Path("azure-lb")
    path.connect_and_ask()
    assert path.box.expire(240.0) == []


def test_gcp_nat_transitory_timeout_until_established() -> None:
    path = Path("gcp-nat")
    path.client("S", seq=1000)
    path.box.expire(31.0)
    assert len(path.box.flows) == 0  # a handshake left hanging: 30 s
    path = Path("gcp-nat")
    path.connect_and_ask()
    path.box.expire(1199.0)
    assert len(path.box.flows) == 1  # established: 1200 s
    path.box.expire(1200.0)
    assert len(path.box.flows) == 0


@pytest.mark.parametrize("stickiness", [5, 3, 2])
def test_gwlb_drops_late_data_whatever_the_stickiness(stickiness: int) -> None:
    """The current GWLB guide: "data packets sent after the idle timeout period elapses are
    dropped"; only a SYN is a new flow."""
    path = Path("gwlb", stickiness=stickiness)
    path.connect_and_ask()
    path.now = 400
    assert path.server("PA", b"answer\n") == []
    assert path.box.counters["RstSent"] == 0 and len(path.box.flows) == 0
    dropped = [e for e in path.box.take_events() if e.kind is EventKind.DROPPED]
    assert dropped and "expired flow" in dropped[-1].text


def test_gwlb_a_new_syn_after_expiry_is_a_new_flow_hashed_anew() -> None:
    path = Path("gwlb")
    path.connect_and_ask()
    first = next(iter(path.box.flows)).target
    path.now = 400
    out = path.box.on_packet(tcp(CLIENT, CPORT, SERVER, SPORT, "S", 5), Side.INSIDE, 400)
    assert [t.side for t in out] == [Side.OUTSIDE]
    (flow,) = path.box.flows
    assert flow.target is not None and flow.target != first


def test_gwlb_2023_blog_five_tuple_rehash_lands_on_a_target_without_state() -> None:
    path = Path("gwlb-2023-blog")
    path.connect_and_ask()
    first = next(iter(path.box.flows)).target
    path.now = 400
    assert path.server("PA", b"answer\n") == []  # silently: no RST
    dropped = [e for e in path.box.take_events() if e.kind is EventKind.DROPPED]
    assert dropped and "has no state" in dropped[-1].text
    assert path.box.counters["RstSent"] == 0
    (rehashed,) = path.box.flows  # the late packet's new flow, hashed anew...
    assert first is not None and rehashed.target not in (None, first)  # ...elsewhere


def test_gwlb_2023_blog_two_tuple_stickiness_returns_to_the_same_target() -> None:
    path = Path("gwlb-2023-blog", stickiness=2)
    path.connect_and_ask()
    path.now = 400
    out = path.server("PA", b"answer\n")
    assert [t.side for t in out] == [Side.INSIDE]  # the same firewall still knows the flow
    assert EventKind.FLOW_EXPIRED in path.kinds()


def test_gwlb_2023_blog_sticky_target_forgets_too_after_its_own_timeout() -> None:
    path = Path("gwlb-2023-blog", stickiness=2, target_idle_timeout=380)
    path.connect_and_ask()
    path.now = 400
    assert path.server("PA", b"answer\n") == []


def test_gwlb_reset_option_sends_rst_to_the_sender() -> None:
    path = Path("gwlb", send_tcp_reset_on_idle_timeout=True)
    path.connect_and_ask()
    path.now = 400
    out = path.server("PA", b"answer\n")
    assert [t.side for t in out] == [Side.OUTSIDE]


def test_gwlb_timeout_needs_five_tuple_stickiness() -> None:
    with pytest.raises(ApplianceError, match="only with 5-tuple stickiness"):
        get_appliance("gwlb").with_overrides({"stickiness": 3, "tcp_idle_timeout": 1000})
    assert get_appliance("gwlb").with_overrides(
        {"stickiness": 5, "tcp_idle_timeout": 1000}).tcp_idle_timeout == 1000


def test_gwlb_2023_blog_retransmissions_stay_on_the_rehashed_target() -> None:
    """The re-hashed flow is tracked: its retransmissions do not wander to other hosts."""
    path = Path("gwlb-2023-blog")
    path.connect_and_ask()
    for t in (400, 431, 462, 525, 650, 900):
        path.now = t
        assert path.server("PA", b"answer\n") == []
    assert len(path.box.flows) == 1  # the one new flow, on one target
    assert path.box.balancer.generations[(6, bytes([198, 18, 1, 10]), CPORT,
                                          bytes([198, 19, 1, 10]), SPORT)] == 2


def test_an_appliance_crosses_a_process_boundary_as_its_own_record() -> None:
    for name, overrides in (("azure-lb", {"on_expiry": "rst_both"}),
                            ("gwlb", {"stickiness": 2, "target_idle_timeout": 500}),
                            ("nlb", {"tcp_idle_timeout": 1000})):
        appliance = get_appliance(name).with_overrides(overrides)
        record = json.loads(json.dumps(appliance.to_record()))
        assert Appliance.from_record(record) == appliance
    for appliance in CATALOGUE.values():
        assert Appliance.from_record(appliance.to_record()) == appliance
    record = get_appliance("nlb").to_record()
    with pytest.raises(ApplianceError, match="keepalive_echo"):
        Appliance.from_record({**record, "keepalive_echo": 0})
    with pytest.raises(ApplianceError, match="unknown"):
        Appliance.from_record({**record, "colour": "red"})


def test_nlb_tls_answers_a_keepalive_with_its_own_on_both_legs() -> None:
    path = Path("nlb-tls")
    path.connect_and_ask()
    path.now = 300
    path.client("A", seq=path.c_seq - 1)  # the client's keepalive probe
    assert path.box.next_deadline() == 320
    out = path.box.expire(320.0)
    assert sorted(t.side for t in out) == [Side.INSIDE, Side.OUTSIDE]
    for t in out:
        ip = parsed(t.packet)
        assert ip[TCP].flags == "A" and checksums_valid(t.packet)
        if t.side is Side.INSIDE:
            assert (ip.src, ip.dst, ip[TCP].seq, ip[TCP].ack) == (SERVER, CLIENT,
                                                                  path.s_seq - 1, path.c_seq)
        else:
            assert (ip.src, ip.dst, ip[TCP].seq, ip[TCP].ack) == (CLIENT, SERVER,
                                                                  path.c_seq - 1, path.s_seq)
    # with nothing else on the wire, the appliance's own probes keep the flow alive
    for second in range(340, 2000, 20):
        path.box.expire(float(second))
    assert len(path.box.flows) == 1
    assert path.box.counters["ApplianceKeepalives"] > 150


def test_nlb_tls_timeout_is_fixed() -> None:
    with pytest.raises(ApplianceError, match="allows 350-350 s"):
        get_appliance("nlb-tls").with_overrides({"tcp_idle_timeout": 1000})


def _nlb_with_backends() -> Middlebox:
    return Middlebox(get_appliance("nlb").with_overrides(
        {"backends": 2, "backend_ips": ["198.19.1.10", "198.19.2.10"]}))


def test_nlb_forwards_the_virtual_address_to_a_backend_and_back() -> None:
    box = _nlb_with_backends()
    syn = tcp(CLIENT, CPORT, "198.19.0.100", SPORT, "S", 1000)
    out = box.on_packet(syn, Side.INSIDE, 0.0)
    ip = parsed(out[0].packet)
    flow = next(iter(box.flows))
    assert flow.backend is not None and out[0].port == flow.backend
    backend_ip = ["198.19.1.10", "198.19.2.10"][flow.backend]
    assert (ip.src, ip.dst) == (CLIENT, backend_ip) and checksums_valid(out[0].packet)
    reply = box.on_packet(tcp(backend_ip, SPORT, CLIENT, CPORT, "SA", 5000, 1001),
                          Side.OUTSIDE, 0.0)
    ip = parsed(reply[0].packet)
    assert (ip.src, ip.dst) == ("198.19.0.100", CLIENT)  # the client sees the VIP
    assert checksums_valid(reply[0].packet)
    # after expiry the backend's late answer is reset, out of the backend's own port
    late = box.on_packet(tcp(backend_ip, SPORT, CLIENT, CPORT, "PA", 5001, 1001, b"x"),
                         Side.OUTSIDE, 400.0)
    assert late[0].side is Side.OUTSIDE and late[0].port == flow.backend
    assert parsed(late[0].packet).dst == backend_ip


def test_nlb_udp_flow_after_expiry_returns_to_its_target_a_new_port_may_not() -> None:
    """NLB hashes UDP on the 5-tuple: a flow created again after its 120 s expiry, same
    5-tuple, goes to the same target ("consistently routed to a single target"); other
    source ports spread over both."""
    from tests.unit.helpers import udp  # noqa: PLC0415

    box = _nlb_with_backends()
    first = box.on_packet(udp(CLIENT, 5353, "198.19.0.100", 53), Side.INSIDE, 0.0)[0].port
    again = box.on_packet(udp(CLIENT, 5353, "198.19.0.100", 53), Side.INSIDE, 200.0)[0].port
    assert first == again
    assert box.counters["IdleTimeoutCount"] == 1  # a new flow, not the old one refreshed
    ports = {box.on_packet(udp(CLIENT, 6000 + i, "198.19.0.100", 53), Side.INSIDE,
                           300.0)[0].port for i in range(16)}
    assert ports == {0, 1}


def test_flow_hash_is_reproducible_and_seeded() -> None:
    def target(seed: int) -> int | None:
        path = Path("gwlb", stickiness=2, hash_seed=seed, targets=16)
        path.connect_and_ask()
        return next(iter(path.box.flows)).target

    assert target(7) == target(7)
    assert len({target(seed) for seed in range(8)}) > 1


def test_hyperplane_eni_drops_syns_over_its_connection_limit() -> None:
    box = Middlebox(get_appliance("hyperplane-eni").with_overrides(
        {"capacity_scale": 0.0001, "enis": 2}))  # round(6.5) = 6 per ENI, 12 in all
    assert box.appliance.connection_limit == 12
    passed = [box.on_packet(tcp(CLIENT, 1000 + i, SERVER, SPORT, "S", 1), Side.INSIDE, 0.0)
              for i in range(20)]
    assert sum(1 for out in passed if out) == 12
    assert box.counters["RejectedConnectionCount"] == 8
    # closing one makes room for one more
    box.on_packet(tcp(CLIENT, 1000, SERVER, SPORT, "R", 2), Side.INSIDE, 0.0)
    assert box.on_packet(tcp(CLIENT, 2000, SERVER, SPORT, "S", 1), Side.INSIDE, 0.0)


def test_a_flood_of_flows_does_not_flood_the_log() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    for i in range(3000):
        box.on_packet(tcp(CLIENT, 1024 + i, SERVER, SPORT, "S", 1), Side.INSIDE, 0.0)
    created = [e for e in box.take_events() if e.kind is EventKind.FLOW_CREATED]
    assert 20 <= len(created) <= 25 and len(box.flows) == 3000


def test_a_value_resting_on_one_source_says_so_until_overridden(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The NAT Gateway's RST to the server rests on one blog post: natsim list and natsim
    check name it; once a scenario overrides the value, its caveat is gone."""
    from simulator.cli.main import main  # noqa: PLC0415
    from simulator.core.appliances import caveats  # noqa: PLC0415

    nat = get_appliance("nat-gw")
    assert any(c.startswith("late_from_outside: rst rests on one source") for c in caveats(nat))
    dropped = nat.with_overrides({"late_from_outside": "drop"})
    assert not any(c.startswith("late_from_outside") for c in caveats(dropped))
    assert not any(c.startswith("udp_") for c in caveats(nat, tcp=True))
    main(["list"])
    assert "caveat, late_from_outside: rst rests on one source" in capsys.readouterr().out
    main(["check", "--appliance", "nat-gw", "--idle", "400"])
    assert "caveat, nat-gw late_from_outside" in capsys.readouterr().out


def test_the_default_matrix_runs_the_documentations_reading_beside_the_blogs() -> None:
    from simulator.runs.matrix import load_matrix  # noqa: PLC0415

    kinds = {(c.scenario.appliance.name, str(c.scenario.appliance.late_from_outside))
             for c in load_matrix("keepalive").cells}
    assert {("nat-gw", "rst"), ("nat-gw", "drop")} <= kinds
