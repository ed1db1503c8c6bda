"""No frame can stop the dataplane: the per-frame boundary, the crafted NEEDS_CSUM frame that
once killed it, and property tests over the engine and the frame path (hypothesis)."""

from __future__ import annotations

import io
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP

from bench.fuzz import EXPECTED, SteppedClock, fuzz
from simulator.core.appliances import CATALOGUE, get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.dataplane.packet_loop import ETH_P_IP, Dataplane
from tests.unit.helpers import CLIENT, SERVER, tcp, udp

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
ETH = MAC_A + MAC_B + ETH_P_IP
VNET = struct.Struct("=BBHHHH")


class Harness:
    """A dataplane whose two ports are datagram socket pairs: frames in, frames out."""

    def __init__(self, appliance: str = "nat-gw") -> None:
        self.pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
        header = MAC_B + MAC_A + ETH_P_IP
        ports = {Side.INSIDE: [(self.pairs[0][0], header)],
                 Side.OUTSIDE: [(self.pairs[1][0], header)]}
        self.plane = Dataplane(Middlebox(get_appliance(appliance)), SteppedClock(0.001),
                               ports, io.StringIO())

    def feed(self, side: Side, frame: bytes) -> None:
        sock = self.plane.ports[side][0][0]
        self.plane.handle_frame(side, sock, memoryview(frame), len(frame))

    def sent(self, side: Side) -> list[bytes]:
        peer = self.pairs[0 if side is Side.INSIDE else 1][1]
        out = []
        while True:
            try:
                out.append(peer.recv(70_000))
            except BlockingIOError:
                return out

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def crafted_syn() -> bytes:
    """The frame from the trust issue: a 64-byte SYN with NEEDS_CSUM, csum_start 20 (inside
    the IPv4 header) and csum_offset 5 (odd), which the kernel accepts from a packet socket."""
    vnet = VNET.pack(1, 0, 0, 0, 20, 5)
    packet = bytes(tcp(CLIENT, 40000, SERVER, 8080, "S", 1))
    return vnet + ETH + packet + bytes(max(0, 64 - 14 - len(packet)))


def test_the_crafted_frame_is_refused_and_the_dataplane_goes_on(harness: Harness) -> None:
    harness.feed(Side.INSIDE, crafted_syn())
    assert harness.plane.malformed == {EXPECTED: 1}
    assert harness.sent(Side.OUTSIDE) == []
    # the next, ordinary SYN is forwarded, NATed
    harness.feed(Side.INSIDE, bytes(10) + ETH + bytes(tcp(CLIENT, 40001, SERVER, 8080, "S", 1)))
    out = harness.sent(Side.OUTSIDE)
    assert len(out) == 1 and IP(out[0][10 + 14:]).src == "203.0.113.1"
    counters = harness.plane.counters()
    assert counters["MalformedPackets"] == 1
    assert counters[f"MalformedPackets:{EXPECTED}"] == 1


def test_an_exception_inside_the_engine_is_counted_not_raised(harness: Harness) -> None:
    def broken(*_: object) -> list[object]:
        raise KeyError("a bug")

    harness.plane.engine.on_packet = broken  # type: ignore[method-assign,assignment]
    harness.feed(Side.INSIDE, bytes(10) + ETH + bytes(tcp(CLIENT, 1, SERVER, 2, "S", 1)))
    assert harness.plane.malformed == {"KeyError": 1}


def test_runt_frames_are_refused(harness: Harness) -> None:
    for n in range(0, 40):
        harness.feed(Side.INSIDE, crafted_syn()[:n])
    assert set(harness.plane.malformed) <= {EXPECTED}


def test_a_partial_checksum_still_comes_out_right_after_nat(harness: Harness) -> None:
    """The refusal above must not catch honest offloaded frames: NEEDS_CSUM at the TCP
    checksum (csum_start at the TCP header, offset 16) goes through and is fixed up."""
    packet = bytes(tcp(CLIENT, 40000, SERVER, 8080, "S", 1))
    frame = VNET.pack(1, 0, 0, 0, 14 + 20, 16) + ETH + packet
    harness.feed(Side.INSIDE, frame)
    assert not harness.plane.malformed
    assert len(harness.sent(Side.OUTSIDE)) == 1


def test_fuzz_slice_finds_no_escape() -> None:
    """A slice of ``make fuzz`` (which runs 1,000,000 frames)."""
    report = fuzz(20_000, seed=7)
    assert report.frames >= 19_000 and report.refused > 0
    assert report.ipv6 > 2_000  # IPv6 and NAT64 frames among them
    assert not report.escapes, report.escapes


def test_fuzz_slice_through_the_fast_path_finds_no_escape() -> None:
    """The same through the compiled fast path first (``make fuzz`` runs both)."""
    report = fuzz(20_000, seed=7, fast=True)
    assert report.frames >= 19_000 and report.refused > 0
    assert report.ipv6 > 2_000  # IPv6 and NAT64 frames among them
    assert report.fast_path > 100  # the hot flows' mutations did reach the C parser
    assert not report.escapes, report.escapes


# -- property tests -------------------------------------------------------------------------

ports = st.integers(min_value=1, max_value=65535)
flags = st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA", ""])


@st.composite
def packets(draw: st.DrawFn) -> tuple[Side, bytearray, float]:
    side = draw(st.sampled_from([Side.INSIDE, Side.OUTSIDE]))
    src, dst = (CLIENT, SERVER) if side is Side.INSIDE else (SERVER, "203.0.113.1")
    sport = draw(st.sampled_from([40000, 40001, 8080])) if side is Side.INSIDE \
        else draw(st.sampled_from([8080, 53]))
    dport = draw(st.sampled_from([8080, 53])) if side is Side.INSIDE \
        else draw(st.integers(1024, 1030))
    if draw(st.booleans()):
        pkt = tcp(src, sport, dst, dport, draw(flags), draw(st.integers(0, 2**32 - 1)),
                  draw(st.integers(0, 2**32 - 1)), draw(st.binary(max_size=3)))
    else:
        pkt = udp(src, sport, dst, dport, draw(st.binary(max_size=3)))
    if draw(st.integers(0, 9)) == 0:  # now and then, damage it
        at = draw(st.integers(0, len(pkt) - 1))
        pkt[at] = draw(st.integers(0, 255))
    return side, pkt, draw(st.floats(0, 400))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CATALOGUE)), steps=st.lists(packets(), max_size=30))
def test_engine_never_raises_and_keeps_its_tables_consistent(
        name: str, steps: list[tuple[Side, bytearray, float]]) -> None:
    appliance = get_appliance(name)
    if appliance.backends > 1:
        return
    box = Middlebox(appliance)
    now = 0.0
    for side, packet, gap in steps:
        now += gap
        for sent in box.on_packet(packet, side, now):
            assert sent.port == 0 and len(sent.packet) >= 20
        assert len(box.flows.by_inside) == len(box.flows.by_outside) == len(box.flows)
        assert all(box.flows.by_outside[f.outside] is f for f in box.flows)
    box.expire(now + 10 * 3600 * 24)
    sizes = box.state_sizes()
    assert sizes["flows"] == sizes["port_slots"] == 0, sizes


@settings(max_examples=300, deadline=None)
@given(frame=st.binary(max_size=120), vnet=st.tuples(
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535), st.integers(0, 65535),
    st.integers(0, 200), st.integers(0, 200)))
def test_any_frame_is_handled_or_refused(frame: bytes,
                                         vnet: tuple[int, int, int, int, int, int]) -> None:
    h = Harness()
    try:
        h.feed(Side.INSIDE, VNET.pack(*vnet) + ETH + frame)
        h.feed(Side.OUTSIDE, VNET.pack(*vnet) + ETH + frame)
        assert set(h.plane.malformed) <= {EXPECTED}, h.plane.malformed
    finally:
        h.close()


def test_tcp_helper_builds_what_scapy_reads() -> None:
    assert IP(bytes(tcp(CLIENT, 1, SERVER, 2, "S", 5)))[TCP].seq == 5


def test_a_peer_mac_is_learnt_from_the_peer_not_from_the_hosts_bridge() -> None:
    """Docker: the client's MAC is learnt from its first frame. The host's bridge on that
    network may speak first (an ARP request of its own); learning its MAC sent every frame
    for the client through the host's routing, which only worked with ip_forward on."""
    from simulator.core.edge import EdgeMap, docker_edge  # noqa: PLC0415
    from simulator.dataplane.packet_loop import UNKNOWN_MAC  # noqa: PLC0415

    h = Harness()
    try:
        own = MAC_A
        h.plane.ports[Side.INSIDE] = [(h.plane.ports[Side.INSIDE][0][0],
                                       UNKNOWN_MAC + own + ETH_P_IP)]
        h.plane._unlearnt = {h.plane.ports[Side.INSIDE][0][0].fileno()}
        h.plane.edge = EdgeMap.from_config(docker_edge(["203.0.113.1"], CLIENT, SERVER,
                                                       "198.18.1.3"))
        bridge_mac, client_mac = bytes.fromhex("02aaaaaaaaaa"), bytes.fromhex("02cccccccccc")
        arp = (b"\xff" * 6 + bridge_mac + b"\x08\x06" + struct.pack(
            "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bridge_mac, bytes([198, 18, 1, 1]),
            bytes(6), bytes([198, 18, 1, 10])))
        h.feed(Side.INSIDE, bytes(10) + arp)
        assert h.plane.ports[Side.INSIDE][0][1][:6] == UNKNOWN_MAC
        syn = bytes(tcp(CLIENT, 40000, "198.18.1.3", 8080, "S", 1))
        h.feed(Side.INSIDE, bytes(10) + own + client_mac + ETH_P_IP + syn)
        assert h.plane.ports[Side.INSIDE][0][1][:6] == client_mac
    finally:
        h.close()


def test_a_full_transmit_queue_loses_one_frame_not_the_ones_decided_with_it() -> None:
    """ENOBUFS on a send (a burst of handshakes filled the veth's queue) once escaped the
    send loop: the frames decided with the first one (the other end's RST) were never
    sent, and the run counted the loss as a malformed frame."""
    import errno  # noqa: PLC0415

    from simulator.core.icmp import Transmit  # noqa: PLC0415

    class Full:
        def __init__(self, full: bool) -> None:
            self.sent: list[bytes] = []
            self.calls = 0 if full else 1

        def fileno(self) -> int:
            return -1

        def send(self, data: bytes) -> int:
            self.calls += 1
            if self.calls == 1:
                raise OSError(errno.ENOBUFS, "No buffer space available")
            self.sent.append(data)
            return len(data)

    inside, outside = Full(full=True), Full(full=False)
    ports: Any = {Side.INSIDE: [(inside, ETH)], Side.OUTSIDE: [(outside, ETH)]}
    plane = Dataplane(Middlebox(get_appliance("nat-gw")), SteppedClock(0.001), ports,
                      io.StringIO())
    rsts = [Transmit(Side.INSIDE, bytearray(tcp(SERVER, 8080, CLIENT, 40000, "R", 5))),
            Transmit(Side.OUTSIDE, bytearray(tcp(CLIENT, 40000, SERVER, 8080, "R", 9)))]
    plane._send(rsts)
    assert plane.tx_queue_full == 1 and len(outside.sent) == 1  # the second one still left
    assert plane.malformed == {}
