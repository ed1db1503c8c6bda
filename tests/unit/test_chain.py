"""Appliances in series, in one engine: client -> NAT Gateway -> NLB (300 s) -> server."""

from __future__ import annotations

from scapy.layers.inet import TCP

from simulator.core.appliances import get_appliance
from simulator.core.chain import Chain
from simulator.core.events import EventKind, Side
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, checksums_valid, parsed, tcp

CPORT, SPORT = 40000, 8080


def chain_with_flow() -> tuple[Chain, int]:
    chain = Chain([get_appliance("nat-gw"),
                   get_appliance("nlb").with_overrides({"tcp_idle_timeout": 300})])
    out = chain.on_packet(tcp(CLIENT, CPORT, SERVER, SPORT, "S", 1000), Side.INSIDE, 0.0)
    public_port = parsed(out[0].packet)[TCP].sport
    chain.on_packet(tcp(SERVER, SPORT, PUBLIC, public_port, "SA", 5000, 1001), Side.OUTSIDE,
                    0.0)
    chain.on_packet(tcp(CLIENT, CPORT, SERVER, SPORT, "A", 1001, 5001), Side.INSIDE, 0.0)
    return chain, public_port


def test_packets_cross_every_stage_and_are_translated_once() -> None:
    chain, public_port = chain_with_flow()
    assert [len(list(s.flows)) for s in chain.stages] == [1, 1]
    nlb_flow = next(iter(chain.stages[1].flows))
    assert nlb_flow.client == (bytes([203, 0, 113, 1]), public_port)  # the NLB sees the NAT


def test_the_shortest_timeout_acts_first_and_events_say_which() -> None:
    chain, public_port = chain_with_flow()
    out = chain.on_packet(tcp(SERVER, SPORT, PUBLIC, public_port, "PA", 5001, 1001,
                              b"answer"), Side.OUTSIDE, 320.0)
    assert [t.side for t in out] == [Side.OUTSIDE]
    assert parsed(out[0].packet)[TCP].flags == "R"
    events = chain.take_events()
    expired = [e for e in events if e.kind is EventKind.FLOW_EXPIRED]
    assert [e.data["appliance"] for e in expired] == ["nlb"]  # the NAT's 350 s are not up
    assert all(e.text.startswith("[") for e in events)


def test_an_rst_towards_the_client_is_translated_back_by_the_nat() -> None:
    chain, _ = chain_with_flow()
    probe = tcp(CLIENT, CPORT, SERVER, SPORT, "A", 1000, 5001)  # keepalive at 320 s
    out = chain.on_packet(probe, Side.INSIDE, 320.0)
    assert [t.side for t in out] == [Side.INSIDE]
    ip = parsed(out[0].packet)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (SERVER, SPORT, CLIENT, CPORT)
    assert ip[TCP].flags == "R" and ip[TCP].seq == 5001
    assert checksums_valid(out[0].packet)
    # the RST passing through the NAT Gateway ended its flow too
    assert len(list(chain.stages[0].flows)) == 0


def test_counters_and_deadlines_cover_every_stage() -> None:
    chain, _ = chain_with_flow()
    assert chain.next_deadline() == 300.0
    chain.expire(400.0)
    assert chain.counters["IdleTimeoutCount"] == 2
    assert chain.counters["nlb:IdleTimeoutCount"] == 1
