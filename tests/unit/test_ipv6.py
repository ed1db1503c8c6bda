"""IPv6 and NAT64 in the pure core and the frame path: parsing with extension headers, the
NAT rewrite, RFC 7915 translation both ways (checked against scapy's own checksums), the
engine's NAT64 flows, neighbour discovery, DNS64, and the scenario and plan fields."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

from simulator.core import packets as P  # noqa: N812 (short, like scapy layers)
from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.plan import NAT64_NET, nat64_address, world_plan
from simulator.dataplane.frames import ETH_P_IPV6, neighbour_advertisement
from simulator.spec.scenario import ScenarioError, parse_scenario
from simulator.workloads.dns import answer
from tests.unit.test_frames import MAC_A, MAC_B, VNET, Harness

C6, S6, SERVER6 = "2001:db8:1::10", "64:ff9b::c613:10a", "2001:db8:2::10"
SERVER4, PUBLIC = "198.19.1.10", "203.0.113.1"


def v6(layers: ScapyPacket) -> bytearray:
    return bytearray(bytes(layers))


def checksum_ok(packet: bytes | bytearray) -> bool:
    """scapy recomputes every checksum the packet carries and finds the same values."""
    top = IPv6 if packet[0] >> 4 == 6 else IP
    got = top(bytes(packet))
    fresh = top(bytes(packet))
    for layer in (TCP, UDP):
        if layer in fresh:
            del fresh[layer].chksum
    if top is IP:
        del fresh[IP].chksum
    return bytes(top(bytes(fresh))) == bytes(got)


def test_parse_walks_extension_headers_to_tcp() -> None:
    raw = v6(IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting()
             / IPv6ExtHdrDestOpt() / TCP(sport=40000, dport=8080, flags="PA", seq=5, ack=9)
             / b"hello")
    pkt = P.parse(raw)
    assert pkt is not None
    assert (P.ip_to_str(pkt.src), pkt.sport, P.ip_to_str(pkt.dst), pkt.dport) == (
        C6, 40000, S6, 8080)
    assert (pkt.l4, pkt.payload_len, pkt.seq, pkt.ack) == (40 + 3 * 8, 5, 5, 9)


def test_parse_refuses_fragments_long_chains_and_bad_lengths() -> None:
    frag = v6(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(m=1) / UDP(sport=1, dport=2))
    assert P.parse(frag) is None  # fragments are not modelled, as for IPv4
    chain: ScapyPacket = IPv6(src=C6, dst=S6)
    for _ in range(P.MAX_EXTENSIONS + 1):
        chain = chain / IPv6ExtHdrDestOpt()
    assert P.parse(v6(chain / UDP(sport=1, dport=2))) is None
    ok = v6(IPv6(src=C6, dst=S6) / UDP(sport=1, dport=2) / b"abc")
    assert P.parse(ok) is not None
    assert P.parse(ok[:-1]) is None  # shorter than its payload length says
    ok[4:6] = b"\x00\x00"
    assert P.parse(ok) is None  # zero: a jumbogram, never on this path
    echo = v6(IPv6(src=C6, dst=S6) / ICMPv6EchoRequest())
    assert P.parse(echo) is None  # ICMPv6 is not tracked (yet): counted as unsupported


@pytest.mark.parametrize("source", [True, False])
def test_ipv6_rewrite_keeps_the_transport_checksum(source: bool) -> None:
    for layer in (TCP(sport=40000, dport=8080, flags="PA") / (b"x" * 33),
                  UDP(sport=40000, dport=8080) / (b"y" * 7)):
        raw = v6(IPv6(src=C6, dst=SERVER6) / layer)
        pkt = P.parse(raw)
        assert pkt is not None
        new = P.ip_from_str("2001:db8:ffff::1")
        (P.rewrite_source if source else P.rewrite_destination)(raw, pkt, new, 1234)
        assert checksum_ok(raw)
        got = IPv6(bytes(raw))
        assert (got.src if source else got.dst) == "2001:db8:ffff::1"


@pytest.mark.parametrize("layer", [TCP(sport=40000, dport=8080, flags="S", seq=1),
                                   TCP(sport=40000, dport=8080, flags="PA") / (b"z" * 1300),
                                   UDP(sport=40000, dport=53) / b"query"])
def test_nat64_translates_ipv6_to_ipv4_and_back(layer: ScapyPacket) -> None:
    raw = v6(IPv6(src=C6, dst=S6, hlim=61, tc=0x28) / IPv6ExtHdrDestOpt() / layer)
    pkt = P.parse(raw)
    assert pkt is not None
    out, out_pkt = P.to_ipv4(raw, pkt, P.ip_from_str(PUBLIC), P.embedded_ipv4(pkt.dst) or b"")
    assert checksum_ok(out)
    ip = IP(bytes(out))
    assert (ip.src, ip.dst, ip.ttl, ip.tos, ip.len) == (PUBLIC, SERVER4, 61, 0x28, len(out))
    assert bool(ip.flags.DF) is (len(out) > 1260)  # RFC 7915 section 5.1
    assert P.parse(out) == out_pkt
    back, back_pkt = P.to_ipv6(out, out_pkt, P.ip_from_str(S6), P.ip_from_str(C6))
    assert checksum_ok(back)
    again = IPv6(bytes(back))
    assert (again.src, again.dst, again.hlim, again.tc) == (S6, C6, 61, 0x28)
    assert bytes(back[40:]) == bytes(raw[pkt.l4:])  # the transport part came back unchanged
    assert P.parse(back) == back_pkt


def test_an_ipv4_datagram_without_checksum_gets_one_in_ipv6() -> None:
    raw = bytearray(bytes(IP(src=SERVER4, dst=PUBLIC) / UDP(sport=53, dport=1024) / b"ans"))
    raw[26:28] = b"\x00\x00"
    pkt = P.parse(raw)
    assert pkt is not None
    out, _ = P.to_ipv6(raw, pkt, P.ip_from_str(S6), P.ip_from_str(C6))
    assert IPv6(bytes(out))[UDP].chksum != 0 and checksum_ok(out)


def test_rst_replies_are_ipv6_for_ipv6() -> None:
    pkt = P.parse(v6(IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, flags="PA", seq=3, ack=77)
                     / b"late"))
    assert pkt is not None
    rst = P.build_rst_reply(pkt)
    assert checksum_ok(rst)
    got = IPv6(bytes(rst))
    assert (got.src, got.dst, got[TCP].flags, got[TCP].seq) == (S6, C6, "R", 77)


def test_addresses_print_and_parse_in_both_families() -> None:
    assert P.ip_to_str(P.ip_from_str(S6)) == S6
    assert P.nat64_address(P.ip_from_str(SERVER4)) == P.ip_from_str(S6)
    assert nat64_address(SERVER4) == S6
    assert P.embedded_ipv4(P.ip_from_str(SERVER6)) is None
    with pytest.raises(ValueError, match="not an IPv6 address"):
        P.ip_from_str("2001:db8::zz")


def _engine_frames(mb: Middlebox, raw: bytearray, side: Side, t: float) -> list[bytes]:
    return [bytes(a.packet) for a in mb.on_packet(raw, side, t)]


def test_the_nat_gateway_translates_a_nat64_flow_and_resets_it_in_ipv6() -> None:
    mb = Middlebox(get_appliance("nat-gw"))
    syn = _engine_frames(mb, v6(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=8080,
                                                               flags="S", seq=100)),
                         Side.INSIDE, 0.0)
    out = IP(syn[0])
    assert (out.src, out.dst, out[TCP].dport) == (PUBLIC, SERVER4, 8080) and checksum_ok(syn[0])
    answer_ = _engine_frames(mb, bytearray(bytes(
        IP(src=SERVER4, dst=PUBLIC) / TCP(sport=8080, dport=out[TCP].sport, flags="SA",
                                          seq=500, ack=101))), Side.OUTSIDE, 0.1)
    back = IPv6(answer_[0])
    assert (back.src, back.dst, back[TCP].dport) == (S6, C6, 40000) and checksum_ok(answer_[0])
    _engine_frames(mb, v6(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=8080, flags="A",
                                                     seq=101, ack=501)), Side.INSIDE, 0.2)
    # the same 350 s rule as for IPv4; the late answer from the IPv4 server gets an IPv4 RST
    assert not mb.expire(349.0)
    mb.expire(351.0)
    late = _engine_frames(mb, bytearray(bytes(
        IP(src=SERVER4, dst=PUBLIC) / TCP(sport=8080, dport=out[TCP].sport, flags="PA",
                                          seq=501, ack=101) / b"answer")), Side.OUTSIDE, 400)
    assert IP(late[0])[TCP].flags == "R" and IP(late[0]).dst == SERVER4
    # and the client's late packet an IPv6 one
    late6 = _engine_frames(mb, v6(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=8080,
                                                               flags="PA", seq=101, ack=501)
                                  / b"more"), Side.INSIDE, 401)
    assert IPv6(late6[0])[TCP].flags == "R" and IPv6(late6[0]).dst == C6
    assert mb.counters["IdleTimeoutCount"] == 1 and mb.counters["RstSent"] == 2


def test_a_dual_stack_load_balancer_translates_ipv6_clients_to_its_ipv4_target() -> None:
    nlb = get_appliance("nlb-dualstack").with_overrides({"backend_ips": [SERVER4]})
    mb = Middlebox(nlb)
    front = nlb.vip6
    (out,) = _engine_frames(mb, v6(IPv6(src=C6, dst=front) / TCP(sport=40000, dport=8080,
                                                                   flags="S", seq=1)),
                            Side.INSIDE, 0.0)
    # "the target sees the load balancer address": translated, its source the NLB's own
    ip = IP(out)
    assert (ip.src, ip.dst, ip[TCP].dport) == (PUBLIC, SERVER4, 8080) and checksum_ok(out)
    (back,) = _engine_frames(mb, bytearray(bytes(IP(src=SERVER4, dst=PUBLIC) / TCP(
        sport=8080, dport=ip[TCP].sport, flags="SA", seq=9, ack=2))), Side.OUTSIDE, 0.1)
    got = IPv6(back)
    assert (got.src, got.dst, got[TCP].sport, got[TCP].dport) == (front, C6, 8080, 40000)
    assert checksum_ok(back)
    # an IPv4 client keeps its own address (client IP preservation), as on the plain NLB
    (kept,) = _engine_frames(mb, bytearray(bytes(IP(src="198.18.1.10", dst=SERVER4) / TCP(
        sport=1, dport=8080, flags="S"))), Side.INSIDE, 0.2)
    assert IP(kept).src == "198.18.1.10"


def test_an_icmp_error_about_a_nat64_flow_is_dropped_not_mangled() -> None:
    mb = Middlebox(get_appliance("nat-gw"))
    (syn,) = _engine_frames(mb, v6(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=8080,
                                                                 flags="S")), Side.INSIDE, 0)
    error = bytearray(bytes(IP(src=SERVER4, dst=PUBLIC) / ICMP(type=3, code=3)
                            / IP(syn)[IP]))[:20 + 8 + 28]
    error[2:4] = len(error).to_bytes(2, "big")
    assert mb.on_packet(error, Side.OUTSIDE, 0.1) == []
    assert mb.counters["UnsupportedPackets"] == 1 and not mb.counters["IcmpErrorsTranslated"]


def test_the_nat_gateway_refuses_ipv6_it_cannot_translate() -> None:
    mb = Middlebox(get_appliance("nat-gw"))
    out = mb.on_packet(v6(IPv6(src=C6, dst=SERVER6) / TCP(sport=1, dport=2, flags="S")),
                       Side.INSIDE, 0.0)
    assert out == [] and mb.counters["UnsupportedPackets"] == 1
    assert "does not translate IPv6 to IPv6" in mb.take_events()[-1].text


def test_a_transparent_appliance_tracks_ipv6_flows_as_they_are() -> None:
    mb = Middlebox(get_appliance("ec2-sg-conntrack"))
    raw = v6(IPv6(src=C6, dst=SERVER6) / TCP(sport=40000, dport=8080, flags="S"))
    before = bytes(raw)
    out = _engine_frames(mb, raw, Side.INSIDE, 0.0)
    assert out == [before] and mb.counters["ConnectionAttemptCount"] == 1


def test_the_fast_path_leaves_ipv6_flows_to_the_engine() -> None:
    from simulator.dataplane import fastpath  # noqa: PLC0415

    if not fastpath.available():
        pytest.fail("the fast path is not built: make setup builds it")
    mb = Middlebox(get_appliance("nat-gw"))
    forwarder = fastpath.FastForwarder.__new__(fastpath.FastForwarder)
    forwarder.table = mb.flows
    mb.on_packet(v6(IPv6(src=C6, dst=S6) / TCP(sport=1, dport=2, flags="S")), Side.INSIDE, 0)
    flow = next(iter(mb.flows.by_inside.values()))
    flow.dirs[0] = flow.dirs[1] = 10_000  # as hot as any
    assert not forwarder._eligible(flow)


def test_a_neighbour_solicitation_is_answered_with_the_ports_mac() -> None:
    ns = bytes(Ether(src="02:00:00:00:00:0a", dst="33:33:ff:00:00:01")
               / IPv6(src=C6, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt="2001:db8:1::1"))
    advert = neighbour_advertisement(ns, MAC_B)
    assert advert is not None
    got = Ether(advert)
    assert (got.dst, got.src, got[IPv6].src, got[IPv6].dst) == (
        "02:00:00:00:00:0a", "02:00:00:00:00:02", "2001:db8:1::1", C6)
    na = got[ICMPv6ND_NA]
    assert (na.tgt, na.R, na.S, na.O) == ("2001:db8:1::1", 1, 1, 1)
    checked = got[ICMPv6ND_NA].cksum
    del got[ICMPv6ND_NA].cksum
    assert Ether(bytes(got))[ICMPv6ND_NA].cksum == checked
    dad = bytes(Ether(src="02:00:00:00:00:0a", dst="33:33:ff:00:00:01")
                / IPv6(src="::", dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=C6))
    assert neighbour_advertisement(dad, MAC_B) is None  # never claim a host's own address


def test_the_dataplane_answers_neighbours_and_frames_ipv6_as_ipv6() -> None:
    harness = Harness()
    try:
        vnet = VNET.pack(0, 0, 0, 0, 0, 0)
        ns = bytes(Ether(src="02:00:00:00:00:01", dst="33:33:ff:00:00:01")
                   / IPv6(src=C6, dst="ff02::1:ff00:1", hlim=255)
                   / ICMPv6ND_NS(tgt="2001:db8:1::1"))
        harness.feed(Side.INSIDE, vnet + ns)
        replies = harness.sent(Side.INSIDE)
        assert len(replies) == 1 and Ether(replies[0][10:]).haslayer(ICMPv6ND_NA)
        mld = bytes(Ether(src="02:00:00:00:00:01", dst="33:33:00:00:00:16")
                    / IPv6(src=C6, dst="ff02::16") / UDP(sport=1, dport=2))
        harness.feed(Side.INSIDE, vnet + mld)  # link multicast: not the path's
        assert harness.sent(Side.OUTSIDE) == [] and not harness.plane.engine.counters.get(
            "UnsupportedPackets")
        syn = bytes(IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=8080, flags="S"))
        harness.feed(Side.INSIDE, vnet + MAC_A + MAC_B + ETH_P_IPV6 + syn)
        (frame,) = harness.sent(Side.OUTSIDE)
        assert frame[10 + 12:10 + 14] == b"\x08\x00"  # translated: an IPv4 frame
        assert IP(frame[10 + 14:]).dst == SERVER4
        harness.feed(Side.OUTSIDE, vnet + MAC_A + MAC_B + b"\x08\x00" + bytes(
            IP(src=SERVER4, dst=PUBLIC) / TCP(sport=8080, dport=IP(frame[24:])[TCP].sport,
                                              flags="SA", ack=1)))
        (back,) = harness.sent(Side.INSIDE)
        assert back[10 + 12:10 + 14] == ETH_P_IPV6 and IPv6(back[24:]).dst == C6
    finally:
        harness.close()


def test_dns64_synthesizes_an_aaaa_record_in_the_well_known_prefix() -> None:
    query = (struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x03api\x08internal\x00"
             + struct.pack("!HH", 28, 1))
    reply, what = answer(query, {"api.internal": SERVER4}, dns64=True) or (b"", "")
    assert reply[-16:] == P.ip_from_str(S6) and S6 in what
    plain, said = answer(query, {"api.internal": SERVER4}) or (b"", "")
    assert struct.unpack("!H", plain[6:8])[0] == 0 and "no record of type 28" in said


def test_the_nat64_world_is_an_ipv6_only_client_and_an_ipv4_server() -> None:
    plan = world_plan("r", {}, ip="nat64")
    client, (server,) = plan.client, plan.servers
    assert client.addresses == ("2001:db8:1::10",) and client.routes == (NAT64_NET,)
    assert client.nameserver == S6 and not client.offloads and not server.offloads
    assert server.addresses == (SERVER4,) and (S6, "server") in server.hosts
    both = world_plan("r", {}, ip="6")
    assert both.servers[0].addresses == (SERVER6,) and both.client.nameserver is None
    assert all(":" not in a for h in world_plan("r", {}).hosts for a in h.addresses)
    lb = world_plan("r", {}, ip="dualstack", vip="2001:db8:2::100")
    assert lb.servers[0].addresses == (SERVER4,) and ("2001:db8:2::100", "server") in \
        lb.client.hosts and lb.client.nameserver is None


@pytest.mark.parametrize("extra,field,message", [
    ({"ip": "6"}, "ip", "NAT66"),
    ({"ip": "5"}, "ip", "must be one of"),
    ({"ip": "nat64", "appliance": "nlb"}, "ip", "nlb does not"),
    ({"ip": "nat64", "protocol": "udp"}, "ip", "not with UDP"),
    ({"ip": "dualstack"}, "ip", "nat-gw has no IPv6 address"),
    ({"ip": "dualstack", "appliance": {"name": "nlb-dualstack", "vip6": "2001:db8:1::5"}},
     "appliance.vip6", "2001:db8:2::/64"),
])
def test_the_ip_field_is_refused_where_natsim_cannot_run_it(
        extra: dict[str, str], field: str, message: str, tmp_path: Path) -> None:
    doc: dict[str, object] = {"appliance": "nat-gw", "client": {"timeout": 900},
                              "server": {"delay": 400},
                              "expect": {"client": "timeout", "server": "reset"}, **extra}
    if extra.get("protocol") == "udp":
        doc["expect"] = {"client": "timeout", "server": "answered"}
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(doc, "x.yaml", "x")
    assert caught.value.field == field and message in str(caught.value)
