"""A tiny DNS server for the world: names the client resolves over the network.

Most runs resolve ``server`` from the hosts file, which works with no network at all. A
client whose network is attached late (seed 002) must meet the failure a real one meets:
``getaddrinfo`` asking a DNS server it cannot reach returns ``EAI_AGAIN`` ("Temporary
failure in name resolution", which .NET reports as "Resource temporarily unavailable").
So such runs resolve their server's name here, over UDP through the middlebox like any
other packet.

It answers A queries for the names it was given, an empty answer for other types of a
known name (AAAA, unless it does DNS64 for an IPv6-only client), and NXDOMAIN for anything
else.
"""

from __future__ import annotations

import socket
import struct

from simulator.core.configs import DnsConfig
from simulator.core.messages import Kind
from simulator.core.packets import NAT64_PREFIX
from simulator.workloads import config_from_argv, report

SOURCE = "dns"
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
NOERROR, NXDOMAIN = 0, 3


def question(query: bytes) -> tuple[str, int, int] | None:
    """(name, type, end offset of the question) of a standard query, or None."""
    if len(query) < 12 or query[2] & 0x80 or struct.unpack("!H", query[4:6])[0] != 1:
        return None
    labels, i = [], 12
    while i < len(query) and query[i]:
        length = query[i]
        if length > 63 or i + 1 + length > len(query):
            return None
        labels.append(query[i + 1:i + 1 + length].decode("ascii", "replace"))
        i += 1 + length
    if i + 5 > len(query):
        return None
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    return ".".join(labels).lower(), qtype, i + 5


def answer(query: bytes, names: dict[str, str], dns64: bool = False
           ) -> tuple[bytes, str] | None:
    """The response to ``query`` and a line saying what it was, or None to ignore it.

    With ``dns64``, an AAAA query for a name that has only an IPv4 address is answered
    with that address inside 64:ff9b::/96 (RFC 6147 section 5.1.7), which the NAT64
    translates back.
    """
    parsed = question(query)
    if parsed is None:
        return None
    name, qtype, end = parsed
    address = names.get(name)
    rcode = NOERROR if address is not None else NXDOMAIN
    records, said = b"", address
    if address is not None and qtype == TYPE_A:
        records = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, 0, 4) \
            + socket.inet_aton(address)
    elif address is not None and qtype == TYPE_AAAA and dns64:
        synthesized = NAT64_PREFIX + socket.inet_aton(address)
        records = struct.pack("!HHHIH", 0xC00C, TYPE_AAAA, CLASS_IN, 0, 16) + synthesized
        said = f"{socket.inet_ntop(socket.AF_INET6, synthesized)} (DNS64, from {address})"
    header = query[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, 1 if records else 0, 0, 0)
    what = (f"{name} -> {said}" if records else
            f"{name}: no such name" if address is None else f"{name}: no record of type {qtype}")
    return header + query[12:end] + records, what


def serve(port: int, names: dict[str, str], dns64: bool = False) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    report(SOURCE, Kind.READY, f"answering DNS on port {port} for {', '.join(names)}")
    while True:
        query, peer = sock.recvfrom(4096)
        reply = answer(query, names, dns64)
        if reply is None:
            continue
        sock.sendto(reply[0], peer)
        if " -> " in reply[1]:
            report(SOURCE, Kind.DNS_ANSWER, f"DNS query from {peer[0]}: {reply[1]}")


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_argv("natsim-dns", __doc__, argv, DnsConfig)
    serve(cfg.port, {k.lower(): v for k, v in cfg.names.items()}, cfg.dns64)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
