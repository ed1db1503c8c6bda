"""Frames as the dataplane's packet sockets carry them: a virtio-net header first.

Each packet socket sets ``PACKET_VNET_HDR``, so the veths keep their offloads on and a bulk
transfer crosses the middlebox as 64 KB GSO frames. A frame whose header says
``NEEDS_CSUM`` carries a *partial* TCP/UDP checksum: the field holds only the pseudo-header
sum, which covers the addresses but not the ports. The engine updates checksums as if they
were complete, so the dataplane redoes such a field from its original value with the
address change alone (:func:`fix_partial_checksum`); the kernel finishes checksum and
segmentation where the frame is delivered, and :class:`PcapWriter` finishes it as the
kernel would for a capture. ``_fastpath.c`` does the same for the frames it forwards.

:func:`open_port` opens such a socket. It sets ``PACKET_IGNORE_OUTGOING``: an AF_PACKET
socket otherwise also receives the frames its own interface sends, and would feed the
middlebox's own RSTs back into the engine.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from simulator.core.packets import IPPROTO_UDP, checksum_replace, internet_checksum
from simulator.support import pcap
from simulator.support.results import create_new

ETH_HLEN = 14
VNET_HDR = struct.Struct("=BBHHHH")
"""struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset."""
VNET_LEN = VNET_HDR.size
NO_OFFLOAD = bytes(VNET_LEN)
F_NEEDS_CSUM = 1
MAX_FRAME = VNET_LEN + ETH_HLEN + 65535
_U16 = struct.Struct("!H")
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_VNET_HDR = 15
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
SOCKET_BUFFER = 32 << 20


def mac_bytes(mac: str) -> bytes:
    """``"02:00:00:00:00:01"`` as six bytes."""
    return bytes(int(x, 16) for x in mac.split(":"))


def open_port(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    # deep buffers ride out a moment without CPU (a burst of 4,000 handshakes a second);
    # the FORCE variants pass net.core.[rw]mem_max and need CAP_NET_ADMIN, which we have
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def partial_checksum_at(vnet: bytes) -> int:
    """Where, in the IPv4 packet, the partial TCP/UDP checksum of a NEEDS_CSUM frame lies
    (``csum_start`` in the virtio-net header counts from the Ethernet header)."""
    _, _, _, _, csum_start, csum_offset = VNET_HDR.unpack(vnet)
    return int(csum_start) - ETH_HLEN + int(csum_offset)


def partial_checksum_fits(packet: bytearray, at: int) -> bool:
    """A NEEDS_CSUM frame's checksum field must lie in the transport header, past the IP
    header (the kernel accepts any csum_start/csum_offset from a packet socket)."""
    ihl = 40 if packet[0] >> 4 == 6 else (packet[0] & 0x0F) * 4
    return ihl >= 20 and ihl <= at and at % 2 == 0 and at + 2 <= len(packet)


def fix_partial_checksum(packet: bytearray, original: bytes, at: int) -> None:
    """Redo a partial TCP/UDP checksum after NAT: the address change only, not the ports.

    ``original`` is the packet's first ``at + 2`` bytes before the engine rewrote it. The
    partial field is the *uncomplemented* pseudo-header sum, so it moves by the address
    change in the opposite sense to a full checksum (as the kernel's
    ``inet_proto_csum_replace4`` does for ``CHECKSUM_PARTIAL``).
    """
    where = slice(8, 40) if packet[0] >> 4 == 6 else slice(12, 20)
    old_addrs, new_addrs = original[where], bytes(packet[where])
    if old_addrs == new_addrs or at + 2 > len(packet):
        return
    (partial,) = _U16.unpack_from(original, at)
    _U16.pack_into(packet, at,
                   ~checksum_replace(~partial & 0xFFFF, old_addrs, new_addrs) & 0xFFFF)


def complete_checksum(frame: bytes, vnet: bytes) -> bytes:
    """The frame with its partial checksum finished, as the kernel finishes it on the wire.

    Like ``skb_checksum_help``: the ones' complement sum from ``csum_start`` to the end,
    *including* the pseudo-header sum already in the field, complemented into the field.
    A wrong partial field therefore gives a wrong checksum here too (the pcap shows it, and
    the tests rely on it).
    """
    flags, _, _, _, csum_start, csum_offset = VNET_HDR.unpack(vnet)
    at = csum_start + csum_offset
    if not flags & F_NEEDS_CSUM or at + 2 > len(frame):
        return frame
    out = bytearray(frame)
    checksum = internet_checksum(out[csum_start:])
    proto = out[ETH_HLEN + 6] if out[ETH_HLEN] >> 4 == 6 else out[ETH_HLEN + 9]
    if proto == IPPROTO_UDP and checksum == 0:
        checksum = 0xFFFF  # zero means "no checksum" for UDP
    _U16.pack_into(out, at, checksum)
    return bytes(out)


class PcapWriter:
    """A classic pcap (Ethernet link type) with model-time timestamps.

    Frames are written as they cross, so a bulk transfer shows GSO frames of up to 64 KB (as
    tcpdump on a host with offloads does), with their checksums completed.
    """

    def __init__(self, path: Path) -> None:
        self._file = create_new(path, "wb")
        self._file.write(pcap.file_header(MAX_FRAME))

    def write(self, model_t: float, frame: bytes | bytearray | memoryview,
              vnet: bytes = NO_OFFLOAD) -> None:
        if vnet != NO_OFFLOAD:
            frame = complete_checksum(bytes(frame), vnet)
        self._file.write(pcap.record_header(model_t, len(frame)))
        self._file.write(frame)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


ETH_P_IPV6 = b"\x86\xdd"
ICMPV6_NEIGHBOUR_SOLICITATION, ICMPV6_NEIGHBOUR_ADVERTISEMENT = 135, 136
_ND_ROUTER_SOLICITED_OVERRIDE = 0xE0


def is_neighbour_solicitation(frame: bytes | bytearray | memoryview) -> bool:
    """An Ethernet frame carrying an ICMPv6 neighbour solicitation (no extension headers:
    RFC 4861 sends them bare, hop limit 255)."""
    return (len(frame) >= ETH_HLEN + 40 + 24 and bytes(frame[12:14]) == ETH_P_IPV6
            and frame[ETH_HLEN + 6] == 58
            and frame[ETH_HLEN + 40] == ICMPV6_NEIGHBOUR_SOLICITATION)


def neighbour_advertisement(frame: bytes, mac: bytes) -> bytes | None:
    """The advertisement that answers the solicitation ``frame`` with ``mac``, or None.

    The middlebox is every host's gateway and owns no address: it answers for any target,
    as a router doing proxy neighbour discovery would, so a host that asks (NUD, or a
    neighbour entry gone stale) still reaches the path. Duplicate-address detection (a
    solicitation from ``::``) is never answered: that would tell the host its own address is
    taken.
    """
    if not is_neighbour_solicitation(frame):
        return None
    ip = ETH_HLEN
    asker, target = frame[ip + 8:ip + 24], frame[ip + 40 + 8:ip + 40 + 24]
    if asker == bytes(16) or frame[ip + 7] != 255:
        return None
    icmp = bytearray(struct.pack("!BBHB3x", ICMPV6_NEIGHBOUR_ADVERTISEMENT, 0, 0,
                                 _ND_ROUTER_SOLICITED_OVERRIDE)) + target + b"\x02\x01" + mac
    pseudo = target + asker + struct.pack("!IxxxB", len(icmp), 58)
    _U16.pack_into(icmp, 2, internet_checksum(pseudo + icmp))
    header = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + target + asker
    return frame[6:12] + mac + ETH_P_IPV6 + header + icmp
