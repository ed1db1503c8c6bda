from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    assert P.parse(b"\x60" + bytes(39)) is None  # IPv6 with no payload
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


# -- the incremental checksum arithmetic against RFC 1624's word loop --------------------------

EDGE_WORDS = st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]) | st.integers(0, 0xFFFF)


def _rfc1624(checksum: int, old: bytes, new: bytes) -> int:
    """HC' = ~(~HC + ~m + m'), word by word with end-around carry, as the RFC writes it."""
    total = ~checksum & 0xFFFF
    for i in range(0, len(old), 2):
        total += (~int.from_bytes(old[i:i + 2], "big") & 0xFFFF) \
            + int.from_bytes(new[i:i + 2], "big")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _words(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


@settings(max_examples=3000, deadline=None)
@given(checksum=EDGE_WORDS, pairs=st.lists(st.tuples(EDGE_WORDS, EDGE_WORDS), min_size=1,
                                           max_size=3))
def test_checksum_replace_is_the_rfc_1624_update(checksum: int,
                                                 pairs: list[tuple[int, int]]) -> None:
    old, new = _words([p[0] for p in pairs]), _words([p[1] for p in pairs])
    assert P.checksum_replace(checksum, old, new) == _rfc1624(checksum, old, new)


def test_checksum_replace_when_every_term_is_zero() -> None:
    # ~HC = 0 and every ~m + m' = 0: the sum is zero, which a remainder cannot tell from
    # 0xFFFF; the RFC's loop gives 0xFFFF
    assert P.checksum_replace(0xFFFF, b"\xff\xff", b"\x00\x00") == 0xFFFF
    assert _rfc1624(0xFFFF, b"\xff\xff", b"\x00\x00") == 0xFFFF
    assert P.checksum_replace(0, b"\x00\x00", b"\xff\xff") == 0  # the sum is 0xFFFF


@settings(max_examples=1500, deadline=None)
@given(proto=st.sampled_from([P.IPPROTO_TCP, P.IPPROTO_UDP]), ip_csum=EDGE_WORDS,
       l4_csum=EDGE_WORDS, addrs=st.lists(EDGE_WORDS, min_size=4, max_size=4),
       ports=st.lists(EDGE_WORDS, min_size=2, max_size=2),
       new=st.lists(EDGE_WORDS, min_size=3, max_size=3), source=st.booleans())
def test_the_fused_nat_rewrite_is_two_rfc_1624_updates(
        proto: int, ip_csum: int, l4_csum: int, addrs: list[int], ports: list[int],
        new: list[int], source: bool) -> None:
    """``_rewrite`` inlines the arithmetic (the per-packet path); it must give, byte for
    byte, what the field-by-field update gives, down to UDP's zero checksum."""
    l4_len = 20 if proto == P.IPPROTO_TCP else 8
    csum_at = 20 + (16 if proto == P.IPPROTO_TCP else 6)
    raw = bytearray(20 + l4_len)
    raw[0], raw[2:4], raw[9] = 0x45, (20 + l4_len).to_bytes(2, "big"), proto
    raw[10:12], raw[12:20] = ip_csum.to_bytes(2, "big"), _words(addrs)
    raw[20:24] = _words(ports)
    if proto == P.IPPROTO_TCP:
        raw[32] = 0x50
    raw[csum_at:csum_at + 2] = l4_csum.to_bytes(2, "big")
    addr_at, port_at = (12, 20) if source else (16, 22)
    new_ip, new_port = _words(new[:2]), new[2]
    expected = bytearray(raw)
    old_ip, old_port = bytes(raw[addr_at:addr_at + 4]), bytes(raw[port_at:port_at + 2])
    expected[addr_at:addr_at + 4], expected[port_at:port_at + 2] = new_ip, _words([new_port])
    expected[10:12] = _rfc1624(ip_csum, old_ip, new_ip).to_bytes(2, "big")
    if not (proto == P.IPPROTO_UDP and l4_csum == 0):
        updated = _rfc1624(l4_csum, old_ip + old_port, new_ip + _words([new_port]))
        if proto == P.IPPROTO_UDP and updated == 0:
            updated = 0xFFFF
        expected[csum_at:csum_at + 2] = updated.to_bytes(2, "big")
    pkt = P.parse(raw)
    assert pkt is not None
    (P.rewrite_source if source else P.rewrite_destination)(raw, pkt, new_ip, new_port)
    assert raw == expected
