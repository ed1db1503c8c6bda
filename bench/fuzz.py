"""Fuzz the dataplane's frame path across the catalogue: ``make fuzz`` (1,000,000 frames).

Each frame goes through :meth:`Dataplane.handle_frame` exactly as a frame read from a veth
does (virtio-net header, Ethernet, IPv4 or IPv6 and whatever follows), with sockets replaced by
datagram socket pairs and a clock that steps forward, so that flows are created, refreshed,
expire and meet late packets. Frames are valid TCP/UDP/ICMP templates (handshakes, data,
probes, FIN, RST, the replies from the server's side; IPv6 and NAT64 flows, extension-header
chains past the limit, fragments, neighbour solicitations) put through random mutations: byte
flips, truncation, lying lengths and header sizes, and random virtio-net headers (the
``NEEDS_CSUM`` offsets that once killed the middlebox among them).

With ``--fast`` the frames go through the dataplane's compiled fast path first (they are
written into the socket pairs and drained, its model time pinned to the stepped clock): the
templates' flows get hot, so the C side parses every mutation and either forwards it or
hands it to the engine. A crash there would end the process (and, live, the middlebox).

The per-frame boundary catches everything, so nothing can escape it and stop the dataplane;
what matters is *why* a frame was dropped. A frame refused on purpose counts under
``MalformedFrameError``; any other exception class (an ``IndexError`` in the engine, say) is an
**escape**: a bug the boundary hid. The run reports frames per second and the escapes by
class, and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from simulator.core.appliances import CATALOGUE, Appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.packets import build_tcp, ip_from_str
from simulator.dataplane import fastpath
from simulator.dataplane import packet_loop as dataplane
from simulator.dataplane.frames import ETH_P_IPV6
from simulator.dataplane.packet_loop import ETH_P_IP, Dataplane

CLIENT, SERVER, PUBLIC = (ip_from_str(a) for a in ("198.18.1.10", "198.19.1.10",
                                                    "203.0.113.1"))
CLIENT6, SERVER6, NAT64_SERVER = (ip_from_str(a) for a in (
    "2001:db8:1::10", "2001:db8:2::10", "64:ff9b::c613:10a"))
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
VNET = struct.Struct("=BBHHHH")
EXPECTED = "MalformedFrameError"


class SteppedClock:
    """Model time that moves on by ``step`` every time it is read."""

    def __init__(self, step: float, speed: float = 100.0) -> None:
        self.t = 0.0
        self.step = step
        self.speed = speed

    def now(self) -> float:
        self.t += self.step
        return self.t

    def wall_until(self, model_t: float) -> float:
        return 0.0


def _udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytearray:
    total = 28 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, src, dst)
    return bytearray(header + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
                     + payload)


def templates(rng: random.Random) -> list[tuple[Side, bytearray]]:
    """A few valid packets of both sides, for one client port."""
    cport = rng.randrange(1024, 65536)
    pport = rng.randrange(1024, 1034)  # the NAT's first public ports, so replies can match
    seq, ack = rng.randrange(2**32), rng.randrange(2**32)
    inside = [build_tcp(CLIENT, cport, SERVER, 8080, seq, 0, flags, 64240)
              for flags in (0x02, 0x10, 0x18, 0x11, 0x04)]
    inside.append(build_tcp(CLIENT, cport, SERVER, 8080, seq - 1, ack, 0x10, 64240))  # probe
    inside.append(_udp(CLIENT, cport, SERVER, 53, b"q" * rng.randrange(0, 64)))
    outside = [build_tcp(SERVER, 8080, PUBLIC, pport, ack, seq + 1, flags, 64240)
               for flags in (0x12, 0x10, 0x18, 0x11, 0x04)]
    outside.append(_udp(SERVER, 53, PUBLIC, pport, b"a"))
    icmp = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, CLIENT, SERVER)
                     + bytes([8, 0, 0, 0]) + struct.pack("!HH", cport, 1))
    quoted = _udp(PUBLIC, pport, SERVER, 53, b"q")[:28]
    error = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(quoted), 1, 0, 64,
                                  1, 0, SERVER, PUBLIC) + bytes([3, 3, 0, 0, 0, 0, 0, 0])
                      + quoted)
    reply = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 1, 0, SERVER, PUBLIC)
                      + bytes([0, 0, 0, 0]) + struct.pack("!HH", pport, 1))
    return [(Side.INSIDE, p) for p in [*inside, icmp]] + \
        [(Side.OUTSIDE, p) for p in [*outside, error, reply]]


def _ipv6(src: bytes, dst: bytes, nxt: int, body: bytes, chain: int = 0) -> bytearray:
    """An IPv6 packet with ``chain`` destination-options headers before ``body``."""
    extensions = b""
    for i in range(chain):
        extensions += bytes([60 if i < chain - 1 else nxt, 0]) + bytes(6)
    first = 60 if chain else nxt
    return bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(extensions) + len(body), first,
                                 64, src, dst) + extensions + body)


def templates6(rng: random.Random) -> list[tuple[Side, bytearray]]:
    """IPv6 frames: a NAT64 flow (its IPv4 replies are among ``templates``' outside ones)
    and a plain IPv6 one, extension-header chains up to past the limit, a fragment header,
    ICMPv6 (an echo, a neighbour solicitation)."""
    cport = rng.randrange(1024, 65536)
    seq, ack = rng.randrange(2**32), rng.randrange(2**32)
    out = [build_tcp(CLIENT6, cport, NAT64_SERVER, 8080, seq, 0, flags, 64240)
           for flags in (0x02, 0x10, 0x18, 0x11)]
    out.append(build_tcp(CLIENT6, cport, NAT64_SERVER, 8080, seq - 1, ack, 0x10, 64240))
    out.append(build_tcp(CLIENT6, cport, SERVER6, 8080, seq, 0, 0x02, 64240))
    segment = bytes(build_tcp(CLIENT6, cport, NAT64_SERVER, 8080, seq, ack, 0x18, 64240,
                              payload=b"x" * rng.randrange(0, 40))[40:])
    out.append(_ipv6(CLIENT6, NAT64_SERVER, 6, segment, chain=rng.randrange(1, 11)))
    out.append(_ipv6(CLIENT6, NAT64_SERVER, 17, struct.pack("!HHHH", cport, 53, 9, 0) + b"q"))
    out.append(_ipv6(CLIENT6, NAT64_SERVER, 44, bytes([17, 0, 0, 1]) + bytes(4) + segment))
    out.append(_ipv6(CLIENT6, NAT64_SERVER, 58, bytes([128, 0, 0, 0]) + struct.pack(
        "!HH", cport, 1)))
    solicit = _ipv6(CLIENT6, bytes.fromhex("ff020000000000000000000000000001"), 58,
                    bytes([135, 0, 0, 0]) + bytes(4) + CLIENT6[:14] + b"\x00\x01")
    solicit[7] = 255
    reply = build_tcp(SERVER6, 8080, CLIENT6, cport, ack, seq + 1, 0x12, 64240)
    return [(Side.INSIDE, p) for p in [*out, solicit]] + [(Side.OUTSIDE, reply)]


def mutate(rng: random.Random, packet: bytearray) -> tuple[bytes, bytes]:
    """(virtio-net header, IPv4 packet) with zero or more mutations."""
    vnet = bytes(10)
    choice = rng.random()
    if choice < 0.25:  # a random offload header: NEEDS_CSUM with any start and offset
        vnet = VNET.pack(rng.choice((0, 1, 2, 3, 255)), rng.choice((0, 1, 3, 4, 0x80)),
                         rng.randrange(0, 200), rng.randrange(0, 2000),
                         rng.randrange(0, 120), rng.randrange(0, 40))
    data = bytearray(packet)
    for _ in range(rng.choice((0, 0, 1, 2, 5))):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.15 and len(data) >= 8:  # lengths and next headers that lie
        if data[0] >> 4 == 6:
            struct.pack_into("!HB", data, 4, rng.randrange(65536),
                             rng.choice((0, 6, 17, 43, 44, 58, 60, rng.randrange(256))))
        else:
            data[0] = 0x40 | rng.randrange(16)
            struct.pack_into("!H", data, 2, rng.randrange(65536))
    if rng.random() < 0.15:
        del data[rng.randrange(len(data) + 1):]
    if rng.random() < 0.05:
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    return vnet, bytes(data)


@dataclass
class Report:
    frames: int = 0
    seconds: float = 0.0
    escapes: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    by_appliance: dict[str, int] = field(default_factory=dict)
    fast_path: int = 0
    """Frames the compiled fast path forwarded itself (``--fast``)."""
    ipv6: int = 0
    """Frames sent as IPv6 (ethertype 0x86DD)."""

    @property
    def rate(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"frames": self.frames, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.rate), "escapes": dict(self.escapes),
                "refused_on_purpose": self.refused, "by_appliance": self.by_appliance,
                "fast_path_forwarded": self.fast_path, "ipv6_frames": self.ipv6}


def _plane(appliance: Appliance, step: float,
           fast: bool = False) -> tuple[Dataplane, list[socket.socket]]:
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for a, b in pairs:
        for s in (a, b):
            s.setblocking(False)
    header = MAC_B + MAC_A + ETH_P_IP
    ports = {Side.INSIDE: [(pairs[0][0], header)], Side.OUTSIDE: [(pairs[1][0], header)]}
    engine = Middlebox(appliance)
    plane = Dataplane(engine, SteppedClock(step), ports, io.StringIO())
    if fast:
        plane.fast = fastpath.FastForwarder(engine, 0.0, 1.0, ports)
    return plane, [s for pair in pairs for s in pair]


def _mutated_frame(rng: random.Random,
                   pool: list[tuple[Side, bytearray]]) -> tuple[Side, bytes]:
    side, packet = rng.choice(pool)
    vnet, ip = mutate(rng, packet)
    ethertype = ETH_P_IPV6 if packet[0] >> 4 == 6 else ETH_P_IP
    eth = (MAC_A + MAC_B + ethertype) if rng.random() > 0.02 else \
        bytes(rng.randrange(256) for _ in range(14))
    frame = vnet + eth + ip
    if rng.random() < 0.01:
        frame = frame[:rng.randrange(len(frame))]
    return side, frame


def _feed(plane: Dataplane, socks: list[socket.socket], side: Side, frame: bytes) -> None:
    """One frame in, as a veth would bring it: straight to the per-frame boundary, or
    (fast mode) through the socket pair and the fast path's drain."""
    port = plane.ports[side][0][0]
    if plane.fast is None:
        plane.handle_frame(side, port, memoryview(frame), len(frame))
        return
    assert isinstance(plane.clock, SteppedClock)
    plane.fast.pin(plane.clock.t)
    socks[1 if side is Side.INSIDE else 3].send(frame or b"\0")
    plane.drain(side, port)


def _empty(socks: list[socket.socket]) -> None:
    for s in socks:
        while True:
            try:
                s.recv(70_000)
            except BlockingIOError:
                break


def fuzz(frames: int, seed: int = 1, appliances: list[Appliance] | None = None,
         fast: bool = False) -> Report:
    rng = random.Random(seed)
    dataplane.MALFORMED_LOGGED = 0  # a million refusals need no million tracebacks
    chosen = appliances or [a for a in CATALOGUE.values() if a.backends == 1]
    report = Report()
    per = max(1, frames // len(chosen))
    started = time.perf_counter()
    for appliance in chosen:
        # steps that make flows expire now and then: a timeout every ~2,000 frames
        # the fast mode: a slower clock and longer-lived templates, so that flows get hot
        # and stay so (a data event every model second, or a timer due, would hand most
        # frames to the engine before the C side rewrote anything)
        plane, socks = _plane(appliance, appliance.tcp_idle_timeout / (
            200_000 if fast else 2_000), fast)
        renew = 1024 if fast else 64
        # the fast mode weighs the IPv4 templates double: only their flows reach the C side
        weight = 2 if fast else 1
        pool = templates(rng) * weight + templates6(rng)
        for i in range(per):
            if i % renew == 0 and rng.random() < 0.5:
                pool = templates(rng) * weight + templates6(rng)
            side, frame = _mutated_frame(rng, pool)
            report.ipv6 += frame[VNET.size + 12:VNET.size + 14] == ETH_P_IPV6
            _feed(plane, socks, side, frame)
            if i % 256 == 0:
                plane.expire_due()
                plane.engine.take_events()
                _empty(socks[1::2])  # what the dataplane sent
        report.frames += per
        report.by_appliance[appliance.name] = per
        report.fast_path += plane.fast.forwarded() if plane.fast is not None else 0
        for reason, n in plane.malformed.items():
            if reason == EXPECTED:
                report.refused += n
            else:
                report.escapes[reason] += n
        for s in socks:
            s.close()
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--fast", action="store_true",
                        help="through the compiled fast path first (see above)")
    args = parser.parse_args(argv)
    path = "the fast path, then the engine" if args.fast else "the engine"
    print(f"fuzz: {args.frames:,} frames across the catalogue through {path} "
          f"(seed {args.seed}) ...", file=sys.stderr, flush=True)
    report = fuzz(args.frames, args.seed, fast=args.fast)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"frames {report.frames:,} in {report.seconds:.1f} s: {report.rate:,.0f} "
              f"frames/s ({report.ipv6:,} IPv6); refused on purpose {report.refused:,}; escapes "
              f"{sum(report.escapes.values())}"
              + (f" ({dict(report.escapes)})" if report.escapes else "")
              + (f"; forwarded by the fast path {report.fast_path:,}" if args.fast else ""))
    return 1 if report.escapes else 0


if __name__ == "__main__":
    sys.exit(main())
