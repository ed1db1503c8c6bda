"""Synthetic packets for engine tests, built with scapy (fine in tests, never in the core)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from simulator.core.packets import internet_checksum

CLIENT = "198.18.1.10"
SERVER = "198.19.1.10"
PUBLIC = "203.0.113.1"


def tcp(src: str, sport: int, dst: str, dport: int, flags: str, seq: int = 0, ack: int = 0,
        payload: bytes = b"") -> bytearray:
    pkt = IP(src=src, dst=dst, id=7) / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                           ack=ack, window=64240)
    if payload:
        pkt = pkt / Raw(payload)
    return bytearray(bytes(pkt))


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"hello") -> bytearray:
    return bytearray(bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(payload)))


def checksums_valid(packet: bytes | bytearray) -> bool:
    """Recompute both checksums from scratch: a valid packet sums to zero."""
    ihl = (packet[0] & 0x0F) * 4
    if internet_checksum(packet[:ihl]) != 0:
        return False
    proto = packet[9]
    total = int.from_bytes(packet[2:4], "big")
    segment = bytes(packet[ihl:total])
    if proto == 17 and segment[6:8] == b"\x00\x00":
        return True
    pseudo = bytes(packet[12:20]) + bytes([0, proto]) + len(segment).to_bytes(2, "big")
    return internet_checksum(pseudo + segment) == 0


def parsed(packet: bytes | bytearray) -> IP:
    return IP(bytes(packet))
