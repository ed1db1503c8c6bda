from __future__ import annotations

import random

import pytest
from scapy.layers.inet import IP, TCP, UDP

from simulator.core import packets as P  # noqa: N812 (short, like scapy layers)
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, checksums_valid, parsed, tcp, udp


def test_parse_tcp_fields() -> None:
    raw = tcp(CLIENT, 40000, SERVER, 8080, "PA", seq=1000, ack=2000, payload=b"GET /\n")
    pkt = P.parse(raw)
    assert pkt is not None
    assert (pkt.proto, P.ip_to_str(pkt.src), pkt.sport, P.ip_to_str(pkt.dst), pkt.dport) == (
        P.IPPROTO_TCP, CLIENT, 40000, SERVER, 8080)
    assert (pkt.seq, pkt.ack, pkt.payload_len) == (1000, 2000, 6)
    assert pkt.flags == P.PSH | P.ACK
    assert pkt.seg_len == 6


def test_parse_counts_syn_and_fin_in_sequence_space() -> None:
    syn = P.parse(tcp(CLIENT, 1, SERVER, 2, "S", seq=5))
    fin = P.parse(tcp(CLIENT, 1, SERVER, 2, "FA", seq=5, payload=b"xy"))
    assert syn is not None and fin is not None
    assert syn.seg_len == 1
    assert fin.seg_len == 3


def test_parse_rejects_what_is_not_modelled() -> None:
    assert P.parse(b"\x60" + bytes(39)) is None  # IPv6
    assert P.parse(tcp(CLIENT, 1, SERVER, 2, "S")[:30]) is None  # truncated
    frag = bytes(IP(src=CLIENT, dst=SERVER, flags="MF") / UDP(sport=1, dport=2))
    assert P.parse(frag) is None


def test_checksum_matches_scapy() -> None:
    rng = random.Random(1)
    for _ in range(50):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        raw = bytes(IP(src=CLIENT, dst=SERVER) / UDP(sport=1, dport=2) / payload)
        assert checksums_valid(raw)
        assert P.internet_checksum(raw[:20]) == 0


@pytest.mark.parametrize("flags,payload", [("S", b""), ("A", b""), ("PA", b"x" * 101)])
def test_source_rewrite_keeps_checksums_valid(flags: str, payload: bytes) -> None:
    raw = tcp(CLIENT, 40000, SERVER, 8080, flags, seq=7, ack=9, payload=payload)
    pkt = P.parse(raw)
    assert pkt is not None
    P.rewrite_source(raw, pkt, P.ip_from_str(PUBLIC), 1024)
    assert checksums_valid(raw)
    ip = parsed(raw)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (PUBLIC, 1024, SERVER, 8080)
    # scapy agrees: rebuilding with checksums deleted gives the same bytes
    ip_fresh = parsed(raw)
    del ip_fresh.chksum
    del ip_fresh[TCP].chksum
    assert bytes(ip_fresh) == bytes(raw)


def test_destination_rewrite_keeps_udp_checksum_valid() -> None:
    raw = udp(SERVER, 53, PUBLIC, 1024, b"answer")
    pkt = P.parse(raw)
    assert pkt is not None
    P.rewrite_destination(raw, pkt, P.ip_from_str(CLIENT), 40000)
    assert checksums_valid(raw)
    assert (parsed(raw).dst, parsed(raw)[UDP].dport) == (CLIENT, 40000)


def test_udp_without_checksum_stays_without() -> None:
    raw = udp(CLIENT, 1, SERVER, 2)
    raw[26:28] = b"\x00\x00"
    pkt = P.parse(raw)
    assert pkt is not None
    P.rewrite_source(raw, pkt, P.ip_from_str(PUBLIC), 1024)
    assert raw[26:28] == b"\x00\x00"
    assert P.internet_checksum(raw[:20]) == 0


def test_rst_reply_to_an_ack_takes_its_sequence_from_the_ack() -> None:
    late = P.parse(tcp(SERVER, 8080, PUBLIC, 1024, "PA", seq=500, ack=123456, payload=b"hi"))
    assert late is not None
    rst = P.build_rst_reply(late)
    assert checksums_valid(rst)
    ip = parsed(rst)
    assert (ip.src, ip[TCP].sport, ip.dst, ip[TCP].dport) == (PUBLIC, 1024, SERVER, 8080)
    assert ip[TCP].flags == "R"
    assert ip[TCP].seq == 123456


def test_rst_reply_to_a_syn_acknowledges_it() -> None:
    syn = P.parse(tcp(CLIENT, 40000, SERVER, 8080, "S", seq=4294967295))
    assert syn is not None
    ip = parsed(P.build_rst_reply(syn))
    assert ip[TCP].flags == "RA"
    assert (ip[TCP].seq, ip[TCP].ack) == (0, 0)  # wraps around


def test_ip_from_str_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        P.ip_from_str("198.18.1")
    with pytest.raises(ValueError):
        P.ip_from_str("198.18.1.256")
