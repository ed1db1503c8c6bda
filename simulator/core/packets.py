"""IPv4 and IPv6 TCP/UDP parsing, NAT rewriting, NAT64 and RST building, with struct only.

Theory of operation
-------------------
The dataplane hands the engine one IP packet at a time as a ``bytearray`` (the Ethernet
header already removed). :func:`parse` reads only the fields the appliance rules need into a
small :class:`Packet` record and returns ``None`` for anything it does not model (fragments,
truncated headers, an IPv6 extension-header chain longer than :data:`MAX_EXTENSIONS`): the
engine drops those and counts them. An IPv6 packet's addresses are 16 bytes, an IPv4 one's
4: the flow table keys on them as they are, so both families share every rule.

NAT64 (RFC 7915, :func:`to_ipv4` and :func:`to_ipv6`) rebuilds the IP header and moves the
transport checksum by the pseudo-header's change alone: the two pseudo-headers sum the same
length and protocol, so only the addresses differ.

NAT rewrites an address and a port in place. The IP header checksum and the TCP/UDP checksum
(whose pseudo-header covers the addresses) are updated incrementally (RFC 1624, eqn. 3), so a
rewrite costs the same for a 40-byte ACK and a 1500-byte segment. RSTs are built from scratch
with full checksums.

scapy is deliberately absent here: it is two orders of magnitude too slow for the per-packet
path. The tests cross-check these functions against scapy.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58

IPV6_HEADER = 40
MAX_EXTENSIONS = 8
"""Extension headers walked before a packet is given up as unsupported (RFC 8200 sets no
limit; a middlebox must, or a chain of thousands costs a loop each)."""
_EXTENSIONS = frozenset((0, 43, 60))
"""Hop-by-hop, routing and destination options: skipped, ``(len + 1) * 8`` bytes each. A
fragment header (44) ends the walk: fragments are not modelled, in either family (the
engine counts them under ``UnsupportedPackets``), and AH/ESP are not transport we know."""
NAT64_PREFIX = bytes.fromhex("0064ff9b") + bytes(8)
"""The well-known prefix 64:ff9b::/96 (RFC 6052): an IPv4 address in its last 4 bytes."""

ICMP_ECHO_REPLY, ICMP_UNREACHABLE, ICMP_ECHO_REQUEST, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
ICMP_ERRORS = (ICMP_UNREACHABLE, ICMP_TIME_EXCEEDED)

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_TCP_SEQ_ACK_OFF_FLAGS = struct.Struct("!IIBB")
_U16 = struct.Struct("!H")
_IPV6_HDR = struct.Struct("!IHBB16s16s")

_TCP_CSUM_OFFSET = 16
_UDP_CSUM_OFFSET = 6


@dataclass(slots=True)
class Packet:
    """The fields of one IPv4 TCP/UDP/ICMP packet that the appliance rules look at.

    ``l4`` is the offset of the transport header inside the packet; ``payload_len`` is the
    number of bytes after the transport header (zero for a bare ACK or a keepalive probe).
    For UDP and ICMP, ``flags``, ``seq`` and ``ack`` are zero; for ICMP the ports are zero.
    """

    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    l4: int
    total_len: int
    payload_len: int
    flags: int = 0
    seq: int = 0
    ack: int = 0

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload plus one for SYN and for FIN."""
        return self.payload_len + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


def parse(packet: bytes | bytearray | memoryview) -> Packet | None:
    """Parse an IPv4 or IPv6 packet, or return None for anything the engine does not model."""
    if len(packet) < 20:
        return None
    if packet[0] >> 4 == 6:
        return _parse_ipv6(packet)
    ver_ihl, _tos, total_len, _ident, frag, _ttl, proto, _csum, src, dst = _IPV4_HDR.unpack_from(
        packet, 0
    )
    if ver_ihl >> 4 != 4:
        return None
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < 20 or total_len < ihl or len(packet) < total_len:
        return None
    if frag & 0x3FFF:  # MF set or a non-zero offset: fragments are not modelled
        return None
    if proto == IPPROTO_TCP:
        if total_len < ihl + 20:
            return None
        sport, dport = _PORTS.unpack_from(packet, ihl)
        seq, ack, off, flags = _TCP_SEQ_ACK_OFF_FLAGS.unpack_from(packet, ihl + 4)
        doff = (off >> 4) * 4
        if doff < 20 or total_len < ihl + doff:
            return None
        return Packet(
            proto, src, dst, sport, dport, ihl, total_len, total_len - ihl - doff, flags, seq, ack
        )
    if proto == IPPROTO_UDP:
        if total_len < ihl + 8:
            return None
        sport, dport = _PORTS.unpack_from(packet, ihl)
        return Packet(proto, src, dst, sport, dport, ihl, total_len, total_len - ihl - 8)
    if proto == IPPROTO_ICMP:
        # An echo is tracked like a datagram, its identifier standing for the client's port
        # (the request's source, the reply's destination: RFC 5508); other messages have no
        # ports. ``flags`` holds the ICMP type.
        icmp_type = packet[ihl] if total_len > ihl else 255
        ident = _U16.unpack_from(packet, ihl + 4)[0] if total_len >= ihl + 8 else 0
        sport = ident if icmp_type == ICMP_ECHO_REQUEST else 0
        dport = ident if icmp_type == ICMP_ECHO_REPLY else 0
        return Packet(proto, src, dst, sport, dport, ihl, total_len, total_len - ihl,
                      icmp_type)
    return None


def _parse_ipv6(packet: bytes | bytearray | memoryview) -> Packet | None:
    """An IPv6 packet: its extension headers walked (at most MAX_EXTENSIONS) to TCP or UDP.

    ICMPv6 is not tracked (neighbour discovery never reaches the engine: the dataplane
    answers it) and returns None like any protocol the appliances do not model.
    """
    if len(packet) < IPV6_HEADER:
        return None
    _vtf, payload_len, nxt, _hops, src, dst = _IPV6_HDR.unpack_from(packet, 0)
    total_len = IPV6_HEADER + payload_len
    if payload_len == 0 or len(packet) < total_len:
        return None  # zero is a jumbogram's length (RFC 2675): not on an Ethernet path
    at = IPV6_HEADER
    for _ in range(MAX_EXTENSIONS):
        if nxt not in _EXTENSIONS:
            break
        if at + 8 > total_len:
            return None
        nxt, at = packet[at], at + (packet[at + 1] + 1) * 8
    else:
        return None
    if nxt == IPPROTO_TCP and at + 20 <= total_len:
        sport, dport = _PORTS.unpack_from(packet, at)
        seq, ack, off, flags = _TCP_SEQ_ACK_OFF_FLAGS.unpack_from(packet, at + 4)
        doff = (off >> 4) * 4
        if doff < 20 or total_len < at + doff:
            return None
        return Packet(nxt, bytes(src), bytes(dst), sport, dport, at, total_len,
                      total_len - at - doff, flags, seq, ack)
    if nxt == IPPROTO_UDP and at + 8 <= total_len:
        sport, dport = _PORTS.unpack_from(packet, at)
        return Packet(nxt, bytes(src), bytes(dst), sport, dport, at, total_len,
                      total_len - at - 8)
    return None


def ones_complement_sum(data: bytes | bytearray | memoryview) -> int:
    """The 16-bit ones' complement sum of ``data`` (RFC 1071), padded to an even length.

    Uses the identity 2**16 = 1 (mod 0xFFFF): the sum of the words is the big integer modulo
    0xFFFF, which is one C-level operation instead of a Python loop over words.
    """
    raw = bytes(data)
    if len(raw) % 2:
        raw += b"\x00"
    value = int.from_bytes(raw, "big")
    folded = value % 0xFFFF
    if folded == 0 and value != 0:
        return 0xFFFF
    return folded


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum of ``data``: the complement of its ones' complement sum."""
    return ~ones_complement_sum(data) & 0xFFFF


def _fold(value: int) -> int:
    while value >> 16:
        value = (value & 0xFFFF) + (value >> 16)
    return value


def checksum_replace(checksum: int, old: bytes | bytearray, new: bytes | bytearray) -> int:
    """Update ``checksum`` after the even-length field ``old`` became ``new`` (RFC 1624)."""
    return _replaced(checksum, int.from_bytes(old, "big"), int.from_bytes(new, "big"),
                     (1 << 8 * len(old)) - 1)


def _replaced(checksum: int, old: int, new: int, all_ones: int) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for a field read as one integer.

    In the arithmetic of :func:`ones_complement_sum` (modulo 0xFFFF a complement is a
    negation and a string of words is its big integer) the update is three integer
    operations instead of a loop over words: the per-packet NAT rewrite spent most of its
    time in that loop. The sum inside is zero only when every term is (``~HC``, and each
    word's ``~m + m'``: ``old`` all ones, ``all_ones`` for its width, and ``new`` zero),
    which a remainder cannot tell from 0xFFFF: that case is checked apart.
    """
    folded = ((~checksum & 0xFFFF) + new - old) % 0xFFFF
    if not folded and not (checksum == 0xFFFF and old == all_ones and not new):
        folded = 0xFFFF  # the sum was 0xFFFF, not zero
    return ~folded & 0xFFFF


_ADDRESS_ONES = (1 << 32) - 1
_ADDRESS_PORT_ONES = {4: (1 << 48) - 1, 16: (1 << 144) - 1}


def _rewrite(packet: bytearray, pkt: Packet, source: bool, new_ip: bytes,
             new_port: int) -> None:
    """One address and its port replaced, both checksums updated: the per-packet NAT.

    The fields are read as integers once and :func:`_replaced` applied to them (the hot path
    of every forwarded packet: ``make bench``): the IPv4 header checksum moves by the
    address alone (IPv6 has none), the TCP/UDP one (whose pseudo-header covers the
    addresses) by address and port.
    """
    width = len(pkt.src)
    addr_offset = (12 if source else 16) if width == 4 else (8 if source else 24)
    port_offset = 0 if source else 2
    old_addr = int.from_bytes(packet[addr_offset:addr_offset + width], "big")
    new_addr = int.from_bytes(new_ip, "big")
    packet[addr_offset:addr_offset + width] = new_ip
    if width == 4:
        (ip_csum,) = _U16.unpack_from(packet, 10)
        _U16.pack_into(packet, 10, _replaced(ip_csum, old_addr, new_addr, _ADDRESS_ONES))
    proto = pkt.proto
    if proto == IPPROTO_TCP:
        csum_at = pkt.l4 + _TCP_CSUM_OFFSET
    elif proto == IPPROTO_UDP:
        csum_at = pkt.l4 + _UDP_CSUM_OFFSET
    else:
        if proto == IPPROTO_ICMP:
            _rewrite_icmp_ident(packet, pkt, port_offset, new_port)
        return
    port_at = pkt.l4 + port_offset
    old_port = packet[port_at] << 8 | packet[port_at + 1]
    packet[port_at] = new_port >> 8
    packet[port_at + 1] = new_port & 0xFF
    (l4_csum,) = _U16.unpack_from(packet, csum_at)
    if proto == IPPROTO_UDP and l4_csum == 0:
        return  # UDP without a checksum stays without one
    updated = _replaced(l4_csum, old_addr << 16 | old_port, new_addr << 16 | new_port,
                        _ADDRESS_PORT_ONES[width])
    if proto == IPPROTO_UDP and updated == 0:
        updated = 0xFFFF  # zero means "no checksum" for UDP (RFC 768)
    _U16.pack_into(packet, csum_at, updated)


def _rewrite_icmp_ident(packet: bytearray, pkt: Packet, port_offset: int,
                        new_port: int) -> None:
    """The echo identifier is the request's source "port" and the reply's destination one;
    the ICMP checksum has no pseudo-header, so only the identifier moves it."""
    is_source = port_offset == 0
    if not ((is_source and pkt.flags == ICMP_ECHO_REQUEST)
            or (not is_source and pkt.flags == ICMP_ECHO_REPLY)) or pkt.total_len < pkt.l4 + 8:
        return
    at = pkt.l4 + 4
    old = bytes(packet[at:at + 2])
    new = _U16.pack(new_port)
    packet[at:at + 2] = new
    (csum,) = _U16.unpack_from(packet, pkt.l4 + 2)
    _U16.pack_into(packet, pkt.l4 + 2, checksum_replace(csum, old, new))


def icmp_error_inner(packet: bytes | bytearray, pkt: Packet) -> Packet | None:
    """The packet an ICMP error quotes (its IP header and first 8 bytes), parsed leniently:
    a quote is truncated by design, so only its header fields are read."""
    if pkt.proto != IPPROTO_ICMP or pkt.flags not in ICMP_ERRORS:
        return None
    at = pkt.l4 + 8
    if pkt.total_len < at + 28:
        return None
    ver_ihl, proto = packet[at], packet[at + 9]
    ihl = (ver_ihl & 0x0F) * 4
    if ver_ihl >> 4 != 4 or ihl < 20 or pkt.total_len < at + ihl + 8:
        return None
    src, dst = bytes(packet[at + 12:at + 16]), bytes(packet[at + 16:at + 20])
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        sport, dport = _PORTS.unpack_from(packet, at + ihl)
    elif proto == IPPROTO_ICMP and packet[at + ihl] == ICMP_ECHO_REQUEST:
        sport, dport = _U16.unpack_from(packet, at + ihl + 4)[0], 0
    else:
        return None
    return Packet(proto, src, dst, sport, dport, at + ihl, 0, 0)


def rewrite_icmp_error(packet: bytearray, pkt: Packet, inner: Packet, new_dst: bytes,
                       inner_src: bytes, inner_sport: int) -> None:
    """Translate an ICMP error back through a NAT: the outer destination, and the quoted
    packet's source (address and port, or echo identifier) become the inside host's; the
    quoted IP checksum and the ICMP checksum are made right again."""
    at = inner.l4 - (packet[pkt.l4 + 8] & 0x0F) * 4  # the quoted IP header
    old_ip = bytes(packet[at + 12:at + 16])
    packet[at + 12:at + 16] = inner_src
    (ip_csum,) = _U16.unpack_from(packet, at + 10)
    _U16.pack_into(packet, at + 10, checksum_replace(ip_csum, old_ip, inner_src))
    port_at = inner.l4 + (4 if inner.proto == IPPROTO_ICMP else 0)
    packet[port_at:port_at + 2] = _U16.pack(inner_sport)
    _U16.pack_into(packet, pkt.l4 + 2, 0)
    _U16.pack_into(packet, pkt.l4 + 2, internet_checksum(packet[pkt.l4:pkt.total_len]))
    rewrite_destination(packet, pkt, new_dst, 0)


def rewrite_source(packet: bytearray, pkt: Packet, new_ip: bytes, new_port: int) -> None:
    """Source NAT in place: the source address and port become ``new_ip:new_port``."""
    _rewrite(packet, pkt, True, new_ip, new_port)
    pkt.src, pkt.sport = new_ip, new_port


def rewrite_destination(packet: bytearray, pkt: Packet, new_ip: bytes, new_port: int) -> None:
    """Reverse NAT in place: the destination address and port become ``new_ip:new_port``."""
    _rewrite(packet, pkt, False, new_ip, new_port)
    pkt.dst, pkt.dport = new_ip, new_port


def build_tcp(src: bytes, sport: int, dst: bytes, dport: int, seq: int, ack: int,
              flags: int, window: int = 0, ttl: int = 64, payload: bytes = b"") -> bytearray:
    """A TCP segment with no options, checksums filled in: IPv4 (40 bytes plus
    ``payload``) for 4-byte addresses, IPv6 (60 bytes plus ``payload``) for 16-byte ones."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                5 << 4, flags, window, 0, 0)) + payload
    ip = ip_header(src, dst, IPPROTO_TCP, len(tcp), ttl)
    _U16.pack_into(tcp, _TCP_CSUM_OFFSET, internet_checksum(_pseudo(src, dst, IPPROTO_TCP,
                                                                    len(tcp)) + tcp))
    return ip + tcp


def ip_header(src: bytes, dst: bytes, proto: int, payload_len: int, ttl: int = 64,
              tos: int = 0, dont_fragment: bool = True) -> bytearray:
    """An IPv4 header (checksum filled in) or an IPv6 one, by the addresses' length."""
    if len(src) == 16:
        return bytearray(_IPV6_HDR.pack(6 << 28 | tos << 20, payload_len, proto, ttl, src, dst))
    ip = bytearray(_IPV4_HDR.pack(0x45, tos, 20 + payload_len, 0,
                                  0x4000 if dont_fragment else 0, ttl, proto, 0, src, dst))
    _U16.pack_into(ip, 10, internet_checksum(ip))
    return ip


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 16:
        return src + dst + struct.pack("!IxxxB", length, proto)
    return src + dst + struct.pack("!BBH", 0, proto, length)


def _translate(packet: bytearray, pkt: Packet, header: bytearray, src: bytes,
               dst: bytes) -> tuple[bytearray, Packet]:
    """The transport part of ``pkt`` behind ``header``, its checksum moved from the old
    pseudo-header's addresses to the new ones (RFC 7915 sections 4.5 and 5.5)."""
    l4 = bytearray(packet[pkt.l4:pkt.total_len])
    csum_at = _TCP_CSUM_OFFSET if pkt.proto == IPPROTO_TCP else _UDP_CSUM_OFFSET
    (csum,) = _U16.unpack_from(l4, csum_at)
    if pkt.proto == IPPROTO_UDP and csum == 0:
        # an IPv4 datagram without a checksum: IPv6 requires one, so it is computed
        csum = internet_checksum(_pseudo(src, dst, IPPROTO_UDP, len(l4)) + l4)
    else:
        csum = _replaced(csum, ones_complement_sum(pkt.src + pkt.dst),
                         ones_complement_sum(src + dst), 0xFFFF)
    if pkt.proto == IPPROTO_UDP and csum == 0:
        csum = 0xFFFF
    _U16.pack_into(l4, csum_at, csum)
    out = header + l4
    return out, Packet(pkt.proto, src, dst, pkt.sport, pkt.dport, len(header), len(out),
                       pkt.payload_len, pkt.flags, pkt.seq, pkt.ack)


def to_ipv4(packet: bytearray, pkt: Packet, src: bytes, dst: bytes) -> tuple[bytearray, Packet]:
    """NAT64, IPv6 to IPv4 (RFC 7915 section 5.1) of a TCP or UDP packet: a new packet.

    The traffic class becomes the TOS and the hop limit the TTL, unchanged (natsim's NAT
    does not count itself as a hop for IPv4 either); DF is set above 1,260 bytes as the RFC
    says, and extension headers are not carried over.
    """
    header = ip_header(src, dst, pkt.proto, pkt.total_len - pkt.l4, ttl=packet[7],
                       tos=(int.from_bytes(packet[0:2], "big") >> 4) & 0xFF,
                       dont_fragment=20 + pkt.total_len - pkt.l4 > 1260)
    return _translate(packet, pkt, header, src, dst)


def to_ipv6(packet: bytearray, pkt: Packet, src: bytes, dst: bytes) -> tuple[bytearray, Packet]:
    """NAT64, IPv4 to IPv6 (RFC 7915 section 4.1) of a TCP or UDP packet: a new packet;
    the TOS becomes the traffic class and the TTL the hop limit, IPv4 options are dropped."""
    header = ip_header(src, dst, pkt.proto, pkt.total_len - pkt.l4, ttl=packet[8],
                       tos=packet[1])
    return _translate(packet, pkt, header, src, dst)


def nat64_address(ipv4: bytes) -> bytes:
    """The IPv6 address standing for ``ipv4`` under the well-known prefix."""
    return NAT64_PREFIX + ipv4


def embedded_ipv4(ipv6: bytes) -> bytes | None:
    """The IPv4 address inside a 64:ff9b::/96 address, or None for any other address."""
    return ipv6[12:] if len(ipv6) == 16 and ipv6[:12] == NAT64_PREFIX else None


def build_rst_reply(pkt: Packet) -> bytearray:
    """The RST that answers ``pkt``, addressed back to its sender (RFC 9293, section 3.10.7.1).

    If the segment carried an ACK, the RST takes its sequence number from that ACK: that is
    exactly the sender's RCV.NXT, so a Linux receiver accepts it (RFC 5961 only challenges
    RSTs whose sequence number is in the window but not exact). Otherwise the RST has sequence
    zero and acknowledges the segment.
    """
    if pkt.flags & ACK:
        return build_tcp(pkt.dst, pkt.dport, pkt.src, pkt.sport, pkt.ack, 0, RST)
    return build_tcp(pkt.dst, pkt.dport, pkt.src, pkt.sport, 0,
                     (pkt.seq + pkt.seg_len) & 0xFFFFFFFF, RST | ACK)


def ip_to_str(addr: bytes) -> str:
    if len(addr) == 16:
        return str(ipaddress.IPv6Address(addr))
    return ".".join(str(b) for b in addr)


def endpoint(addr: bytes, port: int) -> str:
    """``198.18.1.10:40000``, or ``[2001:db8:1::10]:40000`` (RFC 3986's brackets)."""
    if len(addr) == 16:
        return f"[{ip_to_str(addr)}]:{port}"
    return f"{ip_to_str(addr)}:{port}"


def ip_from_str(text: str) -> bytes:
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text).packed
        except ValueError:
            raise ValueError(f"not an IPv6 address: {text!r}") from None
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        raise ValueError(f"not an IPv4 address: {text!r}")
    return bytes(int(p) for p in parts)


def flags_to_str(flags: int) -> str:
    names = [(SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A")]
    return "".join(n for bit, n in names if flags & bit) or "."
