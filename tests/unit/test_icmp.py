"""ICMP through the engine: echo translated by identifier, errors translated back, and an
appliance without ICMP dropping it (checked against scapy's reading of the packets)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.packet import Raw

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.packets import internet_checksum
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, udp


def echo(src: str, dst: str, kind: int, ident: int, seq: int = 1) -> bytearray:
    return bytearray(bytes(IP(src=src, dst=dst) / ICMP(type=kind, id=ident, seq=seq)
                           / Raw(b"ping")))


def test_ping_is_translated_by_identifier_both_ways() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    (out,) = box.on_packet(echo(CLIENT, SERVER, 8, 4242), Side.INSIDE, 0.0)
    sent = IP(bytes(out.packet))
    assert (sent.src, sent.dst) == (PUBLIC, SERVER) and out.side is Side.OUTSIDE
    public_id = sent[ICMP].id
    (back,) = box.on_packet(echo(SERVER, PUBLIC, 0, public_id), Side.OUTSIDE, 0.1)
    reply = IP(bytes(back.packet))
    assert (reply.src, reply.dst, reply[ICMP].id) == (SERVER, CLIENT, 4242)
    assert _icmp_checksum_ok(back.packet) and _icmp_checksum_ok(out.packet)
    assert _ip_checksum_ok(back.packet) and _ip_checksum_ok(out.packet)
    # an echo is a flow: it expires like a datagram's
    box.expire(0.1 + box.appliance.udp_idle_timeout)
    assert len(box.flows) == 0


def test_an_icmp_error_about_a_translated_flow_goes_back_translated() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    (out,) = box.on_packet(udp(CLIENT, 5000, SERVER, 9), Side.INSIDE, 0.0)
    natted = IP(bytes(out.packet))
    # the server's kernel: port 9 is closed
    error = bytearray(bytes(IP(src=SERVER, dst=PUBLIC) / ICMP(type=3, code=3)
                            / bytes(natted)[:28]))
    (back,) = box.on_packet(error, Side.OUTSIDE, 0.1)
    got = IP(bytes(back.packet))
    assert back.side is Side.INSIDE and (got.src, got.dst) == (SERVER, CLIENT)
    quoted = got[IPerror]
    assert (quoted.src, quoted.dst, quoted[UDPerror].sport) == (CLIENT, SERVER, 5000)
    assert _icmp_checksum_ok(back.packet) and _ip_checksum_ok(back.packet)
    quote = bytes(back.packet[28:48])  # the quoted IP header, its checksum made right
    assert internet_checksum(quote) == 0
    assert box.counters["IcmpErrorsTranslated"] == 1


def test_an_error_about_no_flow_of_ours_is_dropped() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    stray = bytearray(bytes(IP(src=SERVER, dst=PUBLIC) / ICMP(type=3, code=3)
                            / bytes(IP(src=PUBLIC, dst=SERVER) / UDP(sport=1, dport=9))[:28]))
    assert box.on_packet(stray, Side.OUTSIDE, 0.0) == []


def test_azure_nat_gateway_carries_no_icmp() -> None:
    box = Middlebox(get_appliance("azure-nat-gw"))
    assert box.on_packet(echo(CLIENT, SERVER, 8, 1), Side.INSIDE, 0.0) == []
    assert box.counters["IcmpDropped"] == 1 and len(box.flows) == 0


def _icmp_checksum_ok(packet: bytearray) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    return internet_checksum(bytes(packet[ihl:])) == 0


def _ip_checksum_ok(packet: bytearray) -> bool:
    return internet_checksum(bytes(packet[:(packet[0] & 0x0F) * 4])) == 0
