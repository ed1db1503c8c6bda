"""Reading packet captures (pcap and pcapng) fast, for ``natsim replay``.

A capture is read record by record with ``struct`` (scapy would be two orders of magnitude
too slow for a gigabyte), yielding each packet's timestamp and its IP packet with the link
header removed. Link types: Ethernet, raw IP, and Linux cooked capture (SLL and SLL2, what
``tcpdump -i any`` writes). Anything else, a file that is not a capture, or a truncated one
gives a :class:`CaptureError` naming the file and what is wrong, or is counted: a record cut
short at the end of a truncated file, and frames that carry no IP (ARP, VLAN tags of other
protocols) are skipped and counted in :class:`CaptureStats`. IPv4 and IPv6 are handed on.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from simulator.spec.inputs import UnreadableError, open_regular

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_IPV4 = 1, 101, 228
LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 113, 276
LINK_NAMES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP", LINKTYPE_IPV4: "raw IPv4",
              LINKTYPE_LINUX_SLL: "Linux cooked", LINKTYPE_LINUX_SLL2: "Linux cooked v2"}
ETHERTYPE_IPV4, ETHERTYPE_VLAN, ETHERTYPE_IPV6 = 0x0800, 0x8100, 0x86DD
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
               b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9)}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
CHUNK = 1 << 20
MAX_RECORD = 1 << 20
"""The largest record or block natsim reads (a capture's snap length is at most 256 KiB): a
length beyond it is a damaged file, never a reason to allocate gigabytes."""


class CaptureError(ValueError):
    """The file cannot be read as a capture; the message says why."""


@dataclass
class CaptureStats:
    packets: int = 0
    """IP packets handed on."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Frames not handed on, by reason."""


def _ip_from_frame(link: int, frame: bytes | memoryview) -> tuple[int, int]:
    """(offset of the IP header, IP version) in ``frame`` for its link type, or (-1, 0)."""
    if link in (LINKTYPE_RAW, LINKTYPE_IPV4):
        return (0, frame[0] >> 4) if len(frame) >= 20 else (-1, 0)
    if link == LINKTYPE_ETHERNET:
        at, ethertype = 14, int.from_bytes(frame[12:14], "big") if len(frame) >= 14 else 0
        while ethertype == ETHERTYPE_VLAN and len(frame) >= at + 4:
            ethertype = int.from_bytes(frame[at + 2:at + 4], "big")
            at += 4
    elif link == LINKTYPE_LINUX_SLL:
        at, ethertype = 16, int.from_bytes(frame[14:16], "big") if len(frame) >= 16 else 0
    elif link == LINKTYPE_LINUX_SLL2:
        at, ethertype = 20, int.from_bytes(frame[0:2], "big") if len(frame) >= 20 else 0
    else:
        return -1, 0
    if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6):
        return (at, 4 if ethertype == ETHERTYPE_IPV4 else 6) if len(frame) >= at + 20 \
            else (-1, 0)
    return -1, 0


def read(path: Path, stats: CaptureStats | None = None) -> Iterator[tuple[float, bytes]]:
    """(timestamp in seconds, IP packet) for every IPv4 and IPv6 packet of the capture."""
    stats = stats if stats is not None else CaptureStats()
    try:
        handle = open_regular(path)
    except UnreadableError as exc:
        raise CaptureError(str(exc)) from None
    with handle:
        magic = handle.read(4)
        if magic in PCAP_MAGICS:
            yield from _pcap(path, handle, magic, stats)
        elif magic == PCAPNG_SHB:
            yield from _pcapng(path, handle, stats)
        else:
            raise CaptureError(f"{path}: not a pcap or pcapng capture (it starts with "
                               f"{magic.hex() or 'nothing'})")


def _hand_on(link: int, ts: float, frame: bytes, stats: CaptureStats
             ) -> tuple[float, bytes] | None:
    at, version = _ip_from_frame(link, frame)
    if at < 0 or version not in (4, 6):
        stats.skipped["not IP"] += 1
        return None
    stats.packets += 1
    return ts, frame[at:]


def _pcap(path: Path, f: BinaryIO, magic: bytes, stats: CaptureStats
          ) -> Iterator[tuple[float, bytes]]:
    order, unit = PCAP_MAGICS[magic]
    header = f.read(20)
    if len(header) < 20:
        raise CaptureError(f"{path}: truncated in its file header")
    link = struct.unpack(order + "HHiIII", header)[5] & 0x0FFFFFFF
    if link not in LINK_NAMES:
        raise CaptureError(f"{path}: link type {link} is not supported (Ethernet, raw IP and "
                           "Linux cooked captures are)")
    record = struct.Struct(order + "IIII")
    ethernet = link == LINKTYPE_ETHERNET
    buf, at = b"", 0
    while True:
        if len(buf) - at < 16 + 65_536:
            buf = buf[at:] + f.read(CHUNK)
            at = 0
        if at == len(buf):
            return
        if len(buf) - at < 16:
            stats.skipped["truncated at the end"] += 1
            return
        sec, frac, caplen, _ = record.unpack_from(buf, at)
        if caplen > MAX_RECORD:
            raise CaptureError(f"{path}: a record claims {caplen:,} bytes (at most "
                               f"{MAX_RECORD:,}): the file is damaged")
        end = at + 16 + caplen
        if end > len(buf):
            buf, at = buf[at:] + f.read(end - len(buf)), 0
            end = 16 + caplen
        if end > len(buf):
            stats.skipped["truncated at the end"] += 1
            return
        if ethernet and buf[at + 28:at + 30] == b"\x08\x00":  # the common case, inline
            stats.packets += 1
            yield sec + frac * unit, buf[at + 30:end]
            at = end
            continue
        out = _hand_on(link, sec + frac * unit, buf[at + 16:end], stats)
        at = end
        if out is not None:
            yield out


def _pcapng(path: Path, f: BinaryIO, stats: CaptureStats) -> Iterator[tuple[float, bytes]]:
    """Section header, interface descriptions, enhanced and simple packet blocks."""
    rest = f.read(8)
    if len(rest) < 8:
        raise CaptureError(f"{path}: truncated in its section header")
    if rest[4:8] not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
        raise CaptureError(f"{path}: not a pcapng section header (byte-order magic "
                           f"{rest[4:8].hex()})")
    order = "<" if rest[4:8] == b"\x4d\x3c\x2b\x1a" else ">"
    at = struct.unpack(order + "I", rest[:4])[0]
    if not 28 <= at <= MAX_RECORD or at % 4:
        raise CaptureError(f"{path}: its section header claims {at:,} bytes: the file is "
                           "damaged")
    f.seek(at)
    links: list[tuple[int, float]] = []
    while True:
        head = f.read(8)
        if not head:
            return
        if len(head) < 8:
            stats.skipped["truncated at the end"] += 1
            return
        kind, length = struct.unpack(order + "II", head)
        if length < 12 or length > MAX_RECORD or length % 4:
            raise CaptureError(f"{path}: the block at byte {at:,} claims {length:,} bytes "
                               f"(12 to {MAX_RECORD:,}, a multiple of 4): the file is damaged")
        body = f.read(length - 8)
        at += length
        if len(body) < length - 8:
            stats.skipped["truncated at the end"] += 1
            return
        out = _block(kind, body, order, links, stats)
        if out is not None:
            yield out


def _block(kind: int, body: bytes, order: str, links: list[tuple[int, float]],
           stats: CaptureStats) -> tuple[float, bytes] | None:
    """One pcapng block's packet, if it holds one; interface descriptions go to ``links``."""
    if kind == 1:  # interface description: link type, and the time resolution option
        if len(body) < 12:
            stats.skipped["malformed interface description"] += 1
            links.append((-1, 1e-6))  # keeps the later interfaces' numbers
        else:
            links.append((struct.unpack(order + "H", body[:2])[0], _resolution(order, body)))
    elif kind == 6:  # enhanced packet
        if len(body) < 24:
            stats.skipped["malformed packet block"] += 1
            return None
        iface, high, low, caplen = struct.unpack(order + "IIII", body[:16])
        if caplen > len(body) - 24:
            stats.skipped["malformed packet block"] += 1
        elif iface >= len(links) or links[iface][0] not in LINK_NAMES:
            stats.skipped["unsupported link type"] += 1
        else:
            link, unit = links[iface]
            return _hand_on(link, ((high << 32) | low) * unit, body[20:20 + caplen], stats)
    elif kind == 0x0A0D0D0A:  # another section (same byte order assumed): start over
        links.clear()
    return None


def _resolution(order: str, body: bytes) -> float:
    """``if_tsresol`` (option 9) of an interface description; microseconds by default."""
    at = 8
    while at + 4 <= len(body) - 4:
        code, size = struct.unpack(order + "HH", body[at:at + 4])
        if code == 0:
            break
        if code == 9 and size >= 1:
            value = body[at + 4]
            return 2.0 ** -(value & 0x7F) if value & 0x80 else 10.0 ** -value
        at += 4 + (size + 3) // 4 * 4
    return 1e-6
